"""Idempotent re-run of playbooks/site.yml on the 3-host SSH lab: tuned ansible.cfg vs defaults.

Both runs go over real SSH with host keys checked; the "defaults" config sets only what the run
needs to work (roles_path, host_key_checking), everything else is Ansible's default. The lab is
converged first so both timed runs change nothing. Prints one JSON object:
{"hosts": 3, "tuned_s": ..., "defaults_s": ..., "ratio": defaults_s / tuned_s}.
Run: .venv/bin/python benchmarks/bench_site_rerun.py [--keep-lab]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lab():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fleetctl_lab", REPO / "tests" / "lab" / "lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _timed(lab, config: Path | None) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    rc = lab.run_playbook("playbooks/site.yml", config=config, quiet=True)
    took = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"bench_site_rerun: site.yml failed (exit {rc}) with config {config or 'tuned'}")
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    # Accepted so `BENCH_ARGS=--quick make bench` works for every benchmark; one round is all this does.
    p.add_argument("--quick", action="store_true", help="no effect: the benchmark is one round already")
    args = p.parse_args()
    lab = _lab()
    hosts = lab.up()
    try:
        if lab.run_playbook("playbooks/site.yml", quiet=True) != 0:
            raise SystemExit("bench_site_rerun: converging the lab failed")
        with tempfile.TemporaryDirectory() as tmp:
            defaults_cfg = Path(tmp) / "ansible.cfg"
            defaults_cfg.write_text(f"[defaults]\nroles_path = {REPO / 'roles'}\nhost_key_checking = true\n",
                                    encoding="utf-8")
            defaults_s = _timed(lab, defaults_cfg)
            tuned_s = _timed(lab, None)
        print(json.dumps({"benchmark": "bench_site_rerun", "hosts": len(lab.lab_hosts()),
                          "inventory": str(hosts), "tuned_s": round(tuned_s, 2),
                          "defaults_s": round(defaults_s, 2), "ratio": round(defaults_s / tuned_s, 2)}))
    finally:
        if not args.keep_lab:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
