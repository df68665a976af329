#!/usr/bin/env bash
# Runs every benchmark in benchmarks/ and prints their JSON figures. BENCH_ARGS is passed to each
# (e.g. BENCH_ARGS=--quick for a shorter run). bench_soak.py (the agent under honest and abusive
# clients, RSS and open files sampled each second) runs 10 minutes, or 60 s with --quick.
#
# BENCH_QUICK=1 (or the argument --quick) is CI's smoke check: each benchmark in its short form, the
# SSH-lab parts left out (their JSON says so), a few minutes in all. Figures are not judged there: a
# benchmark passes when it ends without a traceback and prints one valid JSON document (a missed
# target is in the document). In either mode a benchmark whose output is not one JSON document fails.
# BENCH_ONLY=NAME[,NAME...] runs only those (e.g. BENCH_ONLY=bench_cli).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
if [[ ${1:-} == --quick ]]; then quick=1; shift; fi
if [[ $# -gt 0 ]]; then echo "usage: $0 [--quick]" >&2; exit 2; fi

# The short form of each benchmark (BENCH_ARGS is not used in quick mode: the benchmarks' options
# differ). A benchmark that needs the SSH lab and has no other mode is not run: its place in the
# output is a document saying so.
quick_args() {
  case "$1" in
    bench_agent) echo "--quick" ;;
    bench_cli) echo "--runs 3" ;;
    bench_health) echo "--quick --no-ssh-lab" ;;
    bench_prometheus) echo "--quick" ;;
    bench_provision) echo "--quick --local" ;;
    bench_remediate) echo "--quick" ;;
    bench_site_rerun) echo "SKIP" ;;
    bench_soak) echo "--quick --duration 30" ;;
    bench_speedups) echo "--quick --skip-parse" ;;
    *) echo "" ;;  # a new benchmark: its defaults (give it a short form here)
  esac
}

# One JSON document on stdin, else a one-line reason on stderr and exit 1.
check_json() {
  python -c '
import json, sys
text = sys.stdin.read()
try:
    doc = json.loads(text)
except ValueError as exc:
    sys.exit(f"{sys.argv[1]}: its output is not one JSON document ({exc}): {text[:200]!r}")
if not isinstance(doc, dict):
    sys.exit(f"{sys.argv[1]}: its output is JSON but not an object: {text[:200]!r}")
' "$1"
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rc=0
for bench in benchmarks/bench_*.py; do
  name=$(basename "$bench" .py)
  if [[ -n ${BENCH_ONLY:-} && ",${BENCH_ONLY}," != *",${name},"* ]]; then continue; fi
  echo "### ${bench}" >&2
  if [[ $quick == 1 ]]; then
    args=$(quick_args "$name")
    if [[ $args == SKIP ]]; then
      printf '{"benchmark": "%s", "skipped": "quick mode: it needs the SSH lab"}\n' "$name" | tee "$out/$name.json"
      continue
    fi
  else
    args=${BENCH_ARGS:-}
  fi
  status=0
  # shellcheck disable=SC2086
  python "$bench" $args >"$out/$name.json" 2>"$out/$name.err" || status=$?
  cat "$out/$name.err" >&2
  cat "$out/$name.json"
  if ! check_json "$name" <"$out/$name.json"; then
    echo "benchmark failed: ${bench} (exit ${status}, no JSON document)" >&2; rc=1
  elif grep -q '^Traceback' "$out/$name.err"; then
    echo "benchmark failed: ${bench} (exit ${status}, a traceback)" >&2; rc=1
  elif [[ $status != 0 && $quick != 1 ]]; then
    echo "benchmark failed: ${bench} (exit ${status})" >&2; rc=1
  elif [[ $status != 0 ]]; then
    echo "### ${bench}: exit ${status} (figures are not judged in quick mode)" >&2
  fi
done
exit "$rc"
