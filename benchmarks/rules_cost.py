"""What each recording rule costs Prometheus, for two rules files side by side (a tool beside
``bench_prometheus.py --hold``, not a benchmark of its own: scripts/bench-all.sh runs ``bench_*.py``).

Every rule's expression of each file is asked as an instant query at one instant, against a server
held by ``bench_prometheus.py --hold FILE`` (its JSON names the URL and Prometheus's pid), the two
files alternating, ``--rounds`` times, each file's pass between two of the server's own rules
evaluations where it fits. Per rule and per file: the median wall time, the median Prometheus CPU
(from /proc: the server must run on this machine) and the series answered; and
whether the two files' records of the same name are equal series by series. A group's evaluation
runs these same queries one after another, so the sums are what one evaluation costs.

    python benchmarks/rules_cost.py --hold F OLD.rules.yml deploy/prometheus/rules/fleetctl-report.rules.yml
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from bench_prometheus import cpu_s, query, wait_for_quiet


def records(path: Path) -> dict[str, str]:
    """Record name -> expression, for every recording rule in the file."""
    doc = yaml.safe_load(path.read_text())
    return {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hold", type=Path, required=True, help="the JSON bench_prometheus.py --hold writes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    args = p.parse_args()
    held = json.loads(args.hold.read_text())
    url, pid = held["url"], held["prometheus_pid"]
    files = {"old": records(args.old), "new": records(args.new)}
    when = time.time()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    answers: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    took = dict.fromkeys(files, 5.0)  # one file's pass, the last time (a guess before the first)
    quiet = 0
    for _ in range(args.rounds):
        for which, rules in files.items():
            # Between two of the server's own evaluations, whose CPU would count as the queries'.
            quiet += wait_for_quiet(url, 1.5 * took[which] + 1.0)
            started = time.perf_counter()
            for name, expr in rules.items():
                c0, t0 = cpu_s(pid), time.perf_counter()
                result = query(url, expr, when, timeout_s=600)
                times.setdefault((which, name), []).append((time.perf_counter() - t0, cpu_s(pid) - c0))
                answers[(which, name)] = sorted((tuple(sorted(s["metric"].items())), s["value"][1])
                                                for s in result)
            took[which] = time.perf_counter() - started
    out: dict[str, Any] = {"rounds": args.rounds, "passes_between_evaluations": quiet, "rules": {},
                           "group": {}}
    for (which, name), runs in times.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        row = out["rules"].setdefault(name, {})
        row[which] = {"wall_s": round(wall, 3), "prometheus_cpu_s": round(cpu, 2),
                      "series": len(answers[(which, name)])}
        group = out["group"].setdefault(which, {"wall_s": 0.0, "prometheus_cpu_s": 0.0})
        group["wall_s"] = round(group["wall_s"] + wall, 3)
        group["prometheus_cpu_s"] = round(group["prometheus_cpu_s"] + cpu, 2)
    for name, row in out["rules"].items():
        if "old" in row and "new" in row:
            row["equal"] = answers[("old", name)] == answers[("new", name)]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
