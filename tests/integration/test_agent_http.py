"""The real ``fleet-agent run`` process over simulated chips, read over HTTP."""

from __future__ import annotations

import http.client
import os
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import FLEET_AGENT, AgentProcess, free_port_block, wait_until
from fleet_agent.schema import Status, parse_node_report
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

SCENARIO = """
seed: 7
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 1}
  - {name: v5e, kind: tpu, model: v5e, chips: 4, count: 1}
faults:
  - {kind: row_remap_pending, group: h100, hosts: [0], chips: [5]}
"""

# promtool lints these names and labels, but they are dcgm-exporter's: dashboards query them as is.
# Counters keep dcgm-exporter's names, which lack the "_total" suffix promtool asks for.
DCGM_LINT = ("label names should be written in 'snake_case' not 'camelCase'",
             "metric name should not include type 'counter'",
             'counter metrics should have "_total" suffix')


@pytest.fixture
def scenario(tmp_path: Path) -> str:
    p = tmp_path / "scenario.yaml"
    p.write_text(SCENARIO)
    return str(p)


def _sim(scenario: str, host_index: int = 0, **cfg: object) -> dict[str, object]:
    # A generous deadline: on a busy test machine healthy chips must still answer within it.
    return {"simulation": {"scenario": scenario, "host_index": host_index}, "interval_s": 3,
            "collector_timeout_s": 1.5, **cfg}


def test_healthz_node_and_metrics(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario))
    h = agent.get("/healthz")
    assert h.status == 200 and h.body == b"ok\n"

    node = agent.get("/v1/node")
    assert node.status == 200 and node.headers["content-type"] == "application/json"
    report = parse_node_report(node.json())
    assert report.host == "h100-0000"
    assert report.chips_expected == 8 and len(report.chips) == 8
    assert report.driver_version
    pending = report.chips[5]
    assert pending.status is Status.DEGRADED
    assert [p.check for p in pending.problems] == ["row_remap"]
    assert all(c.status is Status.HEALTHY for i, c in enumerate(report.chips) if i != 5)
    assert report.status is Status.DEGRADED

    metrics = agent.get("/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
    temps = families["DCGM_FI_DEV_GPU_TEMP"].samples
    assert len(temps) == 8 and {s.labels["Hostname"] for s in temps} == {"h100-0000"}
    failing = families["fleet_health_check_failing"].samples
    assert [(s.labels["chip"], s.labels["check"]) for s in failing] == [("5", "row_remap")]
    head = agent.get("/metrics", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(metrics.body)


def test_summary_view_over_http_and_what_fleetctl_asks_for(start_agent: Callable[..., AgentProcess],
                                                           scenario: str) -> None:
    """/v1/node?view=summary is the same sample without the chips' vendor detail; fleetctl's fan-out
    asks for it by default and builds the same row from it as from the whole report, `hosts show`
    asks for the whole report (it shows each chip's XIDs)."""
    from fleetctl.fanout import NODE_PATH, FanoutOptions, fetch_all
    from fleetctl.inventory import Host
    from fleetctl.report.build import host_row_from_node

    # One sample for the whole test; a chip timed out on a busy machine would have no detail either.
    agent = start_agent(_sim(scenario, interval_s=60, collector_timeout_s=10))
    full, summary = agent.get("/v1/node").json(), agent.get("/v1/node?view=summary").json()
    assert all(c["gpu"] is not None for c in full["chips"]) and len(full["chips"]) == 8
    assert len(agent.get("/v1/node?view=summary").body) * 2 < len(agent.get("/v1/node").body)
    for doc in (full, summary):
        doc.pop("sample_age_s")
    for chip in full["chips"]:
        chip["gpu"] = None
    assert summary == full
    bad = agent.get("/v1/node?view=all")
    assert bad.status == 400 and bad.body == b"unknown view: /v1/node?view= takes full or summary\n"

    host = Host("h100-0000", "127.0.0.1", ("h100",), {}, agent_port=agent.port, expected_chips=8)
    [brief] = fetch_all([host], lambda h: None, FanoutOptions(timeout_s=5.0, deadline_s=10.0))
    [whole] = fetch_all([host], lambda h: None, FanoutOptions(timeout_s=5.0, deadline_s=10.0, path=NODE_PATH))
    assert brief.report is not None and whole.report is not None
    assert all(c.gpu is None for c in brief.report.chips)
    assert whole.report.chips[5].gpu is not None and whole.report.chips[5].gpu.row_remap_pending
    now = time.time()
    rows = [host_row_from_node(host.name, host.address, host.agent_port, host.groups, r.report, now,
                               expected_chips=8) for r in (brief, whole)]
    assert rows[0].status == rows[1].status and rows[0].status.value == "degraded"
    assert rows[0].problems == rows[1].problems and [p.check for p in rows[0].problems] == ["row_remap"]
    assert [(c.index, c.status, c.temperature_c, c.power_w) for c in rows[0].chips] == \
        [(c.index, c.status, c.temperature_c, c.power_w) for c in rows[1].chips]


def test_tpu_host(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario, host_index=1))
    report = parse_node_report(agent.get("/v1/node").json())
    assert [c.kind for c in report.chips] == ["tpu"] * 4
    assert report.status is Status.HEALTHY
    text = agent.get("/metrics").body.decode()
    assert "DCGM_FI_" not in text and 'fleet_chip_duty_cycle_ratio{chip="0",kind="tpu"' in text


def test_metrics_pass_promtool(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario))
    body = agent.get("/metrics").body
    full = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    problems = [line for line in (full.stdout + full.stderr).decode().splitlines() if line.strip()]
    # Exit 3 is "lint problems"; anything else non-zero is a parse error.
    assert full.returncode in (0, 3), problems
    assert problems, "expected promtool to flag the dcgm-exporter label names (a sign it linted)"
    for line in problems:
        assert line.startswith("DCGM_FI_") and line.endswith(DCGM_LINT), line
    # Our own names must be clean.
    ours = b"\n".join(line for line in body.splitlines() if b"DCGM_FI_" not in line) + b"\n"
    clean = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True, timeout=30)
    assert clean.returncode == 0, (clean.stdout + clean.stderr).decode()


def test_token(start_agent: Callable[..., AgentProcess], scenario: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-abc\n")
    token_file.chmod(0o600)
    agent = start_agent(_sim(scenario, token_file=str(token_file)), token="t0ken-abc")
    for path in ("/v1/node", "/metrics"):
        for token in (None, "wrong", "t0ken-ab"):
            r = agent.get(path, token=token)
            assert r.status == 401 and r.body == b"" and r.headers["www-authenticate"] == "Bearer"
        assert agent.get(path, token="t0ken-abc").status == 200
    assert agent.get("/healthz").status == 200
    assert "t0ken-abc" not in agent.stderr()


def test_drained_file(start_agent: Callable[..., AgentProcess], scenario: str, tmp_path: Path) -> None:
    drained = tmp_path / "drained"
    agent = start_agent(_sim(scenario, drained_file=str(drained)))
    assert agent.get("/v1/node").json()["drained"] is False
    drained.write_text("fleetctl drain: replacing GPU 5 (ticket OPS-1)\n")
    agent.wait_for(lambda: agent.get("/v1/node").json()["drained"] is True, 10, "drained")
    report = parse_node_report(agent.get("/v1/node").json())
    assert report.drained_reason == "fleetctl drain: replacing GPU 5 (ticket OPS-1)"
    assert "fleet_node_drained 1.0" in agent.get("/metrics").body.decode()


def test_sigterm_stops_cleanly(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario))
    assert agent.stop() == 0


# --- idle and abusive clients (issue 17) ------------------------------------------------------------

# This file's agents listen in their own range: other suites run beside it on the machine.
PORTS = (39000, 39999)
STALLED = b"GET /v1/node HTTP/1.1\r\nHost: x\r\nUser-Agent: sl"  # a request never finished
TOKEN = "t0ken-abc"


def _port() -> int:
    return free_port_block(1, *PORTS)


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def _stall(port: int, n: int, held: list[socket.socket]) -> None:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(STALLED)
        held.append(s)


def _timed_get(agent: AgentProcess, path: str, token: str | None = None) -> tuple[int, float]:
    t0 = time.monotonic()
    status = agent.get(path, token=token, timeout=3).status
    return status, time.monotonic() - t0


def test_hundreds_of_stalled_requests_do_not_silence_the_agent(
        start_agent: Callable[..., AgentProcess], scenario: str, token_file: str,
        sockets: list[socket.socket]) -> None:
    # The stalled requests would only time out after 60 s: the test is over long before.
    agent = start_agent(_sim(scenario, token_file=token_file, max_connections=64, request_timeout_s=60,
                             port=_port()), token=TOKEN)
    scraper = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=3)  # keep-alive, with the token
    auth = {"Authorization": f"Bearer {TOKEN}"}
    scraper.request("GET", "/metrics", headers=auth)
    assert scraper.getresponse().read()
    _stall(agent.port, 300, sockets)
    for path, token in (("/healthz", None), ("/v1/node", TOKEN), ("/metrics", TOKEN)):
        status, took = _timed_get(agent, path, token)
        assert status == 200 and took < 1.5, (path, status, took)
    scraper.request("GET", "/v1/node", headers=auth)
    reply = scraper.getresponse()
    assert reply.status == 200 and reply.read().startswith(b"{")
    scraper.close()
    assert "Traceback" not in agent.stderr()


def test_sigterm_with_open_keep_alive_scrapes_is_clean(
        start_agent: Callable[..., AgentProcess], scenario: str, sockets: list[socket.socket],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Warnings about sockets left open at exit are shown (Python hides them by default).
    monkeypatch.setenv("PYTHONWARNINGS", "always::ResourceWarning")
    agent = start_agent(_sim(scenario, port=_port()))
    for i in range(12):  # scrapers between two scrapes, on keep-alive connections
        c = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"/metrics" if i % 2 else b"/v1/node"))
        _read_head(c)
        sockets.append(c)
    for _ in range(4):  # scrapers that asked for many answers and read none of them
        c = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
        sockets.append(c)
    _stall(agent.port, 4, sockets)
    # Wait until the agent holds them all (events, not a pause): an answer has begun on each unread
    # pipeline, and a probe opened after the stalled connections is answered (the agent accepts
    # connections in the order they came).
    for c in sockets[12:16]:
        assert select.select([c], [], [], 10)[0], "no answer began on a pipelined connection"
    assert agent.get("/healthz").status == 200
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    rc = agent.proc.wait(10)
    took = time.monotonic() - t0
    err = agent.stderr()
    assert rc == 0 and took < 5, (rc, took, err)
    assert "Traceback" not in err and "Warning" not in err and "Exception" not in err, err
    for c in sockets[:12]:  # each connection was closed by the agent, not left to the kernel
        assert c.recv(1) == b""


def _read_head(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head


def _low_nofile(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_the_connection_cap_fits_the_open_file_limit(scenario: str, tmp_path: Path,
                                                     sockets: list[socket.socket]) -> None:
    port = _port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_sim(scenario, port=port, listen_address="127.0.0.1", max_connections=5000,
                                       request_timeout_s=60)))
    err_path = tmp_path / "agent.stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen([str(FLEET_AGENT), "run", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=err, stdin=subprocess.DEVNULL, preexec_fn=_low_nofile(400),
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=tmp_path)
    agent = AgentProcess(proc, port, tmp_path, tmp_path / "none", err_path)
    try:
        agent.wait_for(lambda: agent.get("/v1/node", timeout=1).status == 200, 30, "the agent")
        notices = [line for line in agent.stderr().splitlines() if "max_connections" in line]
        assert notices == ["fleet-agent: max_connections 5000 does not fit the open-file limit (400, 320 "
                           "kept for the agent's own files): serving at most 80 connections "
                           "(raise LimitNOFILE for more)"]
        # More stalled connections than the process has files for: the cap keeps accept() working.
        _stall(port, 450, sockets)
        for path in ("/healthz", "/v1/node"):
            status, took = _timed_get(agent, path)
            assert status == 200 and took < 1.5, (path, status, took)
        wait_until(lambda: agent.get("/healthz", timeout=1).status == 200, 5, "healthz")
        assert "out of system resource" not in agent.stderr() and "Traceback" not in agent.stderr()
    finally:
        assert agent.stop() == 0
