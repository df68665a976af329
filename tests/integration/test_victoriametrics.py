"""A real VictoriaMetrics (Debian's /usr/bin/victoria-metrics, its Prometheus-compatible API) scraping
real sim-fleet agents through the file_sd targets ``fleetctl prometheus targets`` writes, with the
fleetctl-report recording rules evaluated by a real vmalert; ``fleetctl health --source prometheus
--prometheus-url <victoria-metrics>`` must agree with direct fan-out. A second VictoriaMetrics without
vmalert shows the fallback: one line, the same statuses.

What differs from Prometheus and is exercised here: VictoriaMetrics answers an instant query "now" as
of ``-search.latencyOffset`` (30 s by default) unless asked ``nocache=1``, vmalert's evaluations see
the data that late too, and the rules API is vmalert's (proxied with ``-vmalert.proxyURL``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_health_simfleet import EXPECTED, SCENARIO, SimFleet, port_block, start_sim_fleet, stop

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FLEETCTL = str(BIN / "fleetctl")
VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
VMALERT = shutil.which("vmalert") or "/usr/bin/vmalert"
RULES = Path(__file__).parents[2] / "deploy/prometheus/rules/fleetctl-report.rules.yml"
# This file's ports (other tests run beside it on this machine).
LO, HI = 37000, 37099
EVALUATION_S = 15  # vmalert's interval: shorter than VictoriaMetrics's 30 s latency offset


def query(url: str, promql: str) -> list[dict]:  # type: ignore[type-arg]
    args = urllib.parse.urlencode({"query": promql, "nocache": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{args}", timeout=5) as r:
        return json.loads(r.read())["data"]["result"]  # type: ignore[no-any-return]


@dataclass
class Setup:
    inventory: Path
    url: str  # VictoriaMetrics with vmalert's rules (and its rules API proxied)
    bare_url: str  # VictoriaMetrics alone: no recording rules
    cache: Path


def _start(argv: list[str], log: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    for binary in (VICTORIA, VMALERT):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: apt-get install victoria-metrics (make system-deps)")
    work = tmp_path_factory.mktemp("vm")
    fleet: SimFleet = start_sim_fleet(work, SCENARIO, 6, lo=LO + 10, hi=LO + 49)
    dead_port = port_block(1, LO + 50, LO + 59)  # nothing listens there: up == 0
    inv = work / "fleet.yml"
    inv.write_text(
        fleet.inventory.read_text() + f"\n# a host whose agent is down\nungrouped:\n  hosts:\n"
        f"    dead-0000: {{ansible_host: 127.0.0.1, fleet_agent_port: {dead_port}}}\n"
    )
    cache = work / "cache"
    targets = work / "targets.json"
    out = subprocess.run([FLEETCTL, "prometheus", "targets", "-i", str(inv), "-o", str(targets)],
                         capture_output=True, text=True, env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stderr
    (work / "scrape.yml").write_text(
        "global: {scrape_interval: 2s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: fleet\n"
        f"    file_sd_configs: [{{files: ['{targets}']}}]\n"
    )
    vm_port = port_block(1, LO, LO + 2)
    alert_port = port_block(1, vm_port + 1, LO + 5)
    bare_port = port_block(1, alert_port + 1, LO + 9)
    url, bare_url = f"http://127.0.0.1:{vm_port}", f"http://127.0.0.1:{bare_port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port, name, extra in ((vm_port, "vm", [f"-vmalert.proxyURL=http://127.0.0.1:{alert_port}"]),
                                  (bare_port, "bare", [])):
            _start([VICTORIA, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={work / name}",
                    f"-promscrape.config={work / 'scrape.yml'}", "-loggerLevel=WARN", *extra],
                   work / f"{name}.log", procs)
        _start([VMALERT, f"-httpListenAddr=127.0.0.1:{alert_port}", f"-rule={RULES}",
                f"-datasource.url={url}", f"-remoteWrite.url={url}", f"-evaluationInterval={EVALUATION_S}s",
                "-loggerLevel=WARN"], work / "vmalert.log", procs)
        deadline = time.monotonic() + 120
        while True:  # every target scraped; the rules' summaries cover the six live hosts
            logs = "\n".join(p.read_text()[-800:] for p in work.glob("*.log"))
            assert all(p.poll() is None for p in procs), logs
            try:
                if (len(query(url, "up")) == 7 and len(query(bare_url, "fleet_node_status == 1")) == 6
                        and len(query(url, "count by (host) (fleetctl:host_chip_models)")) == 6):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"VictoriaMetrics never covered the fleet:\n{logs}"
            time.sleep(1)
        yield Setup(inv, url, bare_url, cache)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        stop(fleet)


def health(*args: str, cache: Path, env: dict[str, str] | None = None) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    out = subprocess.run([FLEETCTL, "health", "--json", *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache), **(env or {})})
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def faults(doc: dict) -> dict[str, set[tuple[str, int | None]]]:  # type: ignore[type-arg]
    return {h["name"]: {(p["check"], p["chip"]) for p in h["problems"]} for h in doc["hosts"]}


def test_victoriametrics_report_matches_direct_fan_out(setup: Setup) -> None:
    rc, direct, _ = health("-i", str(setup.inventory), "--timeout", "2", cache=setup.cache)
    vm_rc, via_vm, err = health("-i", str(setup.inventory), "--source", "prometheus", "--prometheus-url",
                                setup.url, cache=setup.cache)
    assert err == ""  # the rules are found and current: no fallback line
    statuses = {h["name"]: h["status"] for h in via_vm["hosts"]}
    # Without nocache=1 every sample would be read 30 s late and each host be `unknown` (sample_age).
    assert statuses == {h["name"]: h["status"] for h in direct["hosts"]}
    assert statuses == {**EXPECTED, "dead-0000": "unreachable"}
    assert vm_rc == rc == 1
    chips = {h["name"]: (h["chips_present"], h["chips_ok"]) for h in via_vm["hosts"]}
    assert chips == {h["name"]: (h["chips_present"], h["chips_ok"]) for h in direct["hosts"]}
    # The injected faults, on the right hosts and chips (metrics carry one problem per check and
    # severity: the direct report's second message of a kind is not there).
    got, want = faults(via_vm), faults(direct)
    assert got == want
    assert ("temperature", 5) in got["h100-0001"] and ("pcie_link", 3) in got["h100-0002"]
    assert ("chip_count", None) in got["v5e-0001"]
    ages = [h["age_s"] for h in via_vm["hosts"] if h["age_s"] is not None]
    assert ages and max(ages) < 30


def test_summary_rows_from_vmalert_agree_with_direct_fan_out(setup: Setup) -> None:
    # vmalert's evaluations see the data 30 s late: the summaries' samples are that much older than
    # "now", and fleetctl must judge them against the time the evaluation saw (the info series), with
    # the group interval from vmalert's rules API (proxied), instead of sending every host to the
    # per-chip queries.
    with urllib.request.urlopen(f"{setup.url}/api/v1/rules", timeout=5) as r:
        groups = {g["name"]: g for g in json.loads(r.read())["data"]["groups"]}
    assert groups["fleetctl-report"]["interval"] == EVALUATION_S
    _, direct, _ = health("-i", str(setup.inventory), "--timeout", "2", cache=setup.cache)
    rc, via_rules, err = health("-i", str(setup.inventory), "--source", "prometheus", "--prometheus-url",
                                setup.url, cache=setup.cache, env={"FLEETCTL_PROMETHEUS_DETAIL_HOSTS": "0"})
    assert rc == 1 and err == ""
    got = {h["name"]: (h["status"], h["chips_ok"]) for h in via_rules["hosts"]}
    assert got == {h["name"]: (h["status"], h["chips_ok"]) for h in direct["hosts"]}
    healthy = [h for h in via_rules["hosts"] if h["status"] == "healthy"]
    assert len(healthy) == 3 and all(h["chips"] == [] for h in healthy)  # summary rows, not chip detail
    assert all(h["age_s"] >= 25 for h in healthy)  # the rules' data is VictoriaMetrics's latency offset old
    assert faults(via_rules)["h100-0001"] >= {("temperature", 5), ("throttle", 5)}
    # Past a small selection, a host that is not clean lists only its chips that are not healthy.
    hot = next(h for h in via_rules["hosts"] if h["name"] == "h100-0001")
    assert [c["index"] for c in hot["chips"]] == [5] and (hot["chips_present"], hot["chips_ok"]) == (8, 7)


def test_victoriametrics_without_the_rules_falls_back_in_one_line(setup: Setup) -> None:
    rc, doc, err = health("-i", str(setup.inventory), "--source", "prometheus", "--prometheus-url",
                          setup.bare_url, cache=setup.cache)
    assert rc == 1
    assert err.count("\n") == 1 and "no fleetctl-report recording rules" in err
    assert {h["name"]: h["status"] for h in doc["hosts"]} == {**EXPECTED, "dead-0000": "unreachable"}
    assert faults(doc)["h100-0002"] == {("pcie_link", 3)}
