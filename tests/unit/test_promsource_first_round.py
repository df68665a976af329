"""The first round of queries is asked before the inventory is read (it needs none), and what that
changes: the report is the same, the deadline counts from the asking, a failed inventory still wins."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_promsource import EMPTY, NOW, Responder, RulesPrometheus, host, reply, rules_report
from test_promsource import serve as serve  # the fixture, by its name (re-exported: no F811)

from fleetctl.errors import UsageError
from fleetctl.promsource import RULE_QUERIES, FirstRound, HttpPrometheus, PrometheusError, prometheus_report
from fleetctl.report import FleetReport


def _rows_as_dicts(rows: dict[str, Any]) -> list[Any]:
    report = FleetReport(generated_at=NOW, source="prometheus", hosts=list(rows.values()))
    return sorted(json.loads(report.to_json())["hosts"], key=lambda row: row["name"])


def test_a_round_started_early_gives_the_same_report_and_is_not_asked_again() -> None:
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


def test_the_deadline_counts_from_the_asking_not_from_the_report(serve: Callable[[Responder], str]) -> None:
    def never(h: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(5)  # past every deadline below
        reply(h, EMPTY)

    first = FirstRound(HttpPrometheus(serve(never), timeout_s=10))
    time.sleep(1.0)  # the inventory being read
    started = time.monotonic()
    with pytest.raises(PrometheusError, match=r"no answer within the 1\.2s deadline"):
        prometheus_report([host("a", 1)], HttpPrometheus("http://127.0.0.1:9"), deadline_s=1.2, first=first)
    assert time.monotonic() - started < 0.6  # 1 of its 1.2 s were spent before the report


def test_health_asks_prometheus_while_the_inventory_is_read(serve: Callable[[Responder], str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetctl.inventory
    from fleetctl.commands.health import _collector

    asked = threading.Event()

    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        asked.set()
        reply(h, EMPTY)

    url = serve(answer)
    real_load = fleetctl.inventory.load_inventory
    seen_while_loading: list[bool] = []

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        seen_while_loading.append(asked.wait(5.0))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(fleetctl.inventory, "load_inventory", slow_load)
    inventory = Path(__file__).parents[2] / "inventory" / "lab" / "hosts.yml"
    collect, hosts = _collector("all", str(inventory), "prometheus", url, 1.0, 10.0, 8)
    assert seen_while_loading == [True]
    report = collect()
    assert {r.name for r in report.hosts} == {h.name for h in hosts} and hosts


def test_an_inventory_that_fails_is_the_error_even_with_prometheus_unreachable(tmp_path: Path) -> None:
    from fleetctl.commands.health import _collector

    missing = tmp_path / "nowhere.yml"
    with pytest.raises(UsageError, match=r"nowhere\.yml: inventory not found"):
        _collector("all", str(missing), "prometheus", "http://127.0.0.1:9", 1.0, 5.0, 8)
