#!/usr/bin/env bash
# Runs every benchmark in benchmarks/ and prints their JSON figures. BENCH_ARGS is passed to each
# (e.g. BENCH_ARGS=--quick for a shorter run). bench_soak.py (the agent under honest and abusive
# clients, RSS and open files sampled each second) runs 10 minutes, or 60 s with --quick.
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0
for bench in benchmarks/bench_*.py; do
  echo "### ${bench}" >&2
  # shellcheck disable=SC2086
  python "$bench" ${BENCH_ARGS:-} || { echo "benchmark failed: ${bench}" >&2; rc=1; }
done
exit "$rc"
