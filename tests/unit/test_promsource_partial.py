"""Answers that come with warnings: a query layer (Thanos, a Prometheus with remote read) whose store did
not answer, or a VictoriaMetrics cluster missing a storage node, answers 200 with what it has. fleetctl
says so in one line and in the report's ``warnings``; a host missing from such an ``up`` is not judged
(an error), where it would otherwise be called unreachable."""

from __future__ import annotations

import http.server
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from test_promsource import EMPTY, Responder, host, reply
from test_promsource import serve as serve  # the fixture, by its name (re-exported: no F811)

from fleetctl.promsource import PARTIAL_NOTE, HttpPrometheus, parse_values, parse_vector, prometheus_report

STORE_DOWN = 'remote_read: error sending request: Post "http://store-2.example:10901/api/v1/read": refused'


def _up(*hosts: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "up", "host": h, "job": "fleet", "instance": f"{h}:9400"},
         "value": [1796000000.0, "1"]} for h in hosts]}}


def _serving(up: dict[str, Any], notes: dict[str, Any], until: list[str] | None = None) -> Responder:
    """A Prometheus without the rules: ``up`` as given, every other answer empty; each answer carries
    ``notes`` (top-level fields: warnings, isPartial) while ``until`` is empty (always, without one)."""
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        if not h.path.startswith("/api/v1/query"):
            reply(h, {"status": "error"}, 404)
            return
        form = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()
        doc = dict(up) if "query=up&" in form else dict(EMPTY)
        if not until:
            doc.update(notes)
        reply(h, doc)
    return answer


def _report(url: str, names: tuple[str, ...] = ("a", "b")) -> tuple[Any, list[str]]:
    lines: list[str] = []
    client = HttpPrometheus(url, timeout_s=5)
    report = prometheus_report([host(n, 1) for n in names], client, notice=lines.append)
    return report, [line for line in lines if "recording rules" not in line]


def test_an_answer_with_warnings_is_said_once_and_kept_in_the_report(
        serve: Callable[[Responder], str]) -> None:
    report, lines = _report(serve(_serving(_up("a"), {"warnings": [STORE_DOWN]})))
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "with warnings" in lines[0] and "store-2.example:10901" in lines[0]
    assert "more such queries" in lines[0]
    assert {"query": "up", "warning": STORE_DOWN} in report.warnings
    doc = json.loads(report.to_json())
    assert doc["warnings"] == report.warnings
    rows = {h.name: h for h in report.hosts}
    # a: in `up`, no series behind it (this server has none): as without warnings. b: not in the
    # partial `up`, so not judged: an error of its own kind, never "unreachable".
    assert rows["a"].reason_kind == "no_metrics"
    assert (rows["b"].status.value, rows["b"].reason_kind) == ("error", "prometheus_partial")
    assert "not judged" in (rows["b"].reason or "")


def test_without_warnings_a_host_missing_from_up_is_unreachable_and_nothing_is_said(
        serve: Callable[[Responder], str]) -> None:
    report, lines = _report(serve(_serving(_up("a"), {})))
    assert lines == [] and report.warnings == []
    b = next(h for h in report.hosts if h.name == "b")
    assert (b.status.value, b.reason_kind) == ("unreachable", "not_scraped")


def test_a_warning_on_another_query_leaves_a_host_missing_from_up_unreachable(
        serve: Callable[[Responder], str]) -> None:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        form = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()
        if not h.path.startswith("/api/v1/query"):
            reply(h, {"status": "error"}, 404)
        elif "query=up&" in form:
            reply(h, _up("a"))
        else:
            reply(h, {**EMPTY, "warnings": ["store 2 timed out\nsecond line"]})

    report, lines = _report(serve(answer))
    assert len(lines) == 1 and "\n" not in lines[0] and "store 2 timed out second line" in lines[0]
    assert "up" not in {w["query"] for w in report.warnings}
    b = next(h for h in report.hosts if h.name == "b")
    assert b.reason_kind == "not_scraped"


def test_victoriametrics_is_partial_is_a_warning(serve: Callable[[Responder], str]) -> None:
    report, lines = _report(serve(_serving(_up("a"), {"isPartial": True})))
    assert len(lines) == 1 and PARTIAL_NOTE in lines[0]
    assert {"query": "up", "warning": PARTIAL_NOTE} in report.warnings
    # A complete answer from a cluster says isPartial false: nothing.
    report, lines = _report(serve(_serving(_up("a", "b"), {"isPartial": False})))
    assert lines == [] and report.warnings == []


def test_each_report_has_its_own_warnings(serve: Callable[[Responder], str]) -> None:
    back: list[str] = []
    client = HttpPrometheus(serve(_serving(_up("a"), {"warnings": [STORE_DOWN]}, back)), timeout_s=5)
    first = prometheus_report([host("a", 1), host("b", 1)], client, notice=lambda line: None)
    back.append("the store is back")  # from now on, answers without warnings
    second = prometheus_report([host("a", 1), host("b", 1)], client, notice=lambda line: None)
    assert first.warnings and second.warnings == []
    assert next(h for h in second.hosts if h.name == "b").reason_kind == "not_scraped"


def test_a_report_lists_each_warning_once_and_at_most_fifty(serve: Callable[[Responder], str]) -> None:
    many = [f"store {i} did not answer" for i in range(80)]
    report, lines = _report(serve(_serving(_up("a"), {"warnings": [*many, *many]})))
    assert len(lines) == 1
    assert len(report.warnings) == 50 and len({w["warning"] for w in report.warnings}) == 50


V = b'"data":{"resultType":"vector","result":[{"metric":{"host":"a","check":"warnings"},"value":[1,"1"]}]'


@pytest.mark.parametrize(("raw", "said"), [
    (b'{"status":"success",' + V + b'}}', []),  # a label value that reads "warnings" is no warning
    (b'{"status":"success",' + V + b'},"warnings":["w1","w2"]}', ["w1", "w2"]),
    (b'{"status":"success",' + V + b',"warnings":["inside"]}}', ["inside"]),
    (b'{"status":"success","isPartial": true,' + V + b'}}', [PARTIAL_NOTE]),
    (b'{"status":"success","isPartial":false,' + V + b'}}', []),
    # A value only the strict decoder reads: its warnings are read there.
    (b'{"status":"success","warnings":["w3"],' + V.replace(b'"1"]', b'"+Inf"]') + b'}}', ["w3"]),
])
def test_the_decoders_read_an_answers_warnings_beside_its_series(raw: bytes, said: list[str]) -> None:
    for read in (lambda notes: parse_vector(raw, "q", notes=notes),
                 lambda notes: parse_vector(raw, "q", named=True, notes=notes),
                 lambda notes: parse_values(raw, "q", notes=notes)):
        notes: list[str] = []
        assert read(notes)  # the series too
        assert notes == said


def test_a_warning_on_a_reading_decoded_to_columns_is_kept_too(serve: Callable[[Responder], str]) -> None:
    # The per-host readings are decoded to columns (query_values), not samples: their warnings count.
    from fleetctl.promsource import READINGS

    reading = next(iter(READINGS.values()))

    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        form = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()
        if not h.path.startswith("/api/v1/query"):
            reply(h, {"status": "error"}, 404)
            return
        warned = urllib.parse.parse_qs(form)["query"] == [reading]
        reply(h, {**(_up("a", "b") if "query=up&" in form else EMPTY),
                  **({"warnings": ["store 3 timed out"]} if warned else {})})

    client = HttpPrometheus(serve(answer), timeout_s=5)
    values = client.query_values(reading)
    assert values == ([], []) and client.warnings == [(reading, "store 3 timed out")]
    report, lines = _report(serve(answer))
    assert report.warnings == [{"query": reading, "warning": "store 3 timed out"}] and len(lines) == 1
