#!/usr/bin/env bash
# `make lint`: check the Prometheus artefacts we ship (deploy/prometheus/) with promtool:
# the alert rules parse, their unit tests pass, and the example prometheus.yml loads together with
# a file_sd targets file in the format `fleetctl prometheus targets` writes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool-check: promtool is missing; install the Debian package 'prometheus'" >&2
    exit 2
  fi
fi

promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.test.yml

# The example config refers to rules/ and file_sd/ next to it, as installed in /etc/prometheus.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp deploy/prometheus/prometheus.yml "$tmp/"
cp -r deploy/prometheus/rules "$tmp/rules"
mkdir "$tmp/file_sd"
cat >"$tmp/file_sd/fleet-agent.json" <<'JSON'
[
  {"targets": ["127.0.0.1:9464"], "labels": {"host": "gpu-a-01", "group": "gpu_h100"}},
  {"targets": ["127.0.0.1:9465"], "labels": {"host": "tpu-b-01", "group": "tpu_v5e"}}
]
JSON
# promtool reads the file_sd file too (a malformed one fails); any warning fails the check.
if ! out=$(promtool check config "$tmp/prometheus.yml" 2>&1) || grep -q WARNING <<<"$out"; then
  echo "$out" >&2
  echo "promtool-check: deploy/prometheus/prometheus.yml failed promtool check config" >&2
  exit 1
fi

# Every query of the Grafana dashboard must be valid PromQL: promtool parses them as recording
# rules, with the dashboard's variables replaced by what Grafana sends for "All".
python3 - deploy/grafana/fleet-agent.json >"$tmp/dashboard-queries.rules.json" <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
panels = [p for top in doc["panels"] for p in [top, *top.get("panels", [])]]
exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
rules = [{"record": f"dashboard:query_{i}", "expr": re.sub(r"\$\{?\w+\}?", ".*", e)}
         for i, e in enumerate(exprs)]
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout)
PY
promtool check rules "$tmp/dashboard-queries.rules.json" >/dev/null || {
  promtool check rules "$tmp/dashboard-queries.rules.json" >&2 || true
  echo "promtool-check: deploy/grafana/fleet-agent.json has a query that is not valid PromQL" >&2
  exit 1
}
echo "promtool-check: rules, rule tests, prometheus.yml and the dashboard's queries OK"
