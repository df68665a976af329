"""benchmarks/bench_prometheus.py (timed runs between two rules evaluations) and rules_cost.py."""

from __future__ import annotations

import datetime
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

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


def test_rules_cost_compares_each_record_of_two_files_series_by_series(tmp_path: Path) -> None:
    # A stand-in Prometheus answering each expression; this process's own /proc stands in for its CPU.
    two = [({"host": "h1"}, "1"), ({"host": "h2"}, "2")]
    # a: the same series in another order (equal); b: another value (not equal)
    answers = {"a": two, "a_v2": two[::-1], "b": [({"host": "h1"}, "5")], "b_v2": [({"host": "h1"}, "6")]}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, form = self.path.partition("?")
            if path == "/api/v1/rules":  # no group, so no evaluation to wait out
                data: dict[str, Any] = {"groups": []}
            else:
                expr = urllib.parse.parse_qs(form)["query"][0]
                data = {"resultType": "vector",
                        "result": [{"metric": m, "value": [0, v]} for m, v in answers[expr]]}
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps({"status": "success", "data": data}).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hold = tmp_path / "hold.json"
        url = f"http://127.0.0.1:{server.server_port}"
        hold.write_text(json.dumps({"url": url, "prometheus_pid": os.getpid()}))
        for name, suffix in (("old", ""), ("new", "_v2")):
            rules = [{"record": "r:a", "expr": f"a{suffix}"}, {"record": "r:b", "expr": f"b{suffix}"}]
            (tmp_path / f"{name}.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}))
        out = subprocess.run([sys.executable, str(BENCH_DIR / "rules_cost.py"), "--hold", str(hold),
                              "--rounds", "2", str(tmp_path / "old.yml"), str(tmp_path / "new.yml")],
                             capture_output=True, text=True, check=True, timeout=60)
    finally:
        server.shutdown()
    doc = json.loads(out.stdout)
    assert doc["rules"]["r:a"]["equal"] is True and doc["rules"]["r:b"]["equal"] is False
    assert (doc["rules"]["r:a"]["old"]["series"], doc["rules"]["r:b"]["new"]["series"]) == (2, 1)
    assert set(doc["group"]) == {"old", "new"} and doc["group"]["old"]["wall_s"] > 0
    assert doc["passes_between_evaluations"] == 4  # 2 rounds x 2 files
