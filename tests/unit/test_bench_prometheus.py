"""benchmarks/bench_prometheus.py: timed runs start between two rules evaluations."""

from __future__ import annotations

import datetime
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH_DIR))  # its sibling modules (simfleet, prom_replay)
    try:
        spec = importlib.util.spec_from_file_location("bench_prometheus", BENCH_DIR / "bench_prometheus.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH_DIR))


def _group(last: float, interval: float, name: str = "fleetctl-report", digits: int = 9) -> dict[str, Any]:
    # As Prometheus writes it: RFC 3339, nanoseconds, UTC.
    when = datetime.datetime.fromtimestamp(last, datetime.UTC)
    fraction = f".{when.microsecond:06d}"[: digits + 1].ljust(digits + 1, "7")  # past microseconds: 7s
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    return {"name": name, "lastEvaluation": stamp, "interval": interval, "evaluationTime": 36.4}


def test_the_quiet_left_is_the_time_to_the_groups_next_evaluation() -> None:
    bench = _bench()
    last = 1_765_000_000.25
    assert abs(bench.rules_quiet_s([_group(last, 120.0)], last + 50.0) - 70.0) < 0.01
    assert abs(bench.rules_quiet_s([_group(last, 120.0, digits=3)], last + 50.0) - 70.0) < 0.01
    # Due or running (not reported until it ends): no quiet left.
    assert bench.rules_quiet_s([_group(last, 120.0)], last + 130.0) == 0.0
    # Another group's evaluations are not the report's; no report group: nothing to wait for.
    assert bench.rules_quiet_s([_group(last, 120.0, name="alerts")], last + 130.0) == float("inf")
    assert bench.rules_quiet_s([_group(last, 120.0, name="alerts"), _group(last, 10.0)], last + 4.0) > 5.9
