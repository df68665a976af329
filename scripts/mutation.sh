#!/usr/bin/env bash
# Mutation testing of the modules where a silent bug costs most (docs/mutation.md): mutmut 3, one module
# group at a time, then a score table (killed / total per module) and the same as JSON.
#
# Tool choice: mutmut 3 mutates a copy (mutants/) and switches mutants per test run via trampolines, so
# the working tree other people edit is never touched; cosmic-ray rewrites the sources in place.
#
#   scripts/mutation.sh                 every group (slow: minutes; not in CI)
#   scripts/mutation.sh drain classify  some groups (names in MUTANT_GLOBS below)
#   scripts/mutation.sh --report [GROUP...]  only the table, from the last run's results
#   MUTATION_JOBS=2 scripts/mutation.sh parallel workers (default 1: the tests are fast, machines shared)
#
# Settings (modules, tests) live in setup.cfg [mutmut]. The run happens in a staging copy, .mutation/,
# holding fleetctl/, the agent's package as fleet_agent/ (agents/fleet_agent: mutmut names a mutant after
# its path, which must be the module name the tests import) and tests/unit/. Results: .mutation/scores.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAGE="${MUTATION_STAGE:-$ROOT/.mutation}"  # another folder keeps an earlier run for comparison
JOBS="${MUTATION_JOBS:-1}"

# group name -> mutant-name globs (mutmut names a function's mutants MODULE.x_FUNC__mutmut_N, a method's
# MODULE.xǁCLASSǁMETHOD__mutmut_N). provision.py is only scored for its secret redaction.
declare -A MUTANT_GLOBS=(
  [state.locks]="fleetctl.state.locks.*"
  [state.hosts]="fleetctl.state.hosts.*"
  [state.runs]="fleetctl.state.runs.*"
  [state.db]="fleetctl.state.db.*"
  [drain]="fleetctl.drain.*"
  [classify]="fleetctl.fanout.classify.*"
  [redaction]="fleetctl.provision.x__redact_tree__* fleetctl.provision.x__secret_leaves__* fleetctl.provision.x__shown__* fleetctl.provision.xǁExtraVarsǁ* fleetctl.provision.xǁPlanǁredact__* fleetctl.provision.xǁPlanǁ_secrets__* fleetctl.provision.xǁPlanǁrecorded_options__*"
  [health.checks]="fleet_agent.health.checks.*"
  [xid_codes]="fleet_agent.health.xid_codes.*"
  [verdict]="fleet_agent.verdict.*"
)
ORDER=(state.locks classify redaction xid_codes health.checks state.db state.hosts state.runs verdict drain)

report_only=0
if [[ "${1:-}" == "--report" ]]; then report_only=1; shift; fi
selected=("$@")
[[ ${#selected[@]} -gt 0 ]] || selected=("${ORDER[@]}")
for g in "${selected[@]}"; do
  [[ -n "${MUTANT_GLOBS[$g]:-}" ]] || { echo "mutation.sh: unknown group '$g' (known: ${ORDER[*]})" >&2; exit 2; }
done
[[ -x "$VENV/bin/mutmut" ]] || {
  echo "mutation.sh: $VENV/bin/mutmut not found: $VENV/bin/pip install 'mutmut==3.8.1'" >&2
  exit 2
}

if [[ $report_only == 1 ]]; then
  [[ -d "$STAGE/mutants" ]] || { echo "mutation.sh: no results in $STAGE: run it first" >&2; exit 2; }
  cd "$STAGE"
else
# A fresh stage each time: mutmut keeps results by function hash, but a stale copy of a source it skips
# would score code that no longer exists.
rm -rf "$STAGE"
mkdir -p "$STAGE/tests"
cp -a "$ROOT/fleetctl" "$STAGE/fleetctl"
cp -a "$ROOT/agents/fleet_agent" "$STAGE/fleet_agent"
cp -a "$ROOT/tests/unit" "$STAGE/tests/unit"
cp -a "$ROOT/playbooks" "$STAGE/playbooks"
cp "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$STAGE/"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +

cd "$STAGE"
for g in "${selected[@]}"; do
  echo "== mutation: $g"
  # shellcheck disable=SC2086  # the globs are split into arguments on purpose, never expanded as files
  (set -f; nice -n 10 "$VENV/bin/mutmut" run --max-children "$JOBS" ${MUTANT_GLOBS[$g]}) >"$STAGE/$g.log" 2>&1 \
    || { echo "mutation.sh: mutmut failed for $g, see $STAGE/$g.log" >&2; tail -20 "$STAGE/$g.log" >&2; exit 1; }
done
fi

# The score table from mutmut's per-file results (mutants/PATH.meta: mutant name -> exit code).
GROUP_SPEC="$(for g in "${selected[@]}"; do printf '%s\t%s\n' "$g" "${MUTANT_GLOBS[$g]}"; done)" \
  "$VENV/bin/python" - <<'PY'
import fnmatch
import json
import os
from pathlib import Path

# mutmut's exit codes: 1 and 3 a test failed (killed), 37 the type checker refused it, 36/24/-24/152/255
# a timeout (counted killed, as mutmut does: a mutant that hangs the tests is found); 0 survived.
KILLED = {1, 3, 37}
TIMEOUT = {36, 24, -24, 152, 255}
NO_TESTS = {5, 33}

results: dict[str, int | None] = {}
for meta in Path("mutants").rglob("*.meta"):
    results.update(json.loads(meta.read_text())["exit_code_by_key"])

rows = []
for line in os.environ["GROUP_SPEC"].splitlines():
    group, _, globs = line.partition("\t")
    names = [n for n in results if any(fnmatch.fnmatchcase(n, g) for g in globs.split())]
    codes = [results[n] for n in names]
    killed = sum(c in KILLED or c in TIMEOUT for c in codes)
    rows.append({
        "module": group,
        "killed": killed,
        "total": len(codes),
        "survived": sorted(n for n in names if results[n] == 0),
        "no_tests": sorted(n for n in names if results[n] in NO_TESTS),
        "other": sorted(n for n in names if results[n] not in KILLED | TIMEOUT | NO_TESTS | {0}),
        "score": round(100 * killed / len(codes), 1) if codes else None,
    })
total = sum(r["total"] for r in rows)
killed_all = sum(r["killed"] for r in rows)
summary = {"tool": "mutmut 3", "modules": rows, "killed": killed_all, "total": total,
           "score": round(100 * killed_all / total, 1) if total else None}
Path("scores.json").write_text(json.dumps(summary, indent=2) + "\n")

print(f"{'module':<15} {'killed':>7} {'total':>6} {'score':>7}  survived")
for r in rows:
    score = f"{r['score']:.1f}%" if r["score"] is not None else "-"
    print(f"{r['module']:<15} {r['killed']:>7} {r['total']:>6} {score:>7}  {len(r['survived'])}")
score = f"{summary['score']:.1f}%" if summary["score"] is not None else "-"
print(f"{'all':<15} {killed_all:>7} {total:>6} {score:>7}")
print(json.dumps({r["module"]: {"killed": r["killed"], "total": r["total"]} for r in rows}))
PY
echo "details: $STAGE/scores.json (surviving mutant names); show one: cd $STAGE \&\& $VENV/bin/mutmut show NAME"
