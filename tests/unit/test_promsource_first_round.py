"""`health --source prometheus` asks its first round before it reads the inventory (those queries need
none): the report is the same, the time spent reading is not counted against --deadline, an inventory
that fails is still the error and leaves nothing running, and later reports (--watch) ask afresh."""

from __future__ import annotations

import email.utils
import http.server
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_promsource import EMPTY, NOW, Responder, RulesPrometheus, host, reply, rules_report
from test_promsource import serve as serve  # the fixture, by its name (re-exported: no F811)

import fleetctl.promsource as promsource
from fleetctl.commands.health import PrometheusAccess
from fleetctl.errors import UsageError
from fleetctl.promsource import (
    RULE_QUERIES,
    RULES_INFO,
    FirstRound,
    HttpPrometheus,
    PrometheusError,
    prometheus_report,
)
from fleetctl.report import FleetReport

LAB = Path(__file__).parents[2] / "inventory" / "lab" / "hosts.yml"


def _rows_as_dicts(rows: dict[str, Any]) -> list[Any]:
    report = FleetReport(generated_at=NOW, source="prometheus", hosts=list(rows.values()))
    return sorted(json.loads(report.to_json())["hosts"], key=lambda row: row["name"])


def _threads_back_to(count: int) -> bool:
    for _ in range(200):
        if threading.active_count() <= count:
            return True
        time.sleep(0.02)
    return False


def test_a_round_asked_early_gives_the_same_report_and_is_not_asked_again() -> None:
    fake = RulesPrometheus("4")
    first = FirstRound(fake)
    for _ in range(500):  # its queries go out on their own, before any report is asked for
        if len(fake.queries) == len(RULE_QUERIES):
            break
        time.sleep(0.01)
    assert sorted(fake.queries) == sorted(RULE_QUERIES)
    early = rules_report(fake, first=first)
    assert sorted(q for q in fake.queries if q in RULE_QUERIES) == sorted(RULE_QUERIES)  # asked once
    assert any('{host=~"hot"}' in q for q in fake.queries)  # the detail round still follows
    assert _rows_as_dicts(early) == _rows_as_dicts(rules_report(RulesPrometheus("4")))


def test_the_time_spent_reading_the_inventory_is_not_counted_against_the_deadline(
        serve: Callable[[Responder], str]) -> None:
    def late(h: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(4)  # past the deadline below
        reply(h, EMPTY)

    client = HttpPrometheus(serve(late), timeout_s=10)
    first = FirstRound(client)
    time.sleep(1.0)  # the inventory being read
    entered = time.monotonic()
    with pytest.raises(PrometheusError, match=r"no answer within the 1\.5s deadline"):
        prometheus_report([host("a", 1)], client, deadline_s=1.5, first=first)
    assert 1.4 <= time.monotonic() - entered < 3.5  # the whole 1.5 s from the report on


class _Counting:
    """A Prometheus that answers every query with nothing and counts the rules-info queries."""

    def __init__(self) -> None:
        self.info_asked = 0
        self.asked = threading.Event()

    def __call__(self, h: http.server.BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()
        if urllib.parse.parse_qs(body).get("query") == [RULES_INFO]:
            self.info_asked += 1
            self.asked.set()
        reply(h, EMPTY)


def _asked_while_loading(monkeypatch: pytest.MonkeyPatch, prom: _Counting, wait_s: float) -> list[bool]:
    """Whether Prometheus was asked while the inventory was read (waiting up to ``wait_s`` for it)."""
    import fleetctl.inventory

    real_result = fleetctl.inventory.PendingInventory.result
    seen: list[bool] = []

    def slow_result(*args: Any, **kwargs: Any) -> Any:
        seen.append(prom.asked.wait(wait_s))
        return real_result(*args, **kwargs)

    monkeypatch.setattr(fleetctl.inventory.PendingInventory, "result", slow_result)
    return seen


@pytest.mark.parametrize("cached", [True, False])
def test_health_asks_prometheus_while_the_inventory_is_read_and_watch_asks_afresh(
        serve: Callable[[Responder], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        cached: bool) -> None:
    # Not while Ansible parses it (not cached): the answers would wait decoded for the whole parse, a
    # quarter of a GB at 100,000 hosts. The first report then asks.
    import fleetctl.inventory
    from fleetctl.commands.health import _collector

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path))
    if cached:
        fleetctl.inventory.load_inventory(str(LAB))
    prom = _Counting()
    url = serve(prom)
    seen_while_loading = _asked_while_loading(monkeypatch, prom, 5.0 if cached else 0.5)
    collect, hosts = _collector("all", str(LAB), "prometheus", PrometheusAccess(url), 1.0, 10.0, 8,
                                ask_early=True)
    assert seen_while_loading == [cached] and prom.info_asked == int(cached)
    for asked in (1, 2):  # the early round (or the first report's), then a fresh one (--watch's next)
        report = collect()
        assert prom.info_asked == asked and hosts
        assert {r.name for r in report.hosts} == {h.name for h in hosts}


def test_without_ask_early_nothing_is_asked_before_the_first_report(
        serve: Callable[[Responder], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # remediate takes a lease and opens its database before its first, fresh, observation.
    from fleetctl.commands.health import _collector

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path))
    prom = _Counting()
    collect, _ = _collector("all", str(LAB), "prometheus", PrometheusAccess(serve(prom)), 1.0, 10.0, 8)
    assert not prom.asked.wait(0.5)
    collect()
    assert prom.info_asked == 1


def test_an_inventory_that_fails_is_the_error_and_the_early_round_is_dropped(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    from fleetctl.commands.health import _collector

    def slow(h: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(0.5)
        reply(h, EMPTY)

    url = serve(slow)  # the server's own threads are started before the count
    before = threading.active_count()
    with pytest.raises(UsageError, match=r"nowhere\.yml: inventory not found"):
        _collector("all", str(tmp_path / "nowhere.yml"), "prometheus", PrometheusAccess(url), 1.0, 5.0, 8,
                   ask_early=True)
    assert _threads_back_to(before)  # the round's threads end: closed, not left waiting for work


def test_a_bad_group_by_drops_the_early_round_too(serve: Callable[[Responder], str],
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fleetctl.commands.health import _check_group_by, _collector

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path))
    url = serve(_Counting())
    before = threading.active_count()
    with pytest.raises(UsageError):
        _collector("all", str(LAB), "prometheus", PrometheusAccess(url), 1.0, 5.0, 8, ask_early=True,
                   check=lambda hosts: _check_group_by("no_such_variable_anywhere", hosts))
    assert _threads_back_to(before)


def _over_http(fake: RulesPrometheus, forms: list[dict[str, list[str]]]) -> Responder:
    """``fake``'s answers as Prometheus's query API gives them; every query's form kept in ``forms``."""
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path.startswith("/api/v1/rules"):
            return reply(h, {"status": "error"}, 404)  # no rules API: the rules' own series say enough
        form = urllib.parse.parse_qs(h.rfile.read(int(h.headers.get("Content-Length", "0"))).decode())
        forms.append(form)
        result = [{"metric": {k: v for k, v in msgspec.to_builtins(labels).items() if v is not None},
                   "value": [NOW, repr(value)]} for labels, value in fake.query(form["query"][0])]
        reply(h, {"status": "success", "data": {"resultType": "vector", "result": result}})
    return answer


def test_every_round_of_one_report_reads_one_instant(serve: Callable[[Responder], str]) -> None:
    # Evaluated as each query arrives, a scrape landing between two of them would mix two states in
    # one report (a host's copies half gone, its faults round newer than the round that judged it).
    forms: list[dict[str, list[str]]] = []
    client = HttpPrometheus(serve(_over_http(RulesPrometheus("4"), forms)), timeout_s=10)
    times = []
    for _ in range(2):  # --watch: each report its own instant
        before = time.time()
        rows = rules_report(client)
        assert rows["hot"].status.value == "unhealthy"  # read through all three rounds
        assert any('host=~"hot"' in f["query"][0] for f in forms)
        assert any("chip=" in f["query"][0] for f in forms)
        assert len({len(f.get("time", [])) for f in forms}) == 1  # every query pinned
        (when,) = {f["time"][0] for f in forms}
        assert before - 0.001 <= float(when) <= time.time()
        times.append(when)
        forms.clear()
    assert times[0] != times[1]


def test_without_the_rules_every_query_reads_one_instant_too(serve: Callable[[Responder], str]) -> None:
    forms: list[dict[str, list[str]]] = []
    client = HttpPrometheus(serve(_over_http(RulesPrometheus("4"), forms)), timeout_s=10)
    prometheus_report([host("c1", 1), host("hot", 1)], client, now=NOW, use_rules=False)
    assert len(forms) > 1 and len({f["time"][0] for f in forms}) == 1


@pytest.mark.parametrize(("skew", "said"),
                         [(600.0, r"(599|600)s ahead of"), (-120.0, r"12[01]s behind"), (3.0, None)])
def test_a_server_clock_off_this_machines_is_said_in_one_line(
        serve: Callable[[Responder], str], skew: float, said: str | None) -> None:
    # Ages and the report's instant are this machine's: a server clock minutes off makes hosts look
    # stale or unscraped, so the line names the cause.
    fake = RulesPrometheus("4")
    answer = _over_http(fake, [])

    def skewed(h: http.server.BaseHTTPRequestHandler) -> None:
        h.date_time_string = lambda timestamp=None: email.utils.formatdate(time.time() + skew, usegmt=True)
        answer(h)

    notes: list[str] = []
    prometheus_report([host("c1", 1)], HttpPrometheus(serve(skewed), timeout_s=10), now=NOW,
                      notice=notes.append)
    lines = [n for n in notes if "clock" in n]
    if said is None:
        assert lines == []
    else:
        assert len(lines) == 1 and re.search(said, lines[0]) and "NTP" in lines[0]  # Date: whole seconds


class _AskedLongAgo(RulesPrometheus):
    """A client pinned, whatever it is asked, to NOW: the instant its first round was asked, a long time
    before the report is built (a slow inventory script, a loaded machine)."""

    when: float | None = None
    clock_skew_s: float | None = None

    def at(self, when: float) -> _AskedLongAgo:
        self.when = NOW
        return self


def test_samples_are_aged_against_the_instant_they_were_read_at() -> None:
    # Every round reads the fleet as of the pinned instant: aged against a later "now", every sample
    # would look as old as the time the report took to build (here years: all unknown).
    pinned = prometheus_report([host(f"c{i}", 1) for i in range(10)] + [host("hot", 1)], _AskedLongAgo("4"),
                               detail_all=False, notice=print)
    assert pinned.generated_at == NOW
    rows = {r.name: r for r in pinned.hosts}
    assert _rows_as_dicts(rows) == _rows_as_dicts(rules_report(RulesPrometheus("4")))


def test_a_slow_answer_is_not_taken_for_a_clock_behind(
        serve: Callable[[Responder], str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The Date header is stamped as the answer starts; a body that takes long to arrive says nothing
    # about the server's clock.
    monkeypatch.setattr(promsource, "CLOCK_SKEW_MAX_S", 2.0)

    def slow_body(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        body = json.dumps(EMPTY).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.flush()
        time.sleep(3.0)
        h.wfile.write(body)

    client = HttpPrometheus(serve(slow_body), timeout_s=10).at(time.time())
    assert client.query("up") == []
    assert client.clock_skew_s is not None and promsource.clock_skew_line(client.clock_skew_s) == ""


def test_an_http_date_without_a_zone_is_utc_whatever_the_local_zone(
        serve: Callable[[Responder], str], monkeypatch: pytest.MonkeyPatch) -> None:
    def asctime_date(h: http.server.BaseHTTPRequestHandler) -> None:  # RFC 9110 recipients accept it
        h.date_time_string = lambda timestamp=None: time.asctime(time.gmtime())
        reply(h, EMPTY)

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        client = HttpPrometheus(serve(asctime_date), timeout_s=10).at(time.time())
        client.query("up")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert client.clock_skew_s is not None and abs(client.clock_skew_s) < 2.0


SITECUSTOMIZE = """
import os
import fleetctl.inventory as inventory

_parse = inventory._parse_with_ansible


def _recorded(*args, **kwargs):
    with open(os.environ["PARSED_BY"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return _parse(*args, **kwargs)


inventory._parse_with_ansible = _recorded
"""


def test_a_cold_inventory_is_parsed_in_a_child_and_then_the_first_round_asked(
        serve: Callable[[Responder], str], tmp_path: Path) -> None:
    # The fork comes before any thread of the command (after one, fleetctl would parse in-process).
    import os
    import subprocess
    import sys

    prom = _Counting()
    url = serve(prom)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    parsed_by = tmp_path / "parsed-by"
    env = {**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path / "cache"), "PARSED_BY": str(parsed_by),
           "PYTHONPATH": os.pathsep.join([str(hooks), *sys.path])}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "fleetctl"), "health", "-i", str(LAB),
                             "--source", "prometheus", "--prometheus-url", url, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert prom.info_asked >= 1, err
    assert "Traceback" not in err and len(json.loads(out)["hosts"]) == 3, err
    pids = [int(p) for p in parsed_by.read_text().split()]
    assert len(pids) == 1 and pids[0] != proc.pid, "parsed in the command's own process"
    assert list((tmp_path / "cache").glob("inventory-*.json"))  # the child wrote the cache
