"""Benchmark the start-up of the ``fleetctl`` command line; prints one JSON document.

Each case runs the installed ``fleetctl`` (interpreter start to exit) ``--runs`` times and reports
the median: ``--version``, ``--help``, a subcommand's ``--help``, and shell completion requests made
the way the bash script Typer writes makes them (``_FLEETCTL_COMPLETE=complete_bash`` with
``COMP_WORDS``/``COMP_CWORD``): a subcommand name, an option's choices, an option name.
Target (issue 16): every median <= 0.3 s.

    python benchmarks/bench_cli.py            # 11 runs per case
    python benchmarks/bench_cli.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
TARGET_S = 0.3

# name -> (argv after ``fleetctl``, COMP_WORDS or None, what the output must contain)
CASES: dict[str, tuple[list[str], str | None, str]] = {
    "version": (["--version"], None, "fleetctl "),
    "help": (["--help"], None, "Usage"),
    "status_help": (["status", "--help"], None, "FLEETCTL_INVENTORY"),
    "complete_command": ([], "fleetctl ru", "runs"),
    "complete_choice": ([], "fleetctl runs list --status f", "failed"),
    "complete_option": ([], "fleetctl status --hi", "--history"),
}


def run_case(argv: list[str], words: str | None, expect: str, runs: int) -> dict[str, Any]:
    env = dict(os.environ)
    if words is not None:
        env.update(_FLEETCTL_COMPLETE="complete_bash", COMP_WORDS=words,
                   COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([FLEETCTL, *argv], capture_output=True, text=True, env=env, check=True)
        times.append(time.perf_counter() - started)
        if expect not in out.stdout:  # a fast wrong answer is no answer
            raise SystemExit(f"{argv or words!r}: expected {expect!r} in {out.stdout[:200]!r}")
    median = statistics.median(times)
    return {"median_s": round(median, 4), "runs_s": [round(t, 4) for t in times], "target_s": TARGET_S,
            "meets_target": median <= TARGET_S}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=11, help="runs per case (default 11)")
    args = p.parse_args()
    run_case(["--version"], None, "fleetctl ", 1)  # warm the page cache and byte-compile once
    results = {name: run_case(argv, words, expect, args.runs)
               for name, (argv, words, expect) in CASES.items()}
    doc = {"benchmark": "fleetctl start-up", "runs": args.runs, "cases": results,
           "meets_targets": all(r["meets_target"] for r in results.values())}
    print(json.dumps(doc, indent=2))
    return 0 if doc["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
