"""The fleet report from Prometheus answers (a fake query client behind the same interface)."""

from __future__ import annotations

import base64
import gc
import http.server
import itertools
import json
import math
import re
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_agent.schema import Status

from fleetctl.inventory import Host
from fleetctl.promsource import (
    CLEAN,
    FAULT_DETAIL,
    FAULT_QUERIES,
    IDENTITY,
    MODELS,
    NO_RULES,
    QUERIES,
    RANK,
    READINGS,
    RULE_QUERIES,
    RULES_INFO,
    RULES_VERSION,
    SUMMARY_KEYS,
    SUMMARY_QUERIES,
    WITHOUT_ROLLUPS,
    Column,
    HttpPrometheus,
    Labels,
    NamedLabels,
    PrometheusError,
    RuleGroup,
    Sample,
    SummaryRow,
    chip_queries,
    detail_queries,
    fault_queries,
    file_sd_targets,
    parse_vector,
    prometheus_report,
    query_timeout_param,
)
from fleetctl.report import FleetReport, HostHealth, HostRow

NOW = 1_800_000_000.0


def host(name: str, port: int, expected: int | None = 2, groups: tuple[str, ...] = ("gpu_nodes",)) -> Host:
    return Host(
        name=name, address="127.0.0.1", groups=groups, vars={}, agent_port=port, expected_chips=expected
    )


def chip_labels(h: str, chip: int, **extra: str) -> dict[str, str]:
    return {
        "host": h,
        "chip": str(chip),
        "kind": "gpu",
        "model": "NVIDIA H100 80GB HBM3",
        "uuid": f"U{chip}",
        **extra,
    }


class FakePrometheus:
    """Series for: good (2 healthy chips), hot (chip 1 unhealthy, xid), down (up=0), and a stranger."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        series: dict[str, list[tuple[dict[str, str], float]]] = {
            "up": [
                ({"host": "good"}, 1.0),
                ({"host": "hot"}, 1.0),
                ({"host": "down"}, 0.0),
                ({"host": "stranger"}, 1.0),
                ({"job": "prometheus"}, 1.0),
            ],
            "fleet_node_status == 1": [
                ({"host": "good", "status": "healthy"}, 1.0),
                ({"host": "hot", "status": "unhealthy"}, 1.0),
                ({"host": "stranger", "status": "healthy"}, 1.0),
            ],
            "fleet_chip_status == 1": [
                (chip_labels("good", 0, status="healthy"), 1.0),
                (chip_labels("good", 1, status="healthy"), 1.0),
                (chip_labels("hot", 0, status="healthy"), 1.0),
                (chip_labels("hot", 1, status="unhealthy"), 1.0),
            ],
            "fleet_health_check_failing == 1": [
                (chip_labels("hot", 1, check="xid", severity="critical"), 1.0),
                ({"host": "hot", "chip": "node", "check": "collector", "severity": "warning"}, 1.0),
            ],
            "fleet_agent_info": [({"host": "good", "version": "0.1.0"}, 1.0)],
            "fleet_sample_timestamp_seconds": [({"host": "good"}, NOW - 4), ({"host": "hot"}, NOW - 2)],
            "fleet_node_chips_expected": [({"host": "good"}, 2.0)],
            "fleet_chip_temperature_celsius": [(chip_labels("good", 0), 41.0), (chip_labels("hot", 1), 91.0)],
            "fleet_chip_utilization_ratio": [(chip_labels("good", 0), 0.5), (chip_labels("good", 1), 0.7)],
            "fleet_chip_memory_used_bytes": [(chip_labels("good", 0), 2.0**30)],
            "fleet_chip_memory_total_bytes": [(chip_labels("good", 0), 80 * 2.0**30)],
        }
        return typed(series.get(promql, []))


def typed(series: list[tuple[dict[str, str], float]]) -> list[Sample]:
    """Samples as the client decodes them (a series with its metric's name: NamedLabels)."""
    return [(NamedLabels(**{"name" if k == "__name__" else k: v for k, v in labels.items()})
             if "__name__" in labels else Labels(**labels), value) for labels, value in series]


_MATCHER = re.compile(r'(\w+)(=~|=)"((?:[^"\\]|\\.)*)"')


def selector(promql: str) -> tuple[str, dict[str, str], str]:
    """(metric, {label: value}, what follows the braces) of a selector as fleetctl writes them: the
    ``host`` and ``__name__`` regexes are alternations of plain names here."""
    head, brace, rest = promql.partition("{")
    if not brace:
        name, _, tail = promql.partition(" ")
        return name, {}, f" {tail}" if tail else ""
    inside, _, tail = rest.partition("}")
    return head, {k: v for k, _op, v in _MATCHER.findall(inside)}, tail


def test_report_from_prometheus() -> None:
    fake = FakePrometheus()
    hosts = [host("good", 1), host("hot", 2), host("down", 3), host("unknown", 4)]
    report = prometheus_report(hosts, fake, now=NOW)
    # No rules: the per-chip queries, and whose agents the targets scrape.
    assert sorted(fake.queries) == sorted(RULE_QUERIES + QUERIES + (IDENTITY,))
    rows = {h.name: h for h in report.hosts}
    assert set(rows) == {"good", "hot", "down", "unknown"}  # the stranger is not in the selection
    good, hot = rows["good"], rows["hot"]
    assert good.status is HostHealth.HEALTHY and good.agent_version == "0.1.0"
    assert (good.chips_ok, good.chips_total, good.max_temperature_c) == (2, 2, 41.0)
    assert good.mean_utilization_pct == pytest.approx(60.0) and good.age_s == 4.0
    assert good.memory_used_bytes == 2**30
    assert hot.status is HostHealth.UNHEALTHY
    assert [(p.check, p.severity, p.chip) for p in hot.problems] == [
        ("xid", "critical", 1),
        ("collector", "warning", None),
    ]
    assert rows["down"].status is HostHealth.UNREACHABLE and rows["down"].reason_kind == "scrape_failed"
    assert rows["unknown"].status is HostHealth.UNREACHABLE and rows["unknown"].reason_kind == "not_scraped"
    assert report.source == "prometheus" and report.exit_code == 1


def test_parse_vector_errors_name_the_query() -> None:
    doc = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {"host": "a"}, "value": [1, "0.5"]}]},
    }
    assert parse_vector(raw(doc), "q") == [(Labels(host="a"), 0.5)]
    with pytest.raises(PrometheusError, match="q: parse error"):
        parse_vector(raw({"status": "error", "error": "parse error"}), "q")
    with pytest.raises(PrometheusError, match="expected a vector"):
        parse_vector(raw({"status": "success", "data": {"resultType": "matrix", "result": []}}), "q")
    with pytest.raises(PrometheusError, match="q: malformed answer"):
        parse_vector(raw({"status": "success", "data": {"resultType": "vector", "result": [{"x": 1}]}}), "q")
    with pytest.raises(PrometheusError, match="q: malformed value 'many'"):
        parse_vector(raw({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1, "many"]}]}}), "q")
    with pytest.raises(PrometheusError, match="q: the answer is not JSON"):
        parse_vector(b"<html>", "q")
    # Labels fleetctl does not read are skipped while decoding, and special values parse.
    big = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"host": "a", "pci_bus_id": "0000:01:00.0", "__name__": "x"}, "value": [1, "NaN"]}]}}
    [(labels, value)] = parse_vector(raw(big), "q")
    assert labels == Labels(host="a") and value != value
    # A selector of several metrics: each series's name too.
    assert parse_vector(raw(big), "q", named=True)[0][0] == NamedLabels(host="a", name="x")


def raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_bad_url_and_unreachable_server() -> None:
    with pytest.raises(PrometheusError, match="expected http"):
        HttpPrometheus("file:///etc/passwd")
    with pytest.raises(PrometheusError, match="cannot query Prometheus") as err:
        HttpPrometheus("http://127.0.0.1:1", timeout_s=1).query("up")
    assert err.value.exit_code == 2


def test_file_sd_targets() -> None:
    targets = file_sd_targets([host("a", 19001, groups=("gpu_nodes", "rack1")), host("b", 19002, groups=())])
    assert json.loads(json.dumps(targets)) == [
        {"targets": ["127.0.0.1:19001"], "labels": {"host": "a", "group": "gpu_nodes"}},
        {"targets": ["127.0.0.1:19002"], "labels": {"host": "b", "group": "ungrouped"}},
    ]


# --- hostile or odd answers --------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
NAN, INF = float("nan"), float("inf")


class SeriesPrometheus:
    """Answers from a dict: query -> series; absent queries answer an empty vector."""

    def __init__(self, series: dict[str, list[tuple[dict[str, str], float]]]) -> None:
        self.series = series

    def query(self, promql: str) -> list[Sample]:
        return typed(self.series.get(promql, []))


Series = dict[str, list[tuple[dict[str, str], float]]]


def healthy_series(name: str = "a", /, **override: Any) -> Series:
    series: Series = {
        "up": [({"host": name, "job": "fleet-agent", "instance": "127.0.0.1:1"}, 1.0)],
        "fleet_node_status == 1": [({"host": name, "status": "healthy"}, 1.0)],
        "fleet_chip_status == 1": [(chip_labels(name, 0, status="healthy"), 1.0),
                                   (chip_labels(name, 1, status="healthy"), 1.0)],
        "fleet_chip_stale": [(chip_labels(name, 0), 0.0), (chip_labels(name, 1), 0.0)],  # every agent's
        "fleet_sample_timestamp_seconds": [({"host": name}, NOW - 2)],
        "fleet_agent_info": [({"host": name, "version": "0.1.0", "job": "fleet-agent"}, 1.0)],
    }
    return series | override


def one_row(series: Series, name: str = "a") -> HostRow:
    return prometheus_report([host(name, 1)], SeriesPrometheus(series), now=NOW).hosts[0]


def test_nan_and_infinite_samples_are_absent_not_made_up() -> None:
    row = one_row(healthy_series(
        fleet_node_chips_expected=[({"host": "a"}, NAN)],  # int(nan) used to raise
        fleet_chip_memory_used_bytes=[(chip_labels("a", 0), INF)],  # int(inf) used to raise
        fleet_chip_temperature_celsius=[(chip_labels("a", 0), NAN), (chip_labels("a", 1), 50.0)],
    ))
    assert row.status is HostHealth.HEALTHY
    assert row.memory_used_bytes is None and row.max_temperature_c == 50.0
    # A NaN sample time is no sample time (it used to read as age 0: fresh); a NaN `up` is not up.
    stale = one_row(healthy_series(fleet_sample_timestamp_seconds=[({"host": "a"}, NAN)]))
    assert stale.status is HostHealth.UNKNOWN and stale.age_s is None
    assert one_row(healthy_series(up=[({"host": "a"}, NAN)])).reason_kind == "not_scraped"


def test_without_a_sample_time_or_version_nothing_is_made_up() -> None:
    series = healthy_series()
    del series["fleet_sample_timestamp_seconds"], series["fleet_agent_info"]
    row = one_row(series)
    assert row.status is HostHealth.UNKNOWN  # how old the data is cannot be told
    assert (row.age_s, row.sampled_at, row.agent_version) == (None, None, None)
    assert [p.check for p in row.problems] == ["sample_age"] and "unknown" in row.problems[0].message


def test_a_host_scraped_twice_takes_the_worst_series_and_lists_each_problem_once() -> None:
    failing = [(chip_labels("a", 1, check="xid", severity="critical", job=j), 1.0) for j in ("j1", "j2")]
    row = one_row(healthy_series(**{
        "fleet_node_status == 1": [({"host": "a", "status": "unhealthy", "job": "j1"}, 1.0),
                                   ({"host": "a", "status": "healthy", "job": "j2"}, 1.0)],
        "fleet_chip_status == 1": [(chip_labels("a", 0, status="healthy"), 1.0),
                                   (chip_labels("a", 1, status="healthy", job="j2"), 1.0),
                                   (chip_labels("a", 1, status="unhealthy", job="j1"), 1.0)],
        "fleet_health_check_failing == 1": failing,
    }))
    assert row.status is HostHealth.UNHEALTHY and row.chips_ok == 1
    assert [(p.check, p.chip) for p in row.problems] == [("xid", 1)]


def test_only_the_agents_own_up_counts() -> None:
    # node_exporter scrapes the same host label and is up; the agent's own target is down.
    fleet = healthy_series("b")
    fleet["up"] = [({"host": "a", "job": "fleet-agent"}, 0.0), ({"host": "a", "job": "node"}, 1.0),
                   *fleet["up"]]
    rows = prometheus_report([host("a", 1), host("b", 1)], SeriesPrometheus(fleet), now=NOW).hosts
    assert {r.name: r.reason_kind for r in rows} == {"a": "scrape_failed", "b": None}
    # Recognised by the target's address too (as `prometheus targets` writes it), with no agent up.
    alone = {"up": [({"host": "a", "job": "x", "instance": "127.0.0.1:1"}, 0.0),
                    ({"host": "a", "job": "node", "instance": "127.0.0.1:9100"}, 1.0)]}
    assert one_row(alone).reason_kind == "scrape_failed"


def test_a_check_of_a_severity_fleetctl_does_not_know_is_shown_not_dropped() -> None:
    row = one_row(healthy_series(**{"fleet_health_check_failing == 1": [
        ({"host": "a", "chip": "node", "check": "future_check", "severity": "fatal"}, 1.0)]}))
    assert [(p.check, p.severity) for p in row.problems] == [("future_check", "warning")]
    assert "fatal" in row.problems[0].message


def test_the_action_label_becomes_the_problems_action() -> None:
    # One check on one chip with two actions (as the agent writes a pending and a failed row remap):
    # two problems, each with its own action, so remediation plans as it does from the agents.
    row = one_row(healthy_series(**{"fleet_health_check_failing == 1": [
        (chip_labels("a", 1, check="row_remap", severity="critical", action="rma"), 1.0),
        (chip_labels("a", 1, check="row_remap", severity="critical", action="reset_chip"), 1.0),
        ({"host": "a", "chip": "node", "check": "chip_count", "severity": "critical", "action": "reboot"},
         1.0),
    ]}))
    got = sorted((-1 if p.chip is None else p.chip, p.check, p.action) for p in row.problems)
    assert got == [(-1, "chip_count", "reboot"), (1, "row_remap", "reset_chip"), (1, "row_remap", "rma")]


def test_an_action_fleetctl_does_not_know_or_no_action_label_never_fails() -> None:
    row = one_row(healthy_series(**{"fleet_health_check_failing == 1": [
        (chip_labels("a", 0, check="nvlink", severity="critical", action="drain_fabric"), 1.0),  # newer agent
        (chip_labels("a", 0, check="xid", severity="critical", action="Not An Action!"), 1.0),  # malformed
        (chip_labels("a", 1, check="xid", severity="critical"), 1.0),  # older agent: no label
        (chip_labels("a", 1, check="thermal", severity="warning", action=""), 1.0),
    ]}))
    got = sorted((p.chip, p.check, p.action) for p in row.problems)
    # A plausible unknown name stays as sent, as the agent's JSON report decodes it (the policy then
    # reports it); anything else, or no label, reads none.
    assert got == [(0, "nvlink", "drain_fabric"), (0, "xid", "none"), (1, "thermal", "none"),
                   (1, "xid", "none")]


# --- the HTTP client against a real local server -------------------------------------------------------

Responder = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], str]]:
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(responder: Responder) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                responder(self)

            def do_POST(self) -> None:
                responder(self)

            def log_message(self, *args: object) -> None:
                pass

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def reply(handler: http.server.BaseHTTPRequestHandler, doc: object, code: int = 200) -> None:
    body = json.dumps(doc).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(
        serve: Callable[[Responder], str]) -> None:
    seen: list[str | None] = []

    def needs_auth(h: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        if h.headers.get("Authorization") == "Basic " + base64.b64encode(b"admin:s3 cret").decode():
            reply(h, EMPTY)
        else:
            reply(h, {"status": "error", "error": "unauthorized"}, 401)

    base = serve(needs_auth)
    assert HttpPrometheus(base.replace("//", "//admin:s3%20cret@"), timeout_s=2).query("up") == []
    with pytest.raises(PrometheusError) as err:
        HttpPrometheus(base.replace("//", "//admin:wrong@"), timeout_s=2).query("up")
    assert "HTTP 401" in str(err.value) and "wrong" not in str(err.value) and "admin" not in str(err.value)
    with pytest.raises(PrometheusError) as err:
        HttpPrometheus("http://admin:s3cret@127.0.0.1:1", timeout_s=1).query("up")
    assert "cannot query" in str(err.value) and "s3cret" not in str(err.value)
    with pytest.raises(PrometheusError) as err:
        HttpPrometheus("ftp://admin:s3cret@127.0.0.1:1")
    assert "s3cret" not in str(err.value)


def broken(kind: str) -> Responder:
    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if kind == "not http":
            h.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        elif kind == "cut short":
            h.send_response(200)
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.write(b'{"status": "succ')
        elif kind == "data is a list":
            reply(h, {"status": "success", "data": ["x"]})
        elif kind == "result is null":
            reply(h, {"status": "success", "data": {"resultType": "vector", "result": None}})
        elif kind == "bad query":
            reply(h, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}, 400)
        h.close_connection = True

    return respond


@pytest.mark.parametrize(("kind", "message"), [
    ("not http", "broken HTTP answer"),
    ("cut short", "broken HTTP answer"),
    ("data is a list", "malformed answer (Expected `object | null`, got `array`"),
    ("result is null", "malformed answer (Expected `array`, got `null` - at `$.data.result`)"),
    ("bad query", "HTTP 400 Bad Request: parse error at char 3"),
])
def test_a_broken_answer_is_a_one_line_error_naming_the_server(serve: Callable[[Responder], str], kind: str,
                                                                message: str) -> None:
    base = serve(broken(kind))
    with pytest.raises(PrometheusError) as err:
        HttpPrometheus(base, timeout_s=2).query("up")
    assert str(err.value).startswith(base) and message in str(err.value) and "\n" not in str(err.value)


def test_a_port_that_is_not_a_number_is_a_bad_url() -> None:
    with pytest.raises(PrometheusError, match="expected http"):
        HttpPrometheus("http://127.0.0.1:abc")


@pytest.mark.parametrize("url", ["http://admin:s3cr/t@prom:9090", "http://admin:123/456@prom:9090",
                                 "http://admin:a?b@prom:9090", "http://admin:a#b@prom:9090",
                                 "http://[::1", "http://u:p[w@prom:9090"])
def test_a_url_whose_password_would_leak_into_a_message_is_refused_unshown(url: str) -> None:
    # An unencoded '/', '?' or '#' in a password ends the host part early: the rest of it would be
    # printed as the path, or (digits after a colon) the URL taken for another host and port.
    with pytest.raises(PrometheusError) as err:
        HttpPrometheus(url)
    assert "not shown" in str(err.value) and "expected http" in str(err.value)
    assert all(part not in str(err.value) for part in ("admin", "s3cr", "456", "a?b", "a#b", "p[w", "::1"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/pr\u00e4fix", "http://h\n:9", "http://h:9/\x1b[2J"])
def test_a_url_that_is_not_printable_ascii_is_a_one_line_error(url: str) -> None:
    with pytest.raises(PrometheusError, match="in printable ASCII") as err:
        HttpPrometheus(url)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


def test_a_url_read_from_a_file_may_end_in_a_line_break() -> None:
    assert HttpPrometheus("  http://prom:9090/prefix/\n").url == "http://prom:9090/prefix"


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0.0])
def test_a_query_timeout_that_is_no_number_of_seconds_is_a_one_line_error(seconds: float) -> None:
    with pytest.raises(PrometheusError, match=r"--query-timeout .*: expected a number of seconds above 0"):
        HttpPrometheus("http://prom:9090", timeout_s=seconds)


def test_the_query_timeout_is_sent_as_a_duration_every_engine_reads() -> None:
    # Prometheus refuses "2.5s" (bad_data); whole milliseconds are a duration to it, Thanos and VM.
    assert [query_timeout_param(t) for t in (2.5, 25.0, 0.0001, 1e6)] == [
        "2500ms", "25000ms", "1ms", "1000000000ms"]


def test_the_deadline_bounds_a_server_that_trickles_its_answers(serve: Callable[[Responder], str]) -> None:
    def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
        body = json.dumps(EMPTY).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for byte in body:  # each read well within the timeout; the whole answer takes ~6 s
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.1)

    client = HttpPrometheus(serve(trickle), timeout_s=1)
    started = time.monotonic()
    late = r"no answer within the 1s deadline \(--deadline\) to query 'fleetctl:report_rules:info'"
    with pytest.raises(PrometheusError, match=late):
        prometheus_report([host("a", 1)], client, deadline_s=1.0)
    assert time.monotonic() - started < 3.0


class RulesApiPrometheus(SeriesPrometheus):
    """Also asked for the rule group, beside the queries (in a thread of its own), as over HTTP."""

    def rule_group(self, name: str) -> RuleGroup | None:
        return None


@pytest.mark.parametrize("client_type", [SeriesPrometheus, RulesApiPrometheus])
def test_repeated_reports_leave_no_threads_behind(client_type: type[SeriesPrometheus]) -> None:
    # `health --watch --source prometheus` builds a report every round.
    before = threading.active_count()
    for _ in range(20):
        prometheus_report([host("a", 1)], client_type(healthy_series()), now=NOW)
    for _ in range(100):
        if threading.active_count() <= before:
            break
        time.sleep(0.02)
    assert threading.active_count() <= before


def test_impossible_readings_from_prometheus_are_named_and_not_healthy() -> None:
    row = one_row(healthy_series(
        fleet_chip_temperature_celsius=[(chip_labels("a", 0), -40.0), (chip_labels("a", 1), 50.0)],
        fleet_chip_memory_used_bytes=[(chip_labels("a", 1), 1e300)],
    ))
    assert row.status is HostHealth.DEGRADED
    fields = sorted(p.message.split(" = ")[0] for p in row.problems)
    assert fields == ["impossible reading memory_used_bytes", "impossible reading temperature_c"]
    assert row.max_temperature_c == 50.0 and row.memory_used_bytes is None


def test_a_sample_stamped_in_the_future_is_clock_skew_not_a_fresh_sample() -> None:
    row = one_row(healthy_series(fleet_sample_timestamp_seconds=[({"host": "a"}, NOW + 300)]))
    assert row.status is HostHealth.UNKNOWN and row.age_s is None
    assert [p.check for p in row.problems] == ["clock_skew"]


# --- with the fleetctl-report recording rules loaded ---------------------------------------------------


def summary(h: str, **values: float) -> list[tuple[dict[str, str], float]]:
    base = {"node_healthy": 1.0, "sample_timestamp_seconds": NOW - 3, "chips_present": 2.0,
            "chips_healthy": 2.0, "drained": 0.0, "max_temperature_celsius": 44.0,
            "mean_utilization_ratio": 0.25, "memory_used_bytes": 3.0 * 2**30,
            "memory_total_bytes": 160.0 * 2**30} | values
    return [({"host": h, "summary": k}, v) for k, v in base.items()]


class RulesPrometheus(SeriesPrometheus):
    """The rules' series for clean hosts c0..c9 and one hot host; per-chip series for the hot one only
    when asked with its name. The summaries are written as rules up to version 3 record them; rules
    of version 4 on (the info's version label, "5" unless set) answer with their records made from them
    as the shipped rules would (deploy/prometheus/tests/ checks the real rules on the same cases)."""

    def __init__(self, version: str | None = "5", unranked: tuple[str, ...] = (), rollups: bool = True,
                 copies: bool = False, **hot: float) -> None:
        self.unranked = set(unranked)  # hosts whose agents predate fleet_chip_status_rank
        self.copies = copies  # the hot host's agent copies its faults (fleet_fault_detail)
        names = [f"c{i}" for i in range(10)]
        hot_series = healthy_series("hot", **{
            "fleet_chip_status == 1": [(chip_labels("hot", 0, status="healthy"), 1.0),
                                       (chip_labels("hot", 1, status="unhealthy"), 1.0)],
            "fleet_node_status == 1": [({"host": "hot", "status": "unhealthy"}, 1.0)],
            "fleet_health_check_failing == 1": [
                (chip_labels("hot", 1, check="xid", severity="critical", job="fleet-agent"), 1.0)],
            "fleet_chip_temperature_celsius": [(chip_labels("hot", 0), 40.0), (chip_labels("hot", 1), 90.0)],
            "fleet_chip_power_watts": [(chip_labels("hot", 0), 300.0), (chip_labels("hot", 1), 100.0)],
        })
        if rollups:  # the agent's own counts and folds of its chips, as it exports them
            agent = {"host": "hot", "job": "fleet-agent"}
            hot_series |= {"fleet_node_chips_present": [(agent, 2.0)],
                           "fleet_node_chips_healthy": [(agent, 1.0)],
                           "fleet_node_chip_temperature_max_celsius": [(agent, 90.0)],
                           "fleet_node_chip_power_watts": [(agent, 400.0)]}
        self.hot = {k: v for k, v in hot_series.items() if k != "up"}
        summaries = [s for n in names for s in summary(n, **(hot if n == "c0" else {}))]
        present = {labels["host"]: v for labels, v in summaries if labels["summary"] == "chips_present"}
        super().__init__({
            "fleetctl:report_rules:info": [({} if version is None else {"version": version}, 1.0)],
            "up": [({"host": n, "job": "fleet-agent"}, 1.0) for n in [*names, "hot"]],
            "fleetctl:agent_jobs": [({"job": "fleet-agent"}, 1.0)],
            "fleetctl:host_chip_models": [({"host": n, "kind": "gpu", "vendor": "nvidia", "model": "H100",
                                            "version": "0.2.0"}, present[n]) for n in names],
            "fleetctl:host_summary": summaries + summary("hot", node_healthy=0.0, chips_healthy=1.0),
        })
        self.queries: list[str] = []
        # Records answered as given here instead of made from the summaries (cases the summaries cannot
        # say: an agent without the verdict behind a second target, one host twice).
        self.recorded: dict[str, list[tuple[dict[str, str], float]]] = {}

    def version(self) -> int:
        return max(int(labels.get("version", "0")) for labels, _ in self.series[RULES_INFO])

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        name, _, rest = promql.partition("{")
        if name == "fleetctl:host_summary" and rest:  # one summary: {summary="KEY"}
            if self.version() >= 4:
                return []  # not recorded from version 4 on
            key = rest.split('"')[1]
            return typed([(lab, v) for lab, v in self.series.get(name, []) if lab["summary"] == key])
        if name in (CLEAN, WITHOUT_ROLLUPS, *READINGS.values()):
            return typed(self.records(name) if self.version() >= 4 else [])
        if promql.startswith(FAULT_DETAIL):
            metric = selector(promql)[1]["metric"]
            return typed([s for s in self.fault_detail() if s[0]["metric"] == metric] if self.copies else [])
        name, matchers, tail = selector(promql)
        if "host" not in matchers:
            return super().query(promql)
        hosts = matchers["host"].split("|")
        out = []
        for metric in matchers["__name__"].split("|") if not name else [name]:
            for lab, v in self.detail(metric, tail):
                if lab["host"] in hosts and matchers.get("chip", lab.get("chip")) == lab.get("chip"):
                    out.append(({**lab, "__name__": metric} if not name else lab, v))
        return typed(out)

    def detail(self, metric: str, tail: str) -> list[tuple[dict[str, str], float]]:
        """The hot host's series of ``metric``, filtered as ``tail`` says."""
        if metric != RANK:
            return self.hot.get(metric + tail, [])
        # The one-hot series' status as its rank, one series per chip (`> 0`: those not healthy).
        ranks = [({k: x for k, x in lab.items() if k != "status"}, float(Status(lab["status"]).rank))
                 for lab, v in self.hot.get("fleet_chip_status == 1", [])
                 if v == 1 and lab["host"] not in self.unranked]
        return [(lab, v) for lab, v in ranks if tail != " > 0" or v > 0]

    def fault_detail(self) -> list[tuple[dict[str, str], float]]:
        """The hot host's series as its agent copies them (fleet_agent.metrics; tests/unit/test_metrics.py
        checks the agent): node status and gauges, failing checks, chips' rank above 0, and the
        readings of the chips listed (not healthy, or failing a check)."""
        rank = self.detail(RANK, " > 0")
        checks = self.hot.get("fleet_health_check_failing == 1", [])
        listed = {lab["chip"] for lab, _ in rank} | {lab.get("chip") for lab, _ in checks}
        out = [({**lab, "metric": RANK}, v) for lab, v in rank]
        for key, series in self.hot.items():
            metric = key.split(" ")[0]
            if metric != "fleet_chip_status":  # the one-hot is not copied (the rank is)
                out += [({**lab, "metric": metric}, v) for lab, v in series
                        if not metric.startswith("fleet_chip_") or lab.get("chip") in listed]
        return out

    def records(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Version 4's record ``name`` from the summaries."""
        if name in self.recorded:
            return list(self.recorded[name])
        by_host: dict[str, dict[str, float]] = {}
        for labels, v in self.series["fleetctl:host_summary"]:
            by_host.setdefault(labels["host"], {})[labels["summary"]] = v
        out: list[tuple[dict[str, str], float]] = []
        for h, s in by_host.items():
            if name == CLEAN and s.get("node_healthy") == 1 and s.get("drained") == 0 \
                    and s.get("chips_healthy") == s.get("chips_present") \
                    and s.get("chips_expected", s.get("chips_present")) == s.get("chips_present"):
                expected = "agent" if "chips_expected" in s else "unset"
                out.append(({"host": h, "chips_expected": expected}, s["sample_timestamp_seconds"]))
            elif name == WITHOUT_ROLLUPS and s.get("chips_present", 0) > 0 and "chips_healthy" not in s:
                out.append(({"host": h}, s["chips_present"]))
            for key, record in READINGS.items():
                if name == record and key in s:
                    out.append(({"host": h}, s[key]))
        return out


def rules_report(fake: RulesPrometheus, **kw: Any) -> dict[str, HostRow]:
    hosts = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]
    notes: list[str] = []
    report = prometheus_report(hosts, fake, now=NOW, detail_all=False, notice=notes.append, **kw)
    assert notes == []
    return {r.name: r for r in report.hosts}


def test_with_the_rules_only_hosts_with_a_doubtful_summary_are_read_and_only_their_faults() -> None:
    fake = RulesPrometheus()
    rows = rules_report(fake)
    detail = [q for q in fake.queries if q not in RULE_QUERIES]
    # The clean hosts are never asked; the hot one's node, then its one chip not healthy (chip 1).
    assert detail == fault_queries(["hot"]) + chip_queries({1: ["hot"]})
    hot, c1 = rows["hot"], rows["c1"]
    assert hot.status is HostHealth.UNHEALTHY and [(p.check, p.chip) for p in hot.problems] == [("xid", 1)]
    # Its figures are its own rollups; its chips listed, the one not healthy, with its readings.
    assert isinstance(hot, SummaryRow) and [(c.index, c.status, c.temperature_c) for c in hot.chips] == [
        (1, Status.UNHEALTHY, 90.0)]
    assert (hot.chips_ok, hot.chips_present, hot.chips_total, hot.max_temperature_c, hot.power_w) == (
        1, 2, 2, 90.0, 400.0)
    assert c1.status is HostHealth.HEALTHY and c1.agent_version == "0.2.0" and c1.age_s == 3.0
    assert (c1.chips_ok, c1.chips_total, c1.max_temperature_c) == (2, 2, 44.0)
    assert c1.mean_utilization_pct == pytest.approx(25.0) and c1.memory_used_bytes == 3 * 2**30


def test_the_summaries_are_read_one_query_per_summary_never_all_at_once() -> None:
    # One answer per summary lets Prometheus answer them side by side (issue 20, 10,000 hosts).
    fake = RulesPrometheus("3")
    rows = rules_report(fake)
    assert "fleetctl:host_summary" not in fake.queries
    assert [q for q in fake.queries if q.startswith("fleetctl:host_summary")] == list(SUMMARY_QUERIES)
    assert {q.split('"')[1] for q in SUMMARY_QUERIES} == set(SUMMARY_KEYS)
    # Every summary the rules record arrives: a clean row has all its figures, none made up.
    c2 = rows["c2"]
    assert isinstance(c2, SummaryRow)
    assert set(c2.summary_values) == {labels["summary"] for labels, _ in fake.series["fleetctl:host_summary"]
                                      if labels["host"] == "c2"}
    assert c2.memory_total_bytes == 160 * 2**30 and c2.power_w is None


@pytest.mark.parametrize("version", ["4", "5"])
def test_rules_of_version_4_on_are_read_in_one_round_one_query_per_record(version: str) -> None:
    # 8 series per host instead of 13 (issue 20): the clean hosts in one record, the readings one each.
    fake = RulesPrometheus(version)
    rows = rules_report(fake)
    assert not any(q.startswith("fleetctl:host_summary") for q in fake.queries)  # no second round
    # Version 4 records no agents naming another host: that query itself, after the round.
    assert sorted(q for q in fake.queries if "host=~" not in q) == sorted(
        RULE_QUERIES + ((IDENTITY,) if version == "4" else ()))
    c2 = rows["c2"]
    assert isinstance(c2, SummaryRow) and c2.status is HostHealth.HEALTHY and c2.age_s == 3.0
    # The same figures as the summaries of version 3 give, none made up (no power reading here).
    three = rules_report(RulesPrometheus("3"))["c2"]
    assert isinstance(three, SummaryRow)
    assert c2.summary_values == three.summary_values
    assert (c2.chips_ok, c2.chips_present, c2.chips_total, c2.chips_expected) == (2, 2, 2, 2)
    assert c2.power_w is None and c2.memory_total_bytes == 160 * 2**30 and c2.models == three.models


def test_the_report_is_built_without_cyclic_collection_and_restores_it() -> None:
    # Like direct fan-out: 100,000 decoded summaries stay alive, collection passes would free nothing.
    seen: list[bool] = []

    class Watching(RulesPrometheus):
        def query(self, promql: str) -> list[Sample]:
            seen.append(gc.isenabled())
            return super().query(promql)

    assert gc.isenabled()
    try:
        rules_report(Watching())
        assert seen and not any(seen)  # in the querying threads too
        assert gc.isenabled()
    finally:
        gc.unfreeze()

def test_every_record_of_the_shipped_rules_is_one_fleetctl_reads() -> None:
    rules = yaml.safe_load((REPO / "deploy/prometheus/rules/fleetctl-report.rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"]}
    # One added must be read; the rest of the round is raw series.
    assert recorded == set(RULE_QUERIES) - {"up", f"timestamp({RULES_INFO})", *FAULT_QUERIES}
    info = [r for g in rules["groups"] for r in g["rules"] if r["record"] == RULES_INFO]
    assert info[0]["labels"]["version"] == str(RULES_VERSION)


@pytest.mark.parametrize("version", ["3", "4"])
@pytest.mark.parametrize("doubt", [
    {"sample_timestamp_seconds": NOW - 300},  # stale: the verdict must say so
    {"chips_present": 1.0, "chips_healthy": 1.0},  # a chip missing (the inventory expects 2)
    {"chips_healthy": 1.0},  # a chip not healthy although the node says healthy
    {"drained": 1.0},
    {"node_healthy": 0.0},
])
def test_a_summary_with_any_doubt_sends_the_host_to_the_chip_detail(doubt: dict[str, float],
                                                                     version: str) -> None:
    fake = RulesPrometheus(version, **doubt)
    rows = rules_report(fake)
    assert any('host=~"c0|hot"' in q for q in fake.queries)
    assert not isinstance(rows["c0"], SummaryRow)  # built from per-chip series (here: none -> no_metrics)
    assert rows["c0"].status is not HostHealth.HEALTHY
    assert all(isinstance(rows[f"c{i}"], SummaryRow) for i in range(1, 10))


def test_the_agents_expected_count_shows_on_a_clean_row_only_when_it_has_one() -> None:
    # Version 4 says it with the clean record's label; the inventory's count, where set, comes first.
    fake = RulesPrometheus("4", chips_expected=2.0)  # c0's agent expects its 2 chips; the others unset
    hosts = [host("c0", 1, expected=None), host("c1", 1, expected=None), host("c2", 1, expected=2)]
    rows = {r.name: r for r in prometheus_report(hosts, fake, now=NOW, detail_all=False).hosts}
    assert all(isinstance(r, SummaryRow) for r in rows.values())
    assert (rows["c0"].chips_expected, rows["c1"].chips_expected, rows["c2"].chips_expected) == (2, None, 2)
    # An inventory that expects more chips than the models count: not clean, read chip by chip.
    rows = {r.name: r for r in prometheus_report([host("c1", 1, expected=4)], fake, now=NOW,
                                                 detail_all=False).hosts}
    assert not isinstance(rows["c1"], SummaryRow)
    # An agent that expects other than the chips it has (fewer: one missing; more: a configuration to
    # look at): no clean record, read chip by chip.
    for expected in (3.0, 1.0):
        rows = rules_report(RulesPrometheus("4", chips_expected=expected))
        assert not isinstance(rows["c0"], SummaryRow) and isinstance(rows["c1"], SummaryRow)


@pytest.mark.parametrize("version", ["5", "6"])
def test_an_agent_with_rollups_named_by_the_rules_is_read_faults_first_from_version_6(version: str) -> None:
    # Version 6 names the agents without the verdict, most with the rollups (rules upgraded before the
    # agents): read as any host that is not clean, faults first. Before, the record meant no rollups.
    fake = RulesPrometheus(version)
    fake.recorded[WITHOUT_ROLLUPS] = [({"host": "hot"}, 2.0)]
    report = prometheus_report([host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)], fake, now=NOW,
                               detail_all=False, notice=lambda line: None)
    hot = next(r for r in report.hosts if r.name == "hot")
    asked = [q for q in fake.queries if "host=~" in q]
    assert hot.status is HostHealth.UNHEALTHY and [(p.check, p.chip) for p in hot.problems] == [("xid", 1)]
    if version == "6":
        assert asked == fault_queries(["hot"]) + chip_queries({1: ["hot"]})
        assert isinstance(hot, SummaryRow) and [c.index for c in hot.chips] == [1]
    else:
        assert asked[: len(detail_queries(["hot"]))] == detail_queries(["hot"])
        assert sorted(c.index for c in hot.chips) == [0, 1]


def test_a_host_with_two_clean_records_shows_the_agents_count_in_either_order() -> None:
    # Rules version 6 give a target two clean records while its agent's count is newly configured
    # (the old verdict series not yet stale): the one saying the agent has a count wins.
    fake = RulesPrometheus("6", chips_expected=2.0)  # c0's agent expects its 2 chips
    clean = fake.records(CLEAN)
    twice = clean + [({**lab, "chips_expected": "unset"}, ts) for lab, ts in clean if lab["host"] == "c0"]
    for flip in (False, True):
        fake.recorded[CLEAN] = twice[::-1] if flip else twice
        rows = {r.name: r for r in prometheus_report([host("c0", 1, expected=None)], fake, now=NOW,
                                                     detail_all=False).hosts}
        assert isinstance(rows["c0"], SummaryRow) and rows["c0"].chips_expected == 2, flip


def test_a_clean_record_without_chip_models_is_no_summary_row() -> None:
    # The chips are counted from the models record: without it the count would be made up.
    fake = RulesPrometheus("4")
    models = fake.series["fleetctl:host_chip_models"]
    fake.series["fleetctl:host_chip_models"] = [(lab, v) for lab, v in models if lab["host"] != "c3"]
    rows = rules_report(fake)
    assert not isinstance(rows["c3"], SummaryRow) and isinstance(rows["c4"], SummaryRow)


@pytest.mark.parametrize("version", ["3", "4", "6"])
def test_a_host_whose_agent_predates_the_rollups_is_read_chip_by_chip(version: str) -> None:
    # From rules version 3 on the summaries are the agents' per-host rollups: an older agent's host
    # gets node_healthy, chips_present and its sample time, nothing folded from its chips. Never a
    # clean summary row.
    fake = RulesPrometheus(None)
    rollups = {"chips_healthy", "max_temperature_celsius", "mean_utilization_ratio", "memory_used_bytes",
               "memory_total_bytes", "power_watts"}
    fake.series["fleetctl:host_summary"] = [(lab, v) for lab, v in fake.series["fleetctl:host_summary"]
                                            if not (lab["host"] == "c0" and lab["summary"] in rollups)]
    rows = rules_report(fake)  # rules of no version: nothing said
    assert any('host=~"c0|hot"' in q for q in fake.queries)
    assert not isinstance(rows["c0"], SummaryRow)
    assert all(isinstance(rows[f"c{i}"], SummaryRow) for i in range(1, 10))
    # Under rules that read the rollups, the old agents are named once: slow, not wrong.
    fake.series["fleetctl:report_rules:info"] = [({"version": version}, 1.0)]
    notes: list[str] = []
    hosts = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]
    report = prometheus_report(hosts, fake, now=NOW, detail_all=False, notice=notes.append)
    # (From version 6 on the record names the agents without fleet_node_clean, these among them.)
    said = ("fleet_node_clean: agents older than the fleetctl-report rules (version 6), read without a "
            "clean summary" if version == "6"
            else "fleet_node_chips_healthy: agents from before the per-host rollups, read chip by chip")
    assert notes == [f"1 host(s) (c0) export no {said}; upgrade their fleet-agent"]
    assert not isinstance(next(r for r in report.hosts if r.name == "c0"), SummaryRow)


def test_a_clean_host_with_an_older_agent_behind_another_target_is_read_chip_by_chip() -> None:
    # Rules version 6: the clean record takes the verdict of the targets whose agents give one; a
    # second target whose agent is older gives none, and the rules name its host as without rollups.
    fake = RulesPrometheus("6")
    fake.recorded[WITHOUT_ROLLUPS] = [({"host": "c3"}, 2.0)]
    notes: list[str] = []
    hosts = [host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)]
    report = prometheus_report(hosts, fake, now=NOW, detail_all=False, notice=notes.append)
    rows = {r.name: r for r in report.hosts}
    assert len(notes) == 1 and notes[0].startswith("1 host(s) (c3) export no fleet_node_clean")
    # Its chips asked for (this fake has none of c3's), never its clean summary shown.
    assert any(re.search(r'host=~"[^"]*\bc3\b', q) for q in fake.queries)
    assert not isinstance(rows["c3"], SummaryRow)
    assert all(isinstance(rows[f"c{i}"], SummaryRow) for i in range(10) if i != 3)


def test_a_small_selection_is_read_chip_by_chip_and_missing_rules_are_said_once() -> None:
    fake = RulesPrometheus()
    report = prometheus_report([host("hot", 1), host("c1", 1)], fake, now=NOW, notice=print)
    assert all(not isinstance(r, SummaryRow) for r in report.hosts)
    assert any('host=~"c1|hot"' in q for q in fake.queries)
    notes: list[str] = []
    prometheus_report([host("a", 1)], SeriesPrometheus(healthy_series()), now=NOW, notice=notes.append)
    assert notes == [NO_RULES]


def test_a_host_whose_agent_exports_no_rank_is_read_one_hot_and_only_it() -> None:
    fake = RulesPrometheus(unranked=("hot",), node_healthy=0.0)  # c0's node not healthy: detail too
    rows = rules_report(fake)
    detail = [q for q in fake.queries if q not in RULE_QUERIES]
    # Its chip not healthy by its count, and no rank naming it: every chip read (c0 has no series).
    first = fault_queries(["c0", "hot"])
    assert detail[:len(first)] == first and sorted(detail[len(first):-1]) == sorted(detail_queries(["hot"]))
    assert detail[-1] == 'fleet_chip_status{host=~"hot"} == 1'  # then one-hot for the one without it
    hot = rows["hot"]
    assert hot.status is HostHealth.UNHEALTHY and (hot.chips_ok, hot.chips_total) == (1, 2)
    # From the rank, the same row (its chip not healthy listed), and no one-hot query at all.
    ranked = RulesPrometheus()
    again = rules_report(ranked)["hot"]
    assert not any(q.startswith("fleet_chip_status{") for q in ranked.queries)
    assert (again.status, again.chips_ok, again.chips_total) == (HostHealth.UNHEALTHY, 1, 2)
    assert [(c.index, c.status) for c in again.chips] == [(1, Status.UNHEALTHY)]
    assert [c.status for c in hot.chips] == [Status.HEALTHY, Status.UNHEALTHY]


class DetailPrometheus(SeriesPrometheus):
    """Rules of version 4 and no clean host: each detail query answered from ``series`` by its metric
    and what follows the selector, whatever hosts it names."""

    def query(self, promql: str) -> list[Sample]:
        if promql == RULES_INFO:
            return typed([({"version": "4"}, NOW)])
        name, _, rest = promql.partition("{")
        return super().query(name + rest.split("}", 1)[1] if rest.startswith('host=~"') else promql)


def test_a_rank_reads_as_its_status_and_an_unknown_rank_as_unknown() -> None:
    ranks = [(chip_labels("a", i), float(r)) for i, r in enumerate((0, 1, 2, 3, 7, NAN))]
    fake = DetailPrometheus(healthy_series(**{
        RANK: ranks, "fleet_chip_stale": [(chip_labels("a", i), 0.0) for i in range(6)],
        "fleet_chip_status == 1": [(chip_labels("a", 5, status="degraded"), 1.0)]}))
    row = prometheus_report([host("a", 1, expected=None)], fake, now=NOW, detail_all=True).hosts[0]
    # A NaN rank is no rank: that chip's status comes from the one-hot round.
    assert [c.status for c in row.chips] == [Status.HEALTHY, Status.DEGRADED, Status.UNKNOWN,
                                             Status.UNHEALTHY, Status.UNKNOWN, Status.DEGRADED]


def test_a_host_with_an_old_and_a_new_target_takes_the_worst_of_both() -> None:
    old, new, newer = ({"job": j, "instance": "127.0.0.1:1"} for j in ("old", "new", "newer"))
    ranked = DetailPrometheus(healthy_series(**{
        RANK: [(chip_labels("a", 0, **new), 0.0), (chip_labels("a", 0, **newer), 3.0),
               (chip_labels("a", 1, **new), 0.0), (chip_labels("a", 1, **newer), 0.0)],
        "fleet_chip_stale": [(chip_labels("a", i, **t), 0.0) for i in (0, 1) for t in (new, newer)],
        "fleet_chip_status == 1": []}))
    row = prometheus_report([host("a", 1)], ranked, now=NOW, detail_all=True).hosts[0]
    assert [c.status for c in row.chips] == [Status.UNHEALTHY, Status.HEALTHY]  # two ranks: the worst
    # The old target sends chips and no rank: its one-hot is read too, and its fault counts.
    mixed = DetailPrometheus(healthy_series(**{
        RANK: [(chip_labels("a", i, **new), 0.0) for i in (0, 1)],
        "fleet_chip_stale": [(chip_labels("a", i, **t), 0.0) for i in (0, 1) for t in (old, new)],
        "fleet_chip_status == 1": [(chip_labels("a", 0, status="healthy", **old), 1.0),
                                   (chip_labels("a", 1, status="unhealthy", **old), 1.0)]}))
    row = prometheus_report([host("a", 1)], mixed, now=NOW, detail_all=True).hosts[0]
    assert [c.status for c in row.chips] == [Status.HEALTHY, Status.UNHEALTHY]


def test_detail_queries_escape_names_and_chunk() -> None:
    [first, *_] = detail_queries(["a.b", 'q"x', "c|d"])
    assert first == 'fleet_node_status{host=~"a\\\\.b|c\\\\|d|q\\"x"} == 1'
    many = detail_queries(f"h{i}" for i in range(4500))
    assert len(many) == 3 * (len(QUERIES) - 1)


def test_a_slow_query_is_named_with_the_query_timeout(serve: Callable[[Responder], str]) -> None:
    bodies: list[str] = []

    def slow(h: http.server.BaseHTTPRequestHandler) -> None:
        bodies.append(h.path)
        time.sleep(3.0)
        reply(h, EMPTY)

    client = HttpPrometheus(serve(slow), timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(PrometheusError) as err:
        client.query("fleetctl:host_summary")
    assert time.monotonic() - started < 2.9
    assert str(err.value).endswith("query 'fleetctl:host_summary' took longer than the 0.5s query timeout "
                                   "(--query-timeout)")


def test_prometheus_stopping_a_query_at_its_timeout_is_named_too(serve: Callable[[Responder], str]) -> None:
    def timed_out(h: http.server.BaseHTTPRequestHandler) -> None:
        form = h.rfile.read(int(h.headers["Content-Length"])).decode()
        assert "timeout=7000ms" in form  # the limit travels to Prometheus
        reply(h, {"status": "error", "errorType": "timeout", "error": "query timed out in expression "
                  "evaluation"}, 503)

    with pytest.raises(PrometheusError, match="query 'up' took longer than the 7s query timeout"):
        HttpPrometheus(serve(timed_out), timeout_s=7).query("up")


def test_values_parse_as_numbers_including_the_special_ones_prometheus_writes() -> None:
    doc = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"host": h}, "value": [1, v]} for h, v in
        (("a", "63.5"), ("b", "NaN"), ("c", "-Inf"), ("d", "1e3"))]}}
    values = dict((labels.host, value) for labels, value in parse_vector(raw(doc), "q"))
    assert values["a"] == 63.5 and values["b"] != values["b"] and values["c"] == -math.inf
    assert values["d"] == 1000.0
    # "+Inf" is not a number to the fast decoder: the careful path reads it.
    doc["data"]["result"].append({"metric": {"host": "e"}, "value": [1, "+Inf"]})  # type: ignore[index]
    assert dict((labels.host, value) for labels, value in parse_vector(raw(doc), "q"))["e"] == math.inf


def _summary_answers(hosts: list[str]) -> dict[str, list[Sample]]:
    values = {"node_healthy": 1.0, "sample_timestamp_seconds": NOW - 3, "chips_expected": 8.0,
              "chips_present": 8.0, "chips_healthy": 8.0, "drained": 0.0, "max_temperature_celsius": 61.0,
              "mean_utilization_ratio": 0.5, "memory_used_bytes": 2.0**34, "memory_total_bytes": 2.0**36,
              "power_watts": 2400.0}
    return {query: typed([({"host": h, "summary": key}, values[key] + i) for i, h in enumerate(hosts)])
            for key, query in zip(SUMMARY_KEYS, SUMMARY_QUERIES, strict=True)}


def _table(answers: dict[str, Any], wanted: set[str], version: int) -> Any:
    """A summary table fed ``answers`` one at a time, as they arrive."""
    from fleetctl.promsource import _SummaryTable

    table = _SummaryTable(wanted)
    for query, answer in answers.items():
        assert table.take(query, answer)
    table.finish(version)
    return table


def test_summaries_in_any_order_and_with_gaps_give_the_same_lines() -> None:
    from fleetctl.promsource import _SummaryTable, columns_of

    def table_of(answers: dict[str, list[Sample]]) -> _SummaryTable:
        return _table({q: columns_of(samples) for q, samples in answers.items()}, set(names), 3)

    def line(t: _SummaryTable, name: str) -> dict[str, float]:
        return {k: v for k, v in zip(SUMMARY_KEYS, t.lines[name], strict=True) if math.isfinite(v)}

    names = ["a", "b", "c"]
    aligned = _summary_answers(names)
    table = table_of(aligned)
    assert line(table, "b")["chips_present"] == 9.0 and len(line(table, "b")) == len(SUMMARY_KEYS)
    # One host without one summary and another answer in another order: the same lines.
    ragged = {q: list(samples) for q, samples in aligned.items()}
    ragged[SUMMARY_QUERIES[-1]] = [s for s in ragged[SUMMARY_QUERIES[-1]] if s[0].host != "c"]
    ragged[SUMMARY_QUERIES[0]].reverse()
    other = table_of(ragged)
    assert line(other, "a") == line(table, "a") and line(other, "b") == line(table, "b")
    assert line(other, "c") == {k: v for k, v in line(table, "c").items() if k != SUMMARY_KEYS[-1]}
    # A value no one can use counts as missing either way, never made up.
    for answers in (aligned, ragged):
        answers[SUMMARY_QUERIES[1]] = [(labels, math.nan if labels.host == "a" else v)
                                       for labels, v in answers[SUMMARY_QUERIES[1]]]
        again = table_of(answers)
        assert SUMMARY_KEYS[1] == "sample_timestamp_seconds" and SUMMARY_KEYS[1] not in line(again, "a")
        assert table.clean(host("a", 1, expected=8), NOW) and not again.clean(host("a", 1, expected=8), NOW)
        row = again.row(host("b", 1, expected=None), NOW)
        assert row.chips_expected == 9 and row.summary_values == line(again, "b")


def test_a_summary_answer_decodes_to_hosts_and_values_as_the_full_decoder_reads_it() -> None:
    from fleetctl.promsource import columns_of, parse_values

    doc = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "fleetctl:host_summary", "host": h, "summary": "power_watts"},
         "value": [1, v]} for h, v in (("a", "2400.5"), ("b", "NaN"), ("c", "+Inf"))]}}
    hosts, values = parse_values(raw(doc), "q")
    assert hosts == ["a", "b", "c"] and values[0] == 2400.5 and values[1] != values[1]
    assert values[2] == math.inf  # through the careful path
    del doc["data"]["result"][2]  # type: ignore[attr-defined]
    assert str(parse_values(raw(doc), "q")) == str(columns_of(parse_vector(raw(doc), "q")))
    with pytest.raises(PrometheusError, match="q: malformed value 'many'"):
        parse_values(raw({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"host": "a"}, "value": [1, "many"]}]}}), "q")
    with pytest.raises(PrometheusError, match="q: the answer is not JSON"):
        parse_values(b"<html>", "q")


def test_the_agents_own_up_counts_when_several_jobs_scrape_a_host() -> None:
    from fleetctl.promsource import agent_up

    h = Host(name="h", address="h", groups=(), vars={}, agent_port=1)  # its endpoint: h:1
    assert agent_up(None, set(), h) is None and agent_up([], set(), h) is None
    assert agent_up([("node", "h:9100", 0.0)], set(), h) == 0.0  # nothing else to go by
    both = [("node", "h:9100", 0.0), ("fleet-agent", "h:1", 1.0)]
    assert agent_up(both, set(), h) == 1.0  # its endpoint
    assert agent_up([("node", "h:9100", 1.0), ("agents", "x:2", 0.0)], {"agents"}, h) == 0.0
    assert agent_up([("a", "x:1", 0.0), ("b", "x:2", 1.0)], set(), h) == 1.0  # no telling: any


def test_a_host_twice_in_a_summary_answer_keeps_its_usable_value() -> None:
    # Two replicas' series passed on undeduplicated: a NaN from one never hides the other's value.
    from fleetctl.promsource import columns_of

    answers = {q: columns_of(samples) for q, samples in _summary_answers(["a"]).items()}
    drained = SUMMARY_QUERIES[SUMMARY_KEYS.index("drained")]
    for values in ([1.0, math.nan], [math.nan, 1.0]):
        twice = {q: (hosts * 2, [*vals, *vals]) for q, (hosts, vals) in answers.items()}
        twice[drained] = (["a", "a"], values)
        table = _table(twice, {"a"}, 3)
        assert table.lines["a"][SUMMARY_KEYS.index("drained")] == 1.0
        assert not table.clean(host("a", 1, expected=8), NOW)  # drained: read chip by chip


def test_a_host_twice_in_a_reading_record_keeps_its_usable_value_in_either_order() -> None:
    # Version 4's readings, one record each: the same rule as the summaries above.
    clean = typed([({"host": "a", "chips_expected": "unset"}, NOW - 3),
                   ({"host": "b", "chips_expected": "agent"}, NOW - 4)])
    models = typed([({"host": h, "kind": "gpu", "vendor": "nvidia", "model": "H100"}, 8.0) for h in "ab"])
    temperature = READINGS["max_temperature_celsius"]
    at = SUMMARY_KEYS.index("max_temperature_celsius")
    for names, values in ((["a", "a", "b"], [math.nan, 61.0, 50.0]),
                          (["a", "b", "a"], [61.0, 50.0, math.nan]), (["b", "a"], [50.0, 61.0])):
        table = _table({CLEAN: clean, MODELS: models, temperature: (names, values)}, {"a", "b"}, 4)
        assert table.lines["a"][at] == 61.0 and table.lines["b"][at] == 50.0
        assert table.lines["b"][SUMMARY_KEYS.index("chips_expected")] == 8.0
        assert math.isnan(table.lines["a"][SUMMARY_KEYS.index("chips_expected")])
    nans: Column = (["a", "a"], [math.nan, math.nan])
    only_nan = _table({CLEAN: clean, MODELS: models, temperature: nans}, {"a"}, 4)
    assert math.isnan(only_nan.lines["a"][at]) and set(only_nan.lines) == {"a"}  # b: not wanted


def test_a_version_4_line_has_each_reading_at_its_summary_key_and_no_unusable_value() -> None:
    clean = typed([({"host": "a", "chips_expected": "agent"}, NOW - 3), ({"host": "b"}, NOW - 4)])
    models = typed([({"host": h, "kind": "gpu", "vendor": "nvidia", "model": m}, n)
                    for h, m, n in (("a", "H100", 6.0), ("a", "H200", 2.0), ("b", "H100", 8.0))])
    answers: dict[str, Any] = {CLEAN: clean, MODELS: models}
    for i, record in enumerate(READINGS.values()):  # a's value 10 + i; b's unusable in each but the first
        answers[record] = (["a", "b"], [10.0 + i, 1.0 if i == 0 else (math.inf, -math.inf, math.nan)[i % 3]])
    table = _table(answers, {"a", "b"}, 4)
    a = dict(zip(SUMMARY_KEYS, table.lines["a"], strict=True))
    assert a == {"node_healthy": 1.0, "sample_timestamp_seconds": NOW - 3, "chips_expected": 8.0,
                 "chips_present": 8.0, "chips_healthy": 8.0, "drained": 0.0,
                 **{key: 10.0 + i for i, key in enumerate(READINGS)}}
    b = dict(zip(SUMMARY_KEYS, table.lines["b"], strict=True))
    assert {k for k, v in b.items() if not math.isfinite(v)} == {"chips_expected", *list(READINGS)[1:]}
    assert all(math.isnan(b[k]) for k in list(READINGS)[1:]) and b["max_temperature_celsius"] == 1.0


def test_version_4_answers_give_the_same_table_in_whatever_order_they_arrive() -> None:
    # Folded in as each arrives: the readings and the models may come before the clean record.
    clean = typed([({"host": "a", "chips_expected": "agent"}, NOW - 3), ({"host": "b"}, NOW - 5),
                   ({"host": "old"}, NOW - 4)])
    models = typed([({"host": "a", "kind": "gpu", "vendor": "nvidia", "model": "H100", "version": "0.3.0"},
                     8.0), ({"host": "a", "kind": "gpu", "vendor": "nvidia", "model": "H200"}, 2.0),
                    ({"host": "dirty", "kind": "gpu", "vendor": "nvidia", "model": "H100"}, 8.0)])
    answers: dict[str, Any] = {
        CLEAN: clean, MODELS: models, WITHOUT_ROLLUPS: typed([({"host": "old"}, 8.0)]),
        READINGS["max_temperature_celsius"]: (["dirty", "a", "b"], [90.0, 61.0, 50.0]),
        READINGS["power_watts"]: (["a"], [2400.0]),
    }
    wanted = {"a", "b", "dirty", "old"}
    tables = [_table(dict(order), wanted, 4) for order in itertools.permutations(answers.items())]
    first = tables[0]
    assert set(first.lines) == {"a"}  # b and old: no models (no count); dirty: not clean
    assert first.lines["a"][SUMMARY_KEYS.index("chips_present")] == 10.0
    assert first.lines["a"][SUMMARY_KEYS.index("power_watts")] == 2400.0
    assert first.versions == {"a": "0.3.0"} and first.without_rollups([host("old", 1)]) == ["old"]
    for other in tables[1:]:
        assert str(other.lines) == str(first.lines) and other.models == first.models


@pytest.mark.parametrize("line", [
    (1.0, NOW - 3, 8.0, 8.0, 8.0, 0.0, 61.5, 0.25, 3.0 * 2**30, 160.0 * 2**30, 2400.0),
    (1.0, NOW - 3, math.nan, 8.0, 8.0, 0.0, math.nan, math.inf, math.nan, -math.inf, math.nan),
])
def test_a_summary_rows_chip_figures_at_once_are_its_properties(line: tuple[float, ...]) -> None:
    # The JSON report reads them in one call (100,000 rows); the table through the properties.
    row = SummaryRow.of(line, [], name="a", address="a", port=1, groups=(), status=HostHealth.HEALTHY)
    assert row.chip_figures() == (row.chips_present, row.chips_ok, row.max_temperature_c,
                                  row.mean_utilization_pct, row.memory_used_bytes, row.memory_total_bytes)
    assert json.loads(FleetReport(generated_at=NOW, source="prometheus", hosts=[row]).to_json())["hosts"][0][
        "mean_utilization_pct"] == (25.0 if line[7] == 0.25 else None)


def test_the_rules_agent_jobs_decide_a_clean_hosts_up_when_no_host_needs_detail() -> None:
    # c1 is scraped by the agents' job (down, at an address other than the inventory's) and by a node
    # exporter's (up): the agents' job, known from the rules alone, is the one that counts.
    fake = RulesPrometheus("4")
    fake.series["up"] = [(lab, v) for lab, v in fake.series["up"] if lab["host"] != "c1"] + [
        ({"host": "c1", "job": "fleet-agent", "instance": "10.0.0.1:10400"}, 0.0),
        ({"host": "c1", "job": "node", "instance": "10.0.0.1:9100"}, 1.0)]
    hosts = [host(f"c{i}", 1) for i in range(10)]
    rows = {r.name: r for r in prometheus_report(hosts, fake, now=NOW, detail_all=False).hosts}
    assert not any(q.startswith('fleet_node_status{host=~"') for q in fake.queries)  # no detail round
    assert rows["c1"].reason_kind == "scrape_failed" and isinstance(rows["c2"], SummaryRow)


def test_each_answer_is_handed_over_as_it_arrives_and_a_failure_raised_as_it_failed() -> None:
    from fleetctl.promsource import _query_each

    class Answers:
        def query(self, promql: str) -> list[Sample]:
            if promql == "bad":
                raise PrometheusError("bad: HTTP 400")
            return typed([({"host": promql}, 1.0)])

    got: list[tuple[str, list[Sample]]] = []
    _query_each(Answers(), ["a", "b", "c"], 5.0, lambda q, answer: got.append((q, answer)))
    assert sorted(q for q, _ in got) == ["a", "b", "c"]
    assert all(answer[0][0].host == q for q, answer in got)
    with pytest.raises(PrometheusError, match="bad: HTTP 400"):
        _query_each(Answers(), ["a", "bad"], 5.0, lambda q, answer: None)


def test_a_hosts_models_each_once_with_the_larger_count_in_the_order_first_seen() -> None:
    from fleetctl.promsource import MODELS, Labels

    def m(h: str, model: str, n: float, kind: str = "gpu") -> Sample:
        return Labels(host=h, kind=kind, vendor="nvidia", model=model), n

    answer = [m("a", "H100", 4), m("a", "A100", 4), m("b", "H100", -1), m("a", "H100", 5),
              m("a", "A100", 3), m("a", "H100", math.nan), m("a", "H100", 2, kind="other"), m("z", "H100", 8)]
    table = _table({MODELS: answer}, {"a", "b"}, 4)
    assert table.models == {"a": [("gpu", "nvidia", "H100", 5), ("gpu", "nvidia", "A100", 4),
                                  ("other", "nvidia", "H100", 2)],
                            "b": [("gpu", "nvidia", "H100", 0)]}


def test_replicated_model_answers_count_a_clean_hosts_chips_once() -> None:
    # A Thanos without deduplication passes each replica's models series on: 7 chips twice is not 14
    # (14 >= the inventory's 8 would have hidden the missing chip).
    fake = RulesPrometheus("4", chips_present=7.0, chips_healthy=7.0)  # c0: one chip gone, no agent count
    models = fake.series["fleetctl:host_chip_models"]
    fake.series["fleetctl:host_chip_models"] = models + models  # the replica label is not decoded
    hosts = [host("c0", 1, expected=8), host("c1", 1, expected=2)]
    rows = {r.name: r for r in prometheus_report(hosts, fake, now=NOW, detail_all=False).hosts}
    assert not isinstance(rows["c0"], SummaryRow)  # read chip by chip
    c1 = rows["c1"]
    assert isinstance(c1, SummaryRow) and (c1.chips_present, c1.chips_total) == (2, 2)
    assert c1.models == [("gpu", "nvidia", "H100", 2)]
