"""A real Prometheus (Debian's /usr/bin/prometheus) scraping real sim-fleet agents through the file_sd
targets that ``fleetctl prometheus targets`` writes; ``fleetctl health --source prometheus`` must
then agree with the direct fan-out, and ``fleetctl remediate --source prometheus`` plan as it does."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import interrupt
from test_health_simfleet import EXPECTED, SCENARIO, port_block, start_sim_fleet, stop

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FLEETCTL = str(BIN / "fleetctl")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RULES = Path(__file__).parents[2] / "deploy/prometheus/rules/fleetctl-report.rules.yml"
DEFAULT_POLICY = Path(__file__).parents[2] / "fleetctl/remediate/default-policy.yaml"


def query(url: str, promql: str) -> list[dict]:  # type: ignore[type-arg]
    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=5
    ) as r:
        return json.loads(r.read())["data"]["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus (make system-deps)")
    work = tmp_path_factory.mktemp("prom")
    fleet = start_sim_fleet(work, SCENARIO, 6, lo=37000, hi=37099)
    dead_port = port_block(1, 39000, 39049)  # nothing listens there: up == 0
    inv = work / "fleet.yml"
    inv.write_text(
        fleet.inventory.read_text() + f"\n# a host whose agent is down\nungrouped:\n  hosts:\n"
        f"    dead-0000: {{ansible_host: 127.0.0.1, fleet_agent_port: {dead_port}}}\n"
    )
    cache = work / "cache"
    env = {**os.environ, "FLEETCTL_CACHE_DIR": str(cache)}
    targets = work / "targets.json"
    out = subprocess.run(
        [FLEETCTL, "prometheus", "targets", "-i", str(inv), "-o", str(targets)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert len(json.loads(targets.read_text())) == 7
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: fleet\n"
        f"    file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]\n"
    )
    port = port_block(1, 39050, 39099)
    url = f"http://127.0.0.1:{port}"
    log = work / "prometheus.log"
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # every target scraped at least once, reachable ones with a node status
            assert prom.poll() is None, log.read_text()
            try:
                up = query(url, "up")
                status = query(url, "fleet_node_status == 1")
                summaries = query(url, "count by (host) (fleetctl:host_chip_models)")
                if len(up) == 7 and len(status) == 6 and len(summaries) == 6:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Prometheus never scraped the fleet:\n{log.read_text()}"
            time.sleep(0.5)
        yield inv, url, cache
    finally:
        prom.terminate()
        prom.wait(20)
        stop(fleet)


def health(*args: str, cache: Path, env: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = subprocess.run(
        [FLEETCTL, "health", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache), **(env or {})},
    )
    assert out.returncode in (0, 1), out.stderr
    assert "recording rules" not in out.stderr  # the rules are loaded: no fallback
    return out.returncode, json.loads(out.stdout)


def test_file_sd_labels_reach_prometheus(setup: tuple[Path, str, Path]) -> None:
    _, url, _ = setup
    up = {s["metric"]["host"]: (s["metric"]["group"], s["value"][1]) for s in query(url, "up")}
    assert up["dead-0000"] == ("ungrouped", "0")
    assert up["h100-0001"] == ("gpu_nodes", "1") and up["v5e-0000"] == ("tpu_nodes", "1")


def test_prometheus_report_matches_direct_fan_out(setup: tuple[Path, str, Path]) -> None:
    inv, url, cache = setup
    direct_rc, direct = health("-i", str(inv), "--timeout", "2", cache=cache)
    prom_rc, via_prom = health("-i", str(inv), "--source", "prometheus", "--prometheus-url", url, cache=cache)
    assert via_prom["source"] == "prometheus"
    statuses = {h["name"]: h["status"] for h in via_prom["hosts"]}
    assert statuses == {h["name"]: h["status"] for h in direct["hosts"]}
    assert statuses == {**EXPECTED, "dead-0000": "unreachable"}
    assert prom_rc == direct_rc == 1
    chips = {h["name"]: (h["chips_present"], h["chips_ok"]) for h in via_prom["hosts"]}
    assert chips == {h["name"]: (h["chips_present"], h["chips_ok"]) for h in direct["hosts"]}
    hot = next(h for h in via_prom["hosts"] if h["name"] == "h100-0001")
    assert ("temperature", 5) in {(p["check"], p["chip"]) for p in hot["problems"]}
    assert hot["max_temperature_c"] >= 87


def test_pattern_applies_to_prometheus_source(setup: tuple[Path, str, Path]) -> None:
    inv, url, cache = setup
    rc, doc = health(
        "-i", str(inv), "h100-0000,h100-0003", "--source", "prometheus", "--prometheus-url", url, cache=cache
    )
    assert rc == 0 and [h["name"] for h in doc["hosts"]] == ["h100-0000", "h100-0003"]


def test_summary_rows_from_the_recording_rules_agree_with_direct_fan_out(
        setup: tuple[Path, str, Path]) -> None:
    # Past this many selected hosts only doubtful summaries are read chip by chip: 0 forces it here.
    inv, url, cache = setup
    _, direct = health("-i", str(inv), "--timeout", "2", cache=cache)
    rc, via_rules = health("-i", str(inv), "--source", "prometheus", "--prometheus-url", url, cache=cache,
                           env={"FLEETCTL_PROMETHEUS_DETAIL_HOSTS": "0"})
    assert rc == 1
    got = {h["name"]: (h["status"], h["chips_ok"]) for h in via_rules["hosts"]}
    want = {h["name"]: (h["status"], h["chips_ok"]) for h in direct["hosts"]}
    assert got == want
    # The two reads are seconds apart (scrape, rule evaluation): a simulated temperature drifts a little.
    for h in direct["hosts"]:
        rules_temp = next(r["max_temperature_c"] for r in via_rules["hosts"] if r["name"] == h["name"])
        if h["max_temperature_c"] is None:
            assert rules_temp is None, h["name"]
        else:
            assert rules_temp is not None and abs(rules_temp - h["max_temperature_c"]) <= 3.0, h["name"]
    healthy = [h for h in via_rules["hosts"] if h["status"] == "healthy"]
    assert healthy and all(h["chips"] == [] for h in healthy)  # summary rows: no per-chip detail
    # A host that is not clean: its problems as the agent says them, and only its chips not healthy.
    listed = {h["name"]: [c["index"] for c in h["chips"]] for h in via_rules["hosts"]}
    for h in direct["hosts"]:
        if h["status"] not in ("healthy", "unreachable"):
            # (A set: a check failing twice on one chip with two messages is one series in Prometheus.)
            problems = {(p["check"], p["chip"], p["severity"]) for p in h["problems"]}
            rules_row = next(r for r in via_rules["hosts"] if r["name"] == h["name"])
            assert {(p["check"], p["chip"], p["severity"]) for p in rules_row["problems"]} == problems
            not_healthy = [c["index"] for c in h["chips"] if c["status"] != "healthy" or c["problems"]]
            assert listed[h["name"]] == not_healthy, h["name"]
    assert listed["h100-0001"] == [5]


@contextlib.contextmanager
def proxied(url: str, edit: Callable[[bytes], bytes] = lambda form: form, down: threading.Event | None = None
            ) -> Iterator[tuple[str, list[str], list[str]]]:
    """A proxy in front of Prometheus's query API: each query's form through ``edit`` on its way, and
    every query asked (decoded) listed, with the evaluation time each named ("" for none). Yields its
    URL and those two lists. While ``down`` is set it answers 503, as a restarting server behind a load
    balancer does."""
    asked: list[str] = []
    instants: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = edit(self.rfile.read(int(self.headers["Content-Length"])))
            fields = urllib.parse.parse_qs(form.decode())
            asked.extend(fields.get("query", []))
            instants.append(fields.get("time", [""])[0])
            code, body = 503, b'{"status":"error","errorType":"unavailable","error":"restarting"}'
            if down is None or not down.is_set():
                req = urllib.request.Request(f"{url}{self.path}", data=form,
                                             headers={"Content-Type": "application/x-www-form-urlencoded"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    code, body = 200, r.read()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked, instants
    finally:
        server.shutdown()
        server.server_close()


def test_the_agents_copies_of_their_faults_are_the_only_detail_read(setup: tuple[Path, str, Path]) -> None:
    inv, url, cache = setup
    # The agents copy a host's faults only while it is not clean (the dead host is scraped by no one).
    copied = {s["metric"]["host"] for s in query(url, "fleet_fault_detail")}
    assert copied == {name for name, status in EXPECTED.items() if status != "healthy"}
    _, direct = health("-i", str(inv), "--timeout", "2", cache=cache)
    with proxied(url) as (proxy, asked, _):
        rc, via_copies = health("-i", str(inv), "--source", "prometheus", "--prometheus-url", proxy,
                                cache=cache, env={"FLEETCTL_PROMETHEUS_DETAIL_HOSTS": "0"})
    # One round: no query names a host, none asks for a chip.
    assert any(q.startswith("fleet_fault_detail{") for q in asked)
    assert not [q for q in asked if "host=~" in q or "chip=" in q]
    assert rc == 1
    key = ("status", "chips_present", "chips_ok", "agent_version")
    assert {h["name"]: [h[k] for k in key] for h in via_copies["hosts"]} == {
        h["name"]: [h[k] for k in key] for h in direct["hosts"]}
    for h in direct["hosts"]:
        if h["status"] not in ("healthy", "unreachable"):
            row = next(r for r in via_copies["hosts"] if r["name"] == h["name"])
            assert {(p["check"], p["chip"]) for p in row["problems"]} == {
                (p["check"], p["chip"]) for p in h["problems"]}, h["name"]
            assert [c["index"] for c in row["chips"]] == [
                c["index"] for c in h["chips"] if c["status"] != "healthy" or c["problems"]], h["name"]


def test_every_round_of_one_report_reads_one_instant(setup: tuple[Path, str, Path]) -> None:
    inv, url, cache = setup
    _, direct = health("-i", str(inv), "--timeout", "2", cache=cache)
    for env in ({}, {"FLEETCTL_PROMETHEUS_DETAIL_HOSTS": "0"}):  # every host chip by chip; faults only
        with proxied(url) as (proxy, asked, instants):
            started = time.time()
            rc, report = health("-i", str(inv), "--source", "prometheus", "--prometheus-url", proxy,
                                cache=cache, env=env)
        assert rc == 1
        if not env:  # a small selection: a round after the first, chip by chip
            assert any("host=~" in q for q in asked)
        (when,) = set(instants)  # one instant, named in every query
        assert started <= float(when) <= time.time()
        assert {h["name"]: h["status"] for h in report["hosts"]} == {
            h["name"]: h["status"] for h in direct["hosts"]}


def test_without_the_rules_one_line_says_so_and_the_report_is_the_same(
        setup: tuple[Path, str, Path]) -> None:
    inv, url, cache = setup
    # A second Prometheus without rules would take a minute to fill; a proxy that hides the rules'
    # series is the same to fleetctl: ask for a metric that does not exist.
    with proxied(url, lambda form: form.replace(b"fleetctl%3A", b"absent%3A")) as (proxy, _, _):
        out = subprocess.run(
            [FLEETCTL, "health", "--json", "-i", str(inv), "--source", "prometheus",
             "--prometheus-url", proxy],
            capture_output=True, text=True, timeout=60, env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)})
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and "no fleetctl-report recording rules" in out.stderr
    statuses = {h["name"]: h["status"] for h in json.loads(out.stdout)["hosts"]}
    assert statuses == {**EXPECTED, "dead-0000": "unreachable"}


def test_a_watched_table_shows_the_rules_line_with_each_round_not_on_stderr(
        setup: tuple[Path, str, Path], tmp_path: Path) -> None:
    # On a terminal a line on stderr would be drawn over by the next redraw: each round's notes are
    # shown with it (here a pipe, where each round is logged after its time stamp).
    inv, url, cache = setup
    err = tmp_path / "err"
    with proxied(url, lambda form: form.replace(b"fleetctl%3A", b"absent%3A")) as (proxy, _, _):
        loop = subprocess.Popen(
            [FLEETCTL, "health", "-i", str(inv), "--source", "prometheus", "--prometheus-url", proxy,
             "--watch", "0.3"], stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
            env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)})
        lines: list[str] = []
        try:
            for line in loop.stdout or ():
                lines.append(line)
                if sum(x.startswith("--- ") for x in lines) == 3:  # two rounds whole
                    break
        finally:
            interrupt(loop, 60)
    rounds = "".join(lines).split("--- ")[1:3]
    assert len(rounds) == 2, "".join(lines)[-2000:]
    for text in rounds:
        below_stamp = text.splitlines()[1]
        assert "no fleetctl-report recording rules" in below_stamp, text[:500]
        assert text.count("recording rules") == 1 and "dead-0000" in text
    assert "recording rules" not in err.read_text()


def remediate_plan(*args: str, cache: Path, db: Path, policy: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [FLEETCTL, "remediate", "-o", "json", "--db", str(db), "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)},
    )
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def decisions(plan: dict) -> dict[str, tuple[str, ...]]:  # type: ignore[type-arg]
    """host -> what the plan does with it: the action and remediation it starts, or why it skips it."""
    out: dict[str, tuple[str, ...]] = {a["host"]: ("start", a["action"], a["remediation"])
                                       for a in plan["actions"]}
    out.update({s["host"]: ("skip", s["kind"]) for s in plan["skipped"]})
    return out


def test_remediate_through_prometheus_plans_as_direct_fan_out(
        setup: tuple[Path, str, Path], tmp_path: Path) -> None:
    # The shipped policy with one observation enough (count 1) and no fleet-wide stop (three of seven
    # hosts are unhealthy or unreachable here): the decisions then follow from the problems' actions.
    import yaml

    inv, url, cache = setup
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["hysteresis"] = {"count": 1, "span_s": 0}
    doc["actions"]["unreachable"]["hysteresis"] = {"count": 1, "span_s": 0}
    doc["fleet_stop"] = [{"scope": "all", "fraction": 1.0, "min_hosts": 100}]
    doc["budgets"]["max_unavailable"] = [{"scope": "all", "max": "100%"}]
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    direct = remediate_plan("-i", str(inv), "--timeout", "2", cache=cache, db=tmp_path / "direct.db",
                            policy=policy)
    via_prom = remediate_plan("-i", str(inv), "--source", "prometheus", "--prometheus-url", url, cache=cache,
                              db=tmp_path / "prom.db", policy=policy)
    assert not direct["fleet_stopped"] and not via_prom["fleet_stopped"]
    want = decisions(direct)
    assert decisions(via_prom) == want
    # What the scenario calls for: the missing TPU chip a reboot (chip_count), the hot GPU a look at
    # the cooling (reported only); through Prometheus every action used to read none.
    assert want["v5e-0001"] == ("start", "reboot", "repair")
    assert want["h100-0001"] == ("skip", "report") and "dead-0000" in want
    hot = next(s for s in via_prom["skipped"] if s["host"] == "h100-0001")
    assert "check_cooling" in hot["why"]


@contextlib.contextmanager
def reading_through(work: Path, remotes: list[str]) -> Iterator[str]:
    """A Prometheus that scrapes nothing and answers from ``remotes`` (remote read, as a query layer
    answers from its stores): one that does not answer makes its answers partial, with warnings."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "reader.yml"
    config.write_text("global: {evaluation_interval: 1s}\nremote_read:\n" + "".join(
        f"  - {{url: '{remote}/api/v1/read', read_recent: true, remote_timeout: 2s}}\n"
        for remote in remotes))
    port = port_block(1, 39150, 39199)
    url = f"http://127.0.0.1:{port}"
    log = work / "reader.log"
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'reader'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert prom.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield url
    finally:
        prom.terminate()
        prom.wait(20)


def test_a_store_that_does_not_answer_is_said_in_one_line_and_its_hosts_are_not_judged(
        setup: tuple[Path, str, Path], tmp_path: Path) -> None:
    inv, url, cache = setup
    _, direct = health("-i", str(inv), "--timeout", "2", cache=cache)
    dead = f"http://127.0.0.1:{port_block(1, 39100, 39149)}"  # a store that is down: nothing listens
    with reading_through(tmp_path, [url, dead]) as reader:
        rc, report = health("-i", str(inv), "--source", "prometheus", "--prometheus-url", reader, cache=cache)
        out = subprocess.run([FLEETCTL, "health", "-i", str(inv), "--source", "prometheus",
                              "--prometheus-url", reader], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache), "COLUMNS": "200"})
        # Remediation decides nothing on a partial view (a chip on the silent store reads as missing).
        plan = subprocess.run([FLEETCTL, "remediate", "-o", "json", "-i", str(inv), "--db",
                               str(tmp_path / "r.db"), "--policy", str(DEFAULT_POLICY), "--source",
                               "prometheus", "--prometheus-url", reader],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)})
    # The store that answered holds every series: the same statuses as the agents give, and said.
    assert rc == 1
    assert {h["name"]: h["status"] for h in report["hosts"]} == {
        h["name"]: h["status"] for h in direct["hosts"]}
    assert report["warnings"] and all("remote_read" in w["warning"] and dead.split("//")[1] in w["warning"]
                                      for w in report["warnings"])
    assert "up" in {w["query"] for w in report["warnings"]}
    said = [line for line in out.stderr.splitlines() if "with warnings" in line]
    assert len(said) == 1 and "remote_read" in said[0], out.stderr
    assert plan.returncode == 2 and plan.stdout == "", plan.stderr
    assert "partial view of the fleet, nothing is decided on it" in plan.stderr
    # Only the store that is down: no host is in `up`, none is called unreachable for it.
    with reading_through(tmp_path / "alone", [dead]) as reader:
        alone = subprocess.run([FLEETCTL, "health", "--json", "-i", str(inv), "--source", "prometheus",
                                "--prometheus-url", reader], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)})
    assert alone.returncode == 1, alone.stderr
    rows = json.loads(alone.stdout)["hosts"]
    assert len(rows) == 7
    assert {(h["status"], h["reason"]["kind"]) for h in rows} == {("error", "prometheus_partial")}


@pytest.mark.parametrize("command", ["health", "remediate"])
def test_a_watch_outlives_prometheus_going_away_and_coming_back(
        setup: tuple[Path, str, Path], tmp_path: Path, command: str) -> None:
    import queue

    inv, url, cache = setup
    extra = (["--json"] if command == "health" else
             ["-o", "json", "--db", str(tmp_path / "state.db"), "--policy", str(DEFAULT_POLICY)])
    err = tmp_path / "err"
    down = threading.Event()
    with proxied(url, down=down) as (proxy, _, _):
        loop = subprocess.Popen(
            [FLEETCTL, command, "-i", str(inv), "--source", "prometheus", "--prometheus-url", proxy,
             "--watch", "0.3" if command == "health" else "1", *extra],  # remediate: at least 1 s
            stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
            env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)})
        rounds: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=lambda: [rounds.put(line) for line in loop.stdout or ()], daemon=True).start()

        def said(what: str) -> int:
            return err.read_text().count(what)

        def next_round() -> str:
            try:
                return rounds.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"no round in 60 s ({loop.poll()}): {err.read_text()[-2000:]}") from None

        try:
            assert next_round().startswith("{")  # a good round
            down.set()
            deadline = time.monotonic() + 30
            skipped = "round failed" if command == "health" else "round skipped, no observation"
            while said(skipped) < 2:
                assert loop.poll() is None, err.read_text()  # still watching
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            assert "HTTP 503" in err.read_text()
            while not rounds.empty():  # what came before the server went away
                rounds.get()
            down.clear()
            assert next_round().startswith("{")  # back: a good round again
        finally:
            interrupt(loop, 60)
    assert loop.returncode in (0, 1), err.read_text()  # health: its last round's; remediate: a clean stop
