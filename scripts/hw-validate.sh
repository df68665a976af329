#!/usr/bin/env bash
# The real-hardware check of fleet-agent, for the day a GPU host is at hand (issue 15, item 5).
#
# On the GPU host, from a checkout:   bash scripts/hw-validate.sh [options]
#   1. installs the agent with its nvml extra in a throwaway venv (from the index, or offline
#      from --wheelhouse), as the fleet_agent role does;
#   2. takes one sample with the real collectors, `fleet-agent once --json`, recording every NVML
#      call and answer (--record-nvml), and right after it `nvidia-smi -q -x`;
#   3. compares them field by field (scripts/hw_compare.py): a side-by-side table, exit 1 when a
#      field that cannot move between two readings disagrees;
#   4. measures the agent on this host (scripts/hw_figures.py): NVML call latencies from the
#      recording, the running agent's RSS and CPU, /metrics and /v1/node latencies;
#   5. keeps everything in --out, a test fixture: tests/unit/test_hw_fixtures.py replays the
#      recording through the real collector and must reproduce once.json.
#
# Options:
#   --out DIR          where to keep the results (default tests/fixtures/hw/<host>-<date>)
#   --wheelhouse DIR   install offline from this directory (the agent's wheel or setuptools,
#                      and its dependencies: psutil prometheus-client pyyaml h11 nvidia-ml-py)
#   --seconds N        how long the running agent is measured (default 60)
#   --python PY        the Python that makes the venv (default python3; 3.11 or newer)
#   --nvidia-smi CMD   the nvidia-smi to compare with (default nvidia-smi)
# Exit: 0 all agree, 1 a disagreement (see compare.txt), 2 could not run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out="" wheelhouse="" seconds=60 python=python3 smi=nvidia-smi

die() { echo "hw-validate: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    --out) out=${2:?}; shift 2 ;;
    --wheelhouse) wheelhouse=${2:?}; shift 2 ;;
    --seconds) seconds=${2:?}; shift 2 ;;
    --python) python=${2:?}; shift 2 ;;
    --nvidia-smi) smi=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "--seconds: expected a whole number of seconds, got '$seconds'"
command -v "$smi" >/dev/null || die "$smi not found: run this on a host with the NVIDIA driver installed"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$python: Python 3.11 or newer is needed (--python)"
[[ -z $wheelhouse || -d $wheelhouse ]] || die "--wheelhouse: $wheelhouse is not a directory"
out=${out:-$repo/tests/fixtures/hw/$(hostname -s)-$(date +%Y%m%d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== venv with fleetctl-agent[nvml] in $work/venv"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
if [[ -n $wheelhouse ]]; then
  pip+=(--no-index --find-links "$wheelhouse")
  shopt -s nullglob
  wheels=("$wheelhouse"/fleetctl_agent-*.whl)
  shopt -u nullglob
  if ((${#wheels[@]})); then
    "${pip[@]}" "${wheels[-1]}[nvml]"
  else
    "${pip[@]}" "$repo/agents[nvml]"
  fi
else
  "${pip[@]}" "$repo/agents[nvml]"
fi
agent="$work/venv/bin/fleet-agent"

# Real collectors, nothing simulated; the XID history and the token stay in the throwaway dir.
token=$("$work/venv/bin/python" -c 'import secrets; print(secrets.token_hex(24))')
umask 077
printf '%s\n' "$token" >"$work/token"
port=$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/config.yaml" <<EOF
listen_address: 127.0.0.1
port: $port
token_file: $work/token
collectors: [nvml, host]
state_dir: $work/state
interval_s: 5
collector_timeout_s: 2
EOF
umask 022

echo "== one sample (fleet-agent once --json --record-nvml), then nvidia-smi -q -x"
"$agent" once --json --config "$work/config.yaml" --record-nvml "$out/nvml-recording.json" >"$out/once.json"
"$smi" -q -x >"$out/nvidia-smi.xml"
"$agent" --version >"$out/agent-version.txt"
{ uname -r; "$smi" --query-gpu=name,driver_version --format=csv,noheader | sort | uniq -c; } >"$out/host.txt" || true

echo "== fleet-agent vs nvidia-smi"
rc=0
"$work/venv/bin/python" "$repo/scripts/hw_compare.py" "$out/once.json" "$out/nvidia-smi.xml" \
  >"$out/compare.txt" || rc=$?
cat "$out/compare.txt"
((rc <= 1)) || die "the comparison could not run (exit $rc)"

echo "== figures: the running agent for ${seconds}s"
"$work/venv/bin/python" "$repo/scripts/hw_figures.py" --agent "$agent" --config "$work/config.yaml" \
  --port "$port" --token-file "$work/token" --seconds "$seconds" \
  --recording "$out/nvml-recording.json" >"$out/figures.json"
cat "$out/figures.json"

echo "== kept in $out (commit it: tests/unit/test_hw_fixtures.py replays every directory there)"
exit "$rc"
