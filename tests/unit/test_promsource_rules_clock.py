"""How far the recording rules' summaries are trusted in time: the rule group's interval and last
evaluation (``/api/v1/rules``), and the instant the evaluation saw the data at (the info series)."""

from __future__ import annotations

import http.server
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_promsource import NOW, Responder, RulesPrometheus, host, reply
from test_promsource import serve as serve  # the fixture, by its name (re-exported: no F811)

from fleetctl.promsource import (
    RULES_EVALUATED,
    RULES_GROUP,
    RULES_INFO,
    HttpPrometheus,
    Labels,
    PrometheusError,
    RuleGroup,
    Sample,
    SummaryRow,
    prometheus_report,
    rule_group_from,
    rules_clock,
)
from fleetctl.report import HostHealth, HostRow


def rules_answer(*groups: dict[str, Any]) -> bytes:
    doc = {"status": "success", "data": {"groups": [{"rules": [], **g} for g in groups]}}
    return json.dumps(doc).encode()


def test_the_rule_group_is_read_from_prometheus_and_vmalert_answers() -> None:
    # Prometheus: interval in seconds, lastEvaluation RFC 3339 with nanoseconds.
    prom = rules_answer({"name": "other", "interval": 15, "lastEvaluation": "2027-01-15T08:00:00Z"},
                        {"name": RULES_GROUP, "file": "x.yml", "interval": 60,
                         "lastEvaluation": "2027-01-15T08:00:00.123456789Z", "evaluationTime": 0.5})
    assert rule_group_from(prom, RULES_GROUP) == RuleGroup(60.0, 1_800_000_000.123457, 0.5)
    # Never evaluated yet (Prometheus's zero time), and replicated rulers: the latest evaluation wins.
    assert rule_group_from(rules_answer({"name": RULES_GROUP, "interval": 30,
                                         "lastEvaluation": "0001-01-01T00:00:00Z"}), RULES_GROUP) \
        == RuleGroup(30.0, None)
    two = rules_answer({"name": RULES_GROUP, "interval": 30, "lastEvaluation": "2027-01-15T08:00:00Z"},
                       {"name": RULES_GROUP, "interval": 30, "lastEvaluation": "2027-01-15T08:00:20+00:00"})
    assert rule_group_from(two, RULES_GROUP) == RuleGroup(30.0, 1_800_000_020.0)
    # VictoriaMetrics without vmalert: an empty list; anything unreadable says nothing.
    assert rule_group_from(rules_answer(), RULES_GROUP) is None
    assert rule_group_from(b"<html>", RULES_GROUP) is None
    assert rule_group_from(b'{"status": "error"}', RULES_GROUP) is None


class ClockedRules(RulesPrometheus):
    """The rules' series with every clean summary sampled ``sample_age`` s before now, the info's value
    ``seen_at`` (rules version 2) and the group as the rules API (``group``) or only the info's
    timestamp (``stamped``) tells it."""

    def __init__(self, sample_age: float, *, group: RuleGroup | None = None, stamped: float | None = None,
                 seen_at: float | None = None, version: str = "2") -> None:
        super().__init__()
        self.series["fleetctl:host_summary"] = [
            (labels, NOW - sample_age if labels["summary"] == "sample_timestamp_seconds" else value)
            for labels, value in self.series["fleetctl:host_summary"]]
        self.series[RULES_INFO] = [({"version": version}, NOW if seen_at is None else seen_at)]
        if stamped is not None:
            self.series[RULES_EVALUATED] = [({"version": version}, stamped)]
        self.group = group

    def rule_group(self, name: str) -> RuleGroup | None:
        assert name == RULES_GROUP
        return self.group


def report(fake: ClockedRules) -> tuple[dict[str, HostRow], list[str]]:
    notes: list[str] = []
    hosts = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]
    out = prometheus_report(hosts, fake, now=NOW, detail_all=False, notice=notes.append)
    return {r.name: r for r in out.hosts}, notes


def detail_hosts(fake: ClockedRules) -> set[str]:
    asked = [q for q in fake.queries if q.startswith('fleet_node_status{host=~"')]
    return {n for q in asked for n in q.split('"')[1].split("|")}


def test_a_sixty_second_evaluation_interval_keeps_the_summary_rows() -> None:
    # Evaluated 50 s ago every 60 s; the samples were 5 s old then, 55 s old now.
    fake = ClockedRules(55, group=RuleGroup(60.0, NOW - 50), seen_at=NOW - 50)
    rows, notes = report(fake)
    assert notes == [] and detail_hosts(fake) == {"hot"}
    c1 = rows["c1"]
    assert isinstance(c1, SummaryRow) and c1.status is HostHealth.HEALTHY and c1.age_s == 55.0


def test_without_an_evaluation_time_the_samples_must_be_fresh_now() -> None:
    # The same summaries with nothing saying when they were computed: 55 s is too old, as before.
    fake = ClockedRules(55)
    fake.series[RULES_INFO] = [({"version": "1"}, 1.0)]
    rows, notes = report(fake)
    assert notes == [] and detail_hosts(fake) == {f"c{i}" for i in range(10)} | {"hot"}
    assert not isinstance(rows["c1"], SummaryRow)


def test_a_sample_already_stale_when_the_rules_ran_goes_to_the_chip_detail() -> None:
    # Evaluated 10 s ago; the samples were 40 s old then: the verdict must judge them.
    fake = ClockedRules(50, group=RuleGroup(60.0, NOW - 10), seen_at=NOW - 10)
    rows, _ = report(fake)
    assert "c1" in detail_hosts(fake) and not isinstance(rows["c1"], SummaryRow)


def test_rules_that_stopped_being_evaluated_are_said_once_and_every_host_is_read_chip_by_chip() -> None:
    fake = ClockedRules(3, group=RuleGroup(60.0, NOW - 200), seen_at=NOW - 200)
    rows, notes = report(fake)
    assert notes == ["the fleetctl-report rules were last evaluated 200s ago (every 60s): reading every "
                     "selected host chip by chip"]
    assert detail_hosts(fake) == {f"c{i}" for i in range(10)} | {"hot"}
    assert not any(isinstance(r, SummaryRow) for r in rows.values())


def test_a_long_evaluation_widens_the_window() -> None:
    # 30,000 hosts on two loaded cores: the last evaluation took 46 s, the one running now over 110 s;
    # 171 s after the last start its result has not landed yet. The rules are slow, not stopped.
    fake = ClockedRules(174, group=RuleGroup(60.0, NOW - 171, 46.0), seen_at=NOW - 171)
    rows, notes = report(fake)
    assert notes == [] and isinstance(rows["c1"], SummaryRow)
    # Past two intervals, three evaluation times and 5 s (263 s here), they have stopped.
    stopped = ClockedRules(3, group=RuleGroup(60.0, NOW - 264, 46.0), seen_at=NOW - 264)
    _, notes = report(stopped)
    assert notes and notes[0].startswith("the fleetctl-report rules were last evaluated 264s ago")


def test_victoriametrics_the_data_time_and_the_info_timestamp_stand_in_for_the_rules_api() -> None:
    # vmalert's evaluation 5 s ago saw the data as of 30 s before it (VictoriaMetrics's latency
    # offset): samples 37 s old now were 2 s old then. No rules API on the query server.
    fake = ClockedRules(37, stamped=NOW - 5, seen_at=NOW - 35)
    rows, notes = report(fake)
    assert notes == [] and detail_hosts(fake) == {"hot"} and isinstance(rows["c1"], SummaryRow)
    # With no interval known, 30 s is assumed: an evaluation 70 s old counts as stopped.
    late = ClockedRules(3, stamped=NOW - 70, seen_at=NOW - 100)
    _, notes = report(late)
    assert notes == ["the fleetctl-report rules were last evaluated 70s ago (no interval known, 30s "
                     "assumed): reading every selected host chip by chip"]


def test_rules_clock_ignores_an_implausible_data_time() -> None:
    answers = {RULES_INFO: [(Labels(version="2"), 5.0)], RULES_EVALUATED: [(Labels(), NOW - 4)]}
    assert rules_clock(answers, None, NOW).seen_at == NOW - 4  # 5.0 is no time: the evaluation's is used
    future = {RULES_INFO: [(Labels(version="2"), NOW + 600)], RULES_EVALUATED: [(Labels(), NOW - 4)]}
    assert rules_clock(future, None, NOW).seen_at == NOW - 4
    assert rules_clock({}, None, NOW).seen_at == NOW and rules_clock({}, None, NOW).current


def test_http_client_sends_nocache_and_reads_the_rules_api(serve: Callable[[Responder], str]) -> None:
    seen: list[tuple[str, str]] = []

    def server(h: http.server.BaseHTTPRequestHandler) -> None:
        form = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()
        seen.append((h.command, h.path + form))
        if h.path.startswith("/api/v1/rules"):
            reply(h, json.loads(rules_answer({"name": RULES_GROUP, "interval": 60,
                                              "lastEvaluation": "2027-01-15T08:00:00Z"})))
        else:
            reply(h, {"status": "success", "data": {"resultType": "vector", "result": []}})

    client = HttpPrometheus(serve(server), timeout_s=2)
    assert client.query("up") == []
    assert client.rule_group(RULES_GROUP) == RuleGroup(60.0, 1_800_000_000.0)
    assert client.rule_group("absent") is None
    assert seen[0][0] == "POST" and "nocache=1" in seen[0][1]  # VictoriaMetrics: no latency offset
    assert seen[1] == ("GET", "/api/v1/rules?type=record")


def test_http_client_without_a_rules_api_says_nothing(serve: Callable[[Responder], str]) -> None:
    def not_found(h: http.server.BaseHTTPRequestHandler) -> None:
        reply(h, {"status": "error", "error": "not found"}, 404)

    assert HttpPrometheus(serve(not_found), timeout_s=2).rule_group(RULES_GROUP) is None
    assert HttpPrometheus("http://127.0.0.1:1", timeout_s=1).rule_group(RULES_GROUP) is None


class SlowRulesApi(ClockedRules):
    def rule_group(self, name: str) -> RuleGroup | None:
        time.sleep(12.0)  # a ruler behind a proxy that does not answer
        return RuleGroup(60.0, NOW)


def test_a_slow_rules_api_costs_a_moment_not_the_deadline() -> None:
    fake = SlowRulesApi(3, seen_at=NOW)
    started = time.monotonic()
    hosts = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]
    out = prometheus_report(hosts, fake, now=NOW, detail_all=False, deadline_s=10.0, notice=print)
    # The rules API is optional: waited for a moment (RULES_API_WAIT_S), then the report goes on.
    assert time.monotonic() - started < 6.0
    rows = {r.name: r for r in out.hosts}
    assert rows["hot"].status is HostHealth.UNHEALTHY and isinstance(rows["c1"], SummaryRow)


class SlowFaults(ClockedRules):
    def query(self, promql: str) -> list[Sample]:
        if "host=~" in promql:
            time.sleep(1.5)
        return super().query(promql)


def test_a_later_round_past_the_deadline_names_the_whole_deadline() -> None:
    hosts = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]
    with pytest.raises(PrometheusError) as err:
        prometheus_report(hosts, SlowFaults(3, seen_at=NOW), now=NOW, detail_all=False, deadline_s=1.0,
                          notice=print)
    message = str(err.value)
    assert "no answer within the 1s deadline (--deadline) to query 'fleet_node_status{host=~" in message


def test_rules_that_stopped_have_their_identity_record_asked_afresh() -> None:
    # The record is as old as the rest: a mismatch it kept from then is not taken for today's, and
    # the query itself is asked (its answer: none).
    from fleetctl.promsource import IDENTITY, IDENTITY_RECORD

    fake = ClockedRules(3, group=RuleGroup(60.0, NOW - 600), seen_at=NOW - 600, version="5")
    fake.series[IDENTITY_RECORD] = [({"host": "hot", "hostname": "c2", "job": "fleet-agent"}, 1.0)]
    hosts = [host(f"c{i}", 19000 + i) for i in range(10)] + [host("hot", 19010)]
    out = prometheus_report(hosts, fake, now=NOW, detail_all=False, notice=lambda _line: None)
    assert IDENTITY in fake.queries
    hot = {r.name: r for r in out.hosts}["hot"]
    assert hot.status is HostHealth.UNHEALTHY and hot.reason_kind is None  # its own agent's report
