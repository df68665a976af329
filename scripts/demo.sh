#!/usr/bin/env bash
# `make demo`: a simulated fleet (fleet-agent sim-fleet, shipped demo scenario) and fleetctl health
# over it. No root, no Docker, no GPU. Everything lives in a temporary directory and is removed, and
# the fleet stopped, however the script ends. Exits 0 although the fleet has problems (it is a demo);
# a usage or configuration error (fleetctl exit 2) still fails it.
set -euo pipefail

HOSTS="${DEMO_HOSTS:-64}"
# DEMO_BASE_PORT fixes the first port (tests keep to their range); otherwise a free block is picked.
BASE_PORT="${DEMO_BASE_PORT:-}"
SCENARIO="${DEMO_SCENARIO:-demo}"
workdir="$(mktemp -d "${TMPDIR:-/tmp}/fleetctl-demo.XXXXXX")"
fleet_pid=""

cleanup() {
    if [[ -n "$fleet_pid" ]] && kill -0 "$fleet_pid" 2>/dev/null; then
        kill "$fleet_pid" 2>/dev/null || true
        wait "$fleet_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A block of HOSTS consecutive free ports on 127.0.0.1 (sim-fleet listens on P .. P+HOSTS-1).
base_port="${BASE_PORT:-$(python3 - "$HOSTS" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 32000 - n)
    socks = []
    try:
        for port in range(base, base + n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
else:
    sys.exit("demo: no block of free ports found")
PY
)}"

inventory="$workdir/inventory.yml"
fleet-agent sim-fleet --hosts "$HOSTS" --base-port "$base_port" --scenario "$SCENARIO" \
    --write-inventory "$inventory" >"$workdir/fleet.log" 2>&1 &
fleet_pid=$!

for _ in $(seq 1 600); do
    grep -q '^ready:' "$workdir/fleet.log" && break
    if ! kill -0 "$fleet_pid" 2>/dev/null; then
        echo "demo: fleet-agent sim-fleet exited early:" >&2
        cat "$workdir/fleet.log" >&2
        exit 1
    fi
    sleep 0.1
done
grep -q '^ready:' "$workdir/fleet.log" || { echo "demo: the fleet did not start within 60s" >&2; exit 1; }
grep '^ready:' "$workdir/fleet.log"

export FLEETCTL_CACHE_DIR="$workdir/cache"
# Piped output (CI logs, the README) gets a fixed width; a terminal keeps its own.
[[ -t 1 ]] || export COLUMNS="${COLUMNS:-132}"

run() {
    printf '\n$ %s\n' "$*" | sed "s|$workdir/||g"
    local rc=0
    "$@" || rc=$?
    # 1 = the fleet has problems, which is what the demo shows; anything else is a failure.
    if (( rc > 1 )); then
        echo "demo: '$*' failed with exit code $rc" >&2
        exit "$rc"
    fi
}

run fleetctl health -i "$inventory"
run fleetctl health -i "$inventory" --unhealthy --chips
echo
echo "(the fleet is stopped now; try it yourself: fleet-agent sim-fleet --hosts 64 --base-port 20000 --write-inventory fleet.yml)"
