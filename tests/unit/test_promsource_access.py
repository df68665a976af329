"""Who may ask Prometheus: a bearer token read from a file, a tenant header for multi-tenant engines
(Mimir, Cortex), both on every query and on the rules API; bad values are one line naming the option
and never show the token; a redirect is not followed (it would carry the credentials elsewhere)."""

from __future__ import annotations

import http.server
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_promsource import EMPTY, Responder, host, reply
from test_promsource import serve as serve  # the fixture, by its name (re-exported: no F811)

from fleetctl.promsource import HttpPrometheus, PrometheusError, prometheus_report

TOKEN = "eyJhbGciOi.s3cret-t0ken_value"
LAB = Path(__file__).parents[2] / "inventory" / "lab" / "hosts.yml"


def _token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(0o600)
    return path


Seen = list[tuple[str, str | None, str | None]]  # path, Authorization, X-Scope-OrgID of each request


def _recording(seen: Seen) -> Responder:
    """A Prometheus with no series and no rules API that keeps each request's path and headers."""
    def record(h: http.server.BaseHTTPRequestHandler) -> None:
        seen.append((h.path.split("?")[0], h.headers.get("Authorization"), h.headers.get("X-Scope-OrgID")))
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        reply(h, EMPTY) if h.path.startswith("/api/v1/query") else reply(h, {"status": "error"}, 404)
    return record


def test_the_token_and_tenant_go_with_every_query_and_the_rules_api(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    seen: Seen = []
    client = HttpPrometheus(serve(_recording(seen)), timeout_s=5, token_file=_token_file(tmp_path),
                            tenant="team-a|ops")
    prometheus_report([host("a", 1)], client, notice=lambda line: None)
    assert {path for path, *_ in seen} == {"/api/v1/query", "/api/v1/rules"}
    assert {(auth, tenant) for _, auth, tenant in seen} == {(f"Bearer {TOKEN}", "team-a|ops")}


def test_a_refused_token_is_an_error_that_never_shows_it(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    def refuse(h: http.server.BaseHTTPRequestHandler) -> None:
        reply(h, {"status": "error", "error": "invalid token"}, 401)

    with pytest.raises(PrometheusError) as err:
        HttpPrometheus(serve(refuse), timeout_s=5, token_file=_token_file(tmp_path)).query("up")
    assert "HTTP 401" in str(err.value) and "s3cret" not in str(err.value)


@pytest.mark.parametrize(("text", "said"), [
    ("", "empty"), ("\n", "empty"), (f"{TOKEN} second\n", "expected one token"),
    (f"{TOKEN}\n{TOKEN}\n", "expected one token"), ("tøken\n", "not an ASCII token"),
])
def test_a_bad_token_file_is_one_line_naming_it(tmp_path: Path, text: str, said: str) -> None:
    path = _token_file(tmp_path, text)
    with pytest.raises(PrometheusError) as err:
        HttpPrometheus("http://127.0.0.1:9090", token_file=path)
    message = str(err.value)
    assert said in message and str(path) in message and "\n" not in message and "s3cret" not in message


def test_a_missing_token_file_a_user_and_a_token_and_a_bad_tenant_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PrometheusError, match=r"--prometheus-token-file .*nowhere: cannot read it"):
        HttpPrometheus("http://127.0.0.1:9090", token_file=tmp_path / "nowhere")
    with pytest.raises(PrometheusError, match="has a user and --prometheus-token-file is given") as err:
        HttpPrometheus("http://admin:pw@127.0.0.1:9090", token_file=_token_file(tmp_path))
    assert "pw" not in str(err.value)
    for tenant in ("", "a b", "a\r\nX-Injected: 1", "x" * 5000):
        with pytest.raises(PrometheusError, match="--prometheus-tenant"):
            HttpPrometheus("http://127.0.0.1:9090", tenant=tenant)


def test_a_redirect_is_not_followed_with_the_credentials(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    elsewhere: list[str | None] = []

    def other(h: http.server.BaseHTTPRequestHandler) -> None:
        elsewhere.append(h.headers.get("Authorization"))
        reply(h, EMPTY)

    target = serve(other)

    def redirect(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", target.replace("//", "//u:pw@") + h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    client = HttpPrometheus(serve(redirect), timeout_s=5, token_file=_token_file(tmp_path))
    with pytest.raises(PrometheusError, match=r"HTTP 302 redirect to .*not followed") as err:
        client.query("up")
    assert elsewhere == [] and "pw" not in str(err.value) and "s3cret" not in str(err.value)
    assert client.rule_group("fleetctl-report") is None  # optional information: no redirect either
    assert elsewhere == []


def test_the_options_reach_the_client_from_the_command_line_and_the_environment(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    seen: Seen = []
    url = serve(_recording(seen))
    token = _token_file(tmp_path)
    fleetctl = str(Path(sys.executable).parent / "fleetctl")
    args = ["--prometheus-url", url, "--prometheus-token-file", str(token), "--prometheus-tenant", "t1"]
    run = subprocess.run([fleetctl, "health", "-i", str(LAB), "--source", "prometheus", *args, "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr  # no series at all: every host unscraped, not an error
    assert {(auth, tenant) for _, auth, tenant in seen} == {(f"Bearer {TOKEN}", "t1")}
    seen.clear()
    env = {"FLEETCTL_PROMETHEUS_URL": url, "FLEETCTL_PROMETHEUS_TOKEN_FILE": str(tmp_path / "nowhere"),
           "PATH": "/usr/bin:/bin"}
    run = subprocess.run([fleetctl, "health", "-i", str(LAB), "--source", "prometheus", "-o", "json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2 and seen == []
    assert run.stderr.count("\n") == 1 and "--prometheus-token-file" in run.stderr and "nowhere" in run.stderr


def test_a_token_rotated_on_disk_is_read_again_for_the_next_report(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    # --watch runs for days; a projected service-account or Vault agent token is replaced meanwhile.
    seen: Seen = []
    path = _token_file(tmp_path, "first-token\n")
    client = HttpPrometheus(serve(_recording(seen)), timeout_s=5, token_file=path)
    prometheus_report([host("a", 1)], client, notice=lambda line: None)
    assert {auth for _, auth, _ in seen} == {"Bearer first-token"}
    path.write_text("second-token\r\n")  # CRLF too: one token
    seen.clear()
    prometheus_report([host("a", 1)], client, notice=lambda line: None)
    assert {auth for _, auth, _ in seen} == {"Bearer second-token"}


def test_remediate_takes_the_same_options() -> None:
    fleetctl = str(Path(sys.executable).parent / "fleetctl")
    run = subprocess.run([fleetctl, "remediate", "-i", str(LAB), "--source", "prometheus", "--prometheus-url",
                          "http://127.0.0.1:9", "--prometheus-token-file", "/nonexistent/token"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--prometheus-token-file /nonexistent/token" in run.stderr
