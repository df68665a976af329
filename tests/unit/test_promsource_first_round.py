"""`health --source prometheus` asks its first round before it reads the inventory (those queries need
none): the report is the same, the time spent reading is not counted against --deadline, an inventory
that fails is still the error and leaves nothing running, and later reports (--watch) ask afresh."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_promsource import EMPTY, NOW, Responder, RulesPrometheus, host, reply, rules_report
from test_promsource import serve as serve  # the fixture, by its name (re-exported: no F811)

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


def test_health_asks_prometheus_while_the_inventory_is_read_and_watch_asks_afresh(
        serve: Callable[[Responder], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fleetctl.inventory
    from fleetctl.commands.health import _collector

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path))
    prom = _Counting()
    url = serve(prom)
    real_load = fleetctl.inventory.load_inventory
    seen_while_loading: list[bool] = []

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        seen_while_loading.append(prom.asked.wait(5.0))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(fleetctl.inventory, "load_inventory", slow_load)
    collect, hosts = _collector("all", str(LAB), "prometheus", url, 1.0, 10.0, 8, ask_early=True)
    assert seen_while_loading == [True] and prom.info_asked == 1
    for asked in (1, 2):  # the early round, then a fresh one (--watch's next report)
        report = collect()
        assert prom.info_asked == asked and hosts
        assert {r.name for r in report.hosts} == {h.name for h in hosts}


def test_without_ask_early_nothing_is_asked_before_the_first_report(
        serve: Callable[[Responder], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # remediate takes a lease and opens its database before its first, fresh, observation.
    from fleetctl.commands.health import _collector

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path))
    prom = _Counting()
    collect, _ = _collector("all", str(LAB), "prometheus", serve(prom), 1.0, 10.0, 8)
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
        _collector("all", str(tmp_path / "nowhere.yml"), "prometheus", url, 1.0, 5.0, 8, ask_early=True)
    assert _threads_back_to(before)  # the round's threads end: closed, not left waiting for work


def test_a_bad_group_by_drops_the_early_round_too(serve: Callable[[Responder], str],
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fleetctl.commands.health import _check_group_by, _collector

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path))
    url = serve(_Counting())
    before = threading.active_count()
    with pytest.raises(UsageError):
        _collector("all", str(LAB), "prometheus", url, 1.0, 5.0, 8, ask_early=True,
                   check=lambda hosts: _check_group_by("no_such_variable_anywhere", hosts))
    assert _threads_back_to(before)
