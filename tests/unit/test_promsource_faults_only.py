"""A host that is not clean, past a small selection: its node and only its chips that are not healthy
are read, its figures are its agent's rollups (issue 20: the detail the size of the faults)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleet_agent.schema import Status
from test_promsource import NOW, RulesPrometheus, host, summary

from fleetctl.promsource import (
    CLEAN,
    SummaryRow,
    chip_queries,
    detail_queries,
    fault_queries,
    prometheus_report,
)
from fleetctl.report import FleetReport, HostHealth, HostRow

HOSTS = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]


def hot_row(fake: RulesPrometheus, *hosts: Any) -> tuple[HostRow, FleetReport]:
    report = prometheus_report(list(hosts) or HOSTS, fake, now=NOW, detail_all=False, notice=print)
    return next(r for r in report.hosts if r.name == "hot"), report


def seen(row: HostRow) -> tuple[Any, ...]:
    """What on-call reads of a row: its state, problems and chip figures."""
    return (row.status, [(p.check, p.severity, p.chip) for p in row.problems], row.chips_ok,
            row.chips_present, row.chips_total, row.chips_expected)


def test_a_faults_only_row_says_what_reading_every_chip_says() -> None:
    faults, faults_report = hot_row(RulesPrometheus())
    every, every_report = hot_row(RulesPrometheus(rollups=False))  # no rollups: every chip read
    assert isinstance(faults, SummaryRow) and not isinstance(every, SummaryRow)
    assert seen(faults) == seen(every) == (HostHealth.UNHEALTHY, [("xid", "critical", 1)], 1, 2, 2, 2)
    assert [c.index for c in every.chips] == [0, 1] and [c.index for c in faults.chips] == [1]
    assert faults.chips[0] == every.chips[1]  # the chip not healthy, as read with all the others
    # The fleet's chip counts are the same: the healthy chip counted from the rollups.
    assert faults_report.summary().chips == every_report.summary().chips
    assert faults_report.summary().chips == {"healthy": 21, "degraded": 0, "unknown": 0, "unhealthy": 1}
    # In the JSON report: the host's figures, and the one chip listed.
    doc = json.loads(faults_report.to_json())
    out = next(h for h in doc["hosts"] if h["name"] == "hot")
    assert (out["chips_present"], out["chips_ok"], out["max_temperature_c"]) == (2, 1, 90.0)
    assert [c["index"] for c in out["chips"]] == [1] and out["chips"][0]["status"] == "unhealthy"


@pytest.mark.parametrize("change", ["no rollups", "count disagrees", "no usable count", "second target",
                                    "info from another target", "impossible reading"])
def test_a_host_whose_count_the_rank_does_not_explain_has_every_chip_read(change: str) -> None:
    fake = RulesPrometheus(rollups=change != "no rollups")
    agent = {"host": "hot", "job": "fleet-agent"}
    if change == "count disagrees":  # two chips not healthy by its count; the rank names one
        fake.hot["fleet_node_chips_healthy"] = [(agent, 0.0)]
    elif change == "no usable count":
        fake.hot["fleet_node_chips_healthy"] = [(agent, float("nan"))]
    elif change == "second target":  # the rank may come from either: none is trusted to name them all
        fake.hot["fleet_node_chips_healthy"] = [(agent, 1.0), ({**agent, "job": "other"}, 1.0)]
    elif change == "info from another target":
        fake.hot["fleet_agent_info"] = [({**agent, "job": "other", "version": "0.1.0"}, 1.0)]
    elif change == "impossible reading":  # the rollups fold it; reading every chip leaves it out
        fake.hot["fleet_health_check_failing == 1"].append(
            ({"host": "hot", "chip": "1", "check": "invalid_reading", "severity": "warning", **agent}, 1.0))
    row, _ = hot_row(fake)
    detail = [q for q in fake.queries if "host=~" in q]
    assert detail[:5] == fault_queries(["hot"]) and sorted(detail[5:]) == sorted(detail_queries(["hot"]))
    assert not isinstance(row, SummaryRow) and [c.index for c in row.chips] == [0, 1]
    assert row.status is HostHealth.UNHEALTHY


def test_a_healthy_chip_with_a_failing_check_is_listed_as_healthy_with_its_readings() -> None:
    fake = RulesPrometheus()
    fake.hot["fleet_health_check_failing == 1"].append(
        ({"host": "hot", "chip": "0", "check": "thermal_margin", "severity": "info", "job": "fleet-agent"},
         1.0))
    row, report = hot_row(fake)
    assert chip_queries({0: ["hot"], 1: ["hot"]}) == [q for q in fake.queries if "chip=" in q]
    assert [(c.index, c.status, c.temperature_c, c.power_w) for c in row.chips] == [
        (0, Status.HEALTHY, 40.0, 300.0), (1, Status.UNHEALTHY, 90.0, 100.0)]
    assert [(p.check, p.chip) for p in row.problems] == [("xid", 1), ("thermal_margin", 0)]
    # Counted once: listed, and among the rollup's healthy chips (beside the ten clean hosts' 20).
    assert report.summary().chips == {"healthy": 21, "degraded": 0, "unknown": 0, "unhealthy": 1}


def test_the_inventory_holds_a_faults_only_host_to_its_chip_count_not_to_the_chips_listed() -> None:
    # One chip listed of the two it has: the inventory's 2 are all there, no chip_count problem.
    row, _ = hot_row(RulesPrometheus(), host("hot", 1, expected=2), *HOSTS[:10])
    assert isinstance(row, SummaryRow) and not any(p.check == "chip_count" for p in row.problems)
    # Four expected, two present: said as reading every chip would.
    four, _ = hot_row(RulesPrometheus(), host("hot", 1, expected=4), *HOSTS[:10])
    every, _ = hot_row(RulesPrometheus(rollups=False), host("hot", 1, expected=4), *HOSTS[:10])
    missing = [p for p in four.problems if p.check == "chip_count"]
    assert [p.message for p in missing] == ["2 of 4 chips present (inventory)"] and seen(four) == seen(every)


def test_a_listed_chip_the_controller_judges_not_healthy_is_not_counted_twice() -> None:
    # Listed for an info check, healthy by its rank and in the rollup's count; its reading impossible
    # (the agent's own check off): the verdict makes it degraded, and the fleet's counts say so once.
    fake = RulesPrometheus()
    fake.hot["fleet_health_check_failing == 1"].append(
        ({"host": "hot", "chip": "0", "check": "thermal_margin", "severity": "info", "job": "fleet-agent"},
         1.0))
    fake.hot["fleet_chip_temperature_celsius"][0] = ({"host": "hot", "chip": "0"}, 500.0)
    row, report = hot_row(fake)
    assert [(c.index, c.status) for c in row.chips] == [(0, Status.DEGRADED), (1, Status.UNHEALTHY)]
    assert row.chips_ok == 0 and row.chips_present == 2
    assert report.summary().chips == {"healthy": 20, "degraded": 1, "unknown": 0, "unhealthy": 1}


def test_hosts_the_rules_name_as_without_rollups_are_read_chip_by_chip_at_once() -> None:
    fake = RulesPrometheus(rollups=False)
    summaries = fake.series["fleetctl:host_summary"]
    fake.series["fleetctl:host_summary"] = [
        (lab, v) for lab, v in summaries if not (lab["host"] == "hot" and lab["summary"] == "chips_healthy")]
    row, _ = hot_row(fake)
    # No faults round first (its rollups selector, its rank above 0): every chip at once.
    assert not any("__name__" in q or q.endswith(" > 0") for q in fake.queries)
    assert sorted(q for q in fake.queries if "host=~" in q) == sorted(detail_queries(["hot"]))
    assert [c.index for c in row.chips] == [0, 1] and row.status is HostHealth.UNHEALTHY


def test_chips_are_asked_one_selector_per_chip_index_with_their_hosts() -> None:
    gauges = ('__name__=~"fleet_chip_temperature_celsius|fleet_chip_utilization_ratio|fleet_chip_memory_used_'
              'bytes|fleet_chip_memory_total_bytes|fleet_chip_power_watts|fleet_chip_stale"')
    assert chip_queries({3: ["b", "a.x"], 1: ["c"]}) == [
        f'{{{gauges},chip="1",host=~"c"}}', f'{{{gauges},chip="3",host=~"a\\\\.x|b"}}']


def test_a_small_selection_still_reads_every_chip() -> None:
    fake = RulesPrometheus()
    report = prometheus_report(HOSTS, fake, now=NOW, detail_all=True)
    hot = next(r for r in report.hosts if r.name == "hot")
    assert not isinstance(hot, SummaryRow) and [c.index for c in hot.chips] == [0, 1]
    assert not any("chip=" in q or "__name__" in q for q in fake.queries)


def test_a_host_whose_agent_copies_its_faults_is_read_in_the_first_round_alone() -> None:
    fake = RulesPrometheus(copies=True)
    copied, copied_report = hot_row(fake)
    asked, asked_report = hot_row(RulesPrometheus())  # an agent without the copies: its own round
    assert not [q for q in fake.queries if "host=~" in q or "chip=" in q]  # nothing after the first round
    assert isinstance(copied, SummaryRow) and seen(copied) == seen(asked)
    assert copied.chips == asked.chips and [c.index for c in copied.chips] == [1]
    assert (copied.agent_version, copied.max_temperature_c, copied.power_w) == ("0.1.0", 90.0, 400.0)
    assert copied_report.summary() == asked_report.summary()


@pytest.mark.parametrize("change", ["count disagrees", "second target", "impossible reading"])
def test_copies_that_do_not_name_every_fault_are_asked_as_before(change: str) -> None:
    fake, plain = RulesPrometheus(copies=True), RulesPrometheus()
    agent = {"host": "hot", "job": "fleet-agent"}
    for f in (fake, plain):
        if change == "count disagrees":
            f.hot["fleet_node_chips_healthy"] = [(agent, 0.0)]
        elif change == "second target":
            f.hot["fleet_node_chips_healthy"] = [(agent, 1.0), ({**agent, "job": "other"}, 1.0)]
        else:
            invalid = {"host": "hot", "chip": "1", "check": "invalid_reading", "severity": "warning"}
            f.hot["fleet_health_check_failing == 1"].append(({**invalid, **agent}, 1.0))
    row, report = hot_row(fake)
    before, before_report = hot_row(plain)
    # The copies are no shortcut: the faults round, then every chip, as for an agent without them.
    assert [q for q in fake.queries if "host=~" in q] == [q for q in plain.queries if "host=~" in q]
    assert [q for q in fake.queries if "host=~" in q][:5] == fault_queries(["hot"])
    assert seen(row) == seen(before) and row.chips == before.chips and [c.index for c in row.chips] == [0, 1]
    assert report.summary() == before_report.summary()


def test_only_the_hosts_without_copies_are_asked() -> None:
    fake = RulesPrometheus(copies=True)
    fake.hot["fleet_node_status == 1"] = [({"host": "hot", "status": "unhealthy"}, 1.0)]
    c0 = host("c0", 1)  # not clean (drained) and its agent copies nothing: asked alone
    fake.series["fleetctl:host_summary"] = [
        (lab, 1.0 if lab["host"] == "c0" and lab["summary"] == "drained" else v)
        for lab, v in fake.series["fleetctl:host_summary"]]
    prometheus_report([c0, *HOSTS[1:]], fake, now=NOW, detail_all=False, notice=print)
    assert [q for q in fake.queries if "host=~" in q] == fault_queries(["c0"])


def test_a_host_prometheus_cannot_scrape_is_never_asked_for_its_faults() -> None:
    fake = RulesPrometheus()
    fake.series["up"] = [(lab, 0.0 if lab["host"] == "hot" else v) for lab, v in fake.series["up"]]
    row, _ = hot_row(fake)
    assert not [q for q in fake.queries if "host=~" in q or "chip=" in q]
    assert row.status is HostHealth.UNREACHABLE and row.reason_kind == "scrape_failed"


def test_copies_from_one_of_two_agent_targets_are_no_shortcut() -> None:
    # Two targets scrape the hot host's agent; only one copies its faults (the other's agent sees it
    # clean): the copies cannot speak for both, so it is asked as any host with two targets is.
    fake, plain = RulesPrometheus(copies=True), RulesPrometheus()
    for f in (fake, plain):
        f.series["up"].append(({"host": "hot", "job": "fleet-agent", "instance": "second:9400"}, 1.0))
    row, _ = hot_row(fake)
    before, _ = hot_row(plain)
    assert [q for q in fake.queries if "host=~" in q][:5] == fault_queries(["hot"])
    assert seen(row) == seen(before)


def test_fleetctl_asks_for_every_series_the_agent_copies_and_only_those() -> None:
    from fleet_agent import metrics

    from fleetctl.promsource import FAULT_METRICS

    copied = metrics._FAULT_NODE | metrics._FAULT_CHIP | {"fleet_node_status", "fleet_chip_status_rank"}
    assert set(FAULT_METRICS) == copied and len(FAULT_METRICS) == len(copied)


def test_a_leftover_status_copy_beside_the_current_one_sends_the_host_to_the_faults_round() -> None:
    # A federating Prometheus keeps a vanished series for its lookback: unhealthy then, degraded now.
    fake = RulesPrometheus(copies=True)
    fake.hot["fleet_node_status == 1"] = [({"host": "hot", "status": "degraded"}, 1.0)]
    real_detail = fake.fault_detail
    fake.fault_detail = lambda: [*real_detail(),  # type: ignore[method-assign]
                                 ({"host": "hot", "status": "unhealthy", "metric": "fleet_node_status"}, 1.0)]
    plain = RulesPrometheus()
    plain.hot["fleet_node_status == 1"] = [({"host": "hot", "status": "degraded"}, 1.0)]
    row, _ = hot_row(fake)
    assert [q for q in fake.queries if "host=~" in q][:5] == fault_queries(["hot"])
    # What the faults round reads now (degraded), not the leftover copy's unhealthy.
    assert row.status is HostHealth.DEGRADED and seen(row) == seen(hot_row(plain)[0])


def test_names_in_an_answer_are_never_parsed_again_as_queries() -> None:
    from test_promsource import typed

    from fleetctl.promsource import FAULT_QUERIES, _Gathered

    g = _Gathered({"h"})
    # A hostile or broken server: a copy that claims another series, a name that looks like a query.
    g.add(FAULT_QUERIES[0], typed([({"host": "h", "metric": "fleet_fault_detail{x}"}, 1.0),
                                   ({"host": "h", "metric": "fleet_chip_status_rank junk"}, 1.0)]))
    g.add('{__name__=~"a|b",host=~"h"}', typed([({"__name__": "{x}", "host": "h"}, 1.0),
                                                ({"__name__": "fleet_fault_detail", "host": "h"}, 1.0)]))
    assert all(d.status is None and not d.chips for d in g.data.values())


def test_a_host_its_agent_says_is_not_clean_is_read_though_the_rules_last_saw_it_clean() -> None:
    # The rules ran before the host failed: their record says clean, its agent's copies (scraped
    # since) say unhealthy. The copies win: the host is read, not shown healthy until the next rules.
    fake = RulesPrometheus(copies=True)
    fake.series["fleetctl:host_summary"] = [
        s for s in fake.series["fleetctl:host_summary"] if s[0]["host"] != "hot"] + summary("hot")
    fake.series["fleetctl:host_chip_models"].append(
        ({"host": "hot", "kind": "gpu", "vendor": "nvidia", "model": "H100", "version": "0.2.0"}, 2.0))
    assert "hot" in {labels["host"] for labels, _ in fake.records(CLEAN)}
    fresh = RulesPrometheus(copies=False)  # the same rules' records, no copies: the clean row it was
    fresh.series = fake.series
    assert isinstance(stale := hot_row(fresh)[0], SummaryRow) and stale.status is HostHealth.HEALTHY
    row, _ = hot_row(fake)
    assert row.status is HostHealth.UNHEALTHY and [(p.check, p.chip) for p in row.problems] == [("xid", 1)]
    assert [c.index for c in row.chips] == [1]
