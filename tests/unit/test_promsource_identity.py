"""Whose agent a Prometheus target scrapes: a copied address in the inventory makes one host's target
scrape another machine's agent. As with direct fan-out (fleetctl.report.identity), that agent's health
must not pass for this host's: remediate and undrain act on what the report says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_promsource import NOW, RulesPrometheus, host

from fleetctl.promsource import IDENTITY, IDENTITY_RECORD, SummaryRow, prometheus_report
from fleetctl.report import HostHealth, HostRow

# Each its own agent endpoint (the fakes' hosts share one: a case of its own, see the direct path's tests).
HOSTS = [host(f"c{i}", 19000 + i) for i in range(10)] + [host("hot", 19010)]


def rows_with(*mismatched: tuple[str, str], version: str = "5") -> dict[str, HostRow]:
    """The report when the agents of ``mismatched`` hosts name the host given with each: from the rules'
    record (version 5), or from the query itself, asked after the first round (older rules)."""
    fake = RulesPrometheus(version=version)
    series = [({"host": h, "hostname": said, "job": "fleet-agent", "version": "0.2.0"}, 1.0)
              for h, said in mismatched]
    fake.series[IDENTITY_RECORD if version == "5" else IDENTITY] = series
    report = prometheus_report(HOSTS, fake, now=NOW, detail_all=False, notice=print)
    assert IDENTITY_RECORD in fake.queries
    assert (IDENTITY in fake.queries) is (version != "5")  # the query's cost only without the record
    return {r.name: r for r in report.hosts}


@pytest.mark.parametrize("version", ["5", "4"])
def test_a_target_that_scrapes_another_inventory_hosts_agent_is_an_error_showing_nothing_of_it(
        version: str) -> None:
    rows = rows_with(("c1", "c2"), version=version)
    c1 = rows["c1"]
    assert c1.status is HostHealth.ERROR and c1.reason_kind == "wrong_agent" and c1.chips_present == 0
    assert c1.reason is not None and "inventory host c2, not c1" in c1.reason
    assert [p.check for p in c1.problems] == ["agent_identity"]
    # The host whose agent it is, and every other, as before.
    assert isinstance(rows["c2"], SummaryRow) and rows["c2"].status is HostHealth.HEALTHY
    assert rows["hot"].status is HostHealth.UNHEALTHY


def test_an_agent_naming_a_host_the_inventory_lacks_makes_the_host_unknown() -> None:
    c3 = rows_with(("c3", "some-other-machine"))["c3"]
    assert c3.status is HostHealth.UNKNOWN and c3.reason_kind is None
    assert [(p.check, p.action) for p in c3.problems] == [("agent_identity", "check_configuration")]


def test_the_short_or_the_full_form_of_the_name_is_the_same_host() -> None:
    rows = rows_with(("c4", "c4.dc1.example.org"))
    assert isinstance(rows["c4"], SummaryRow) and rows["c4"].status is HostHealth.HEALTHY
    assert rows["c4"].problems == []


def test_the_identity_query_answers_the_agents_naming_another_host_only(tmp_path: Path) -> None:
    # Prometheus's own engine (promtool, installed with the prometheus package: make system-deps).
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (make system-deps)"
    series = {"own": 'fleet_agent_info{job="fleet-agent",host="h1",hostname="h1",version="0.2.0"}',
              "copied": 'fleet_agent_info{job="fleet-agent",host="h2",hostname="h1",version="0.2.0"}',
              "old agent": 'fleet_agent_info{job="fleet-agent",host="h3",version="0.1.0"}'}
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": "1x5"} for s in series.values()],
        "promql_expr_test": [{"expr": IDENTITY, "eval_time": "3m",
                              "exp_samples": [{"labels": series["copied"], "value": 1}]}],
    }]}
    path = tmp_path / "identity.test.yml"
    path.write_text(yaml.safe_dump(test), encoding="utf-8")
    run = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
