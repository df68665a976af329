"""Idempotent re-run of playbooks/site.yml on the 3-host SSH lab: tuned ansible.cfg vs defaults.

Both runs go over real SSH with host keys checked; the "defaults" config sets only what the run
needs to work (roles_path, host_key_checking), everything else is Ansible's default. The lab is
converged once first, so every timed run changes nothing (a run that reports a change fails the
benchmark). Then N rounds, each timing one run per config, the order alternating between rounds
so a drift in the machine's load falls on both. Each timed run starts with no SSH control master
open to the lab, so neither config rides on a connection the other one opened.

Prints the rounds on stderr and one JSON object on stdout:
{"hosts": 3, "tuned_s": median, "defaults_s": median, "ratio": defaults_s / tuned_s, "rounds": [...]}.
Run: .venv/bin/python benchmarks/bench_site_rerun.py [--rounds N | --quick] [--keep-lab]
(under `flock /tmp/fleetctl-lab.lock` where others share the lab).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from sshlab import load_lab

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = "playbooks/site.yml"
_RECAP = re.compile(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hosts_cpu(lab: ModuleType) -> float | None:
    readings = [lab.host_cpu_seconds(host) for host in lab.lab_hosts()]
    return None if None in readings else sum(readings)


def _timed(lab: ModuleType, name: str, config: Path | None) -> tuple[float, float, float | None]:
    """One site.yml run from cold SSH connections: wall seconds, CPU seconds on the controller
    (ansible-playbook, its workers and ssh clients) and in the lab's containers (None when their
    cgroups cannot be read). Fails unless the run changed nothing. CPU time does not depend on
    what else the machine is doing, so it shows where the time goes on a busy machine too."""
    lab.close_ssh_masters()
    hosts_before = _hosts_cpu(lab)
    controller_before = _children_cpu()
    exe = Path(sys.executable).with_name("ansible-playbook")
    argv = [str(exe if exe.exists() else "ansible-playbook"), "-i", str(lab.INVENTORY), PLAYBOOK]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=lab.playbook_env(config), capture_output=True, text=True,
                          check=False)
    took = time.perf_counter() - start
    controller = _children_cpu() - controller_before
    hosts_after = _hosts_cpu(lab)
    hosts = None if hosts_before is None or hosts_after is None else hosts_after - hosts_before
    recaps = _RECAP.findall(proc.stdout)
    if proc.returncode != 0 or not recaps:
        raise SystemExit(f"bench_site_rerun: {PLAYBOOK} failed (exit {proc.returncode}) with the {name} "
                         f"config:\n{(proc.stdout + proc.stderr)[-2000:]}")
    if any(changed != "0" for changed, _, _ in recaps):
        raise SystemExit(f"bench_site_rerun: the {name} re-run changed something: not an idempotent re-run")
    return took, controller, hosts


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, each one run per config (default 3)")
    p.add_argument("--quick", action="store_true", help="one round")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    args = p.parse_args()
    rounds = 1 if args.quick else args.rounds
    if rounds < 1:
        p.error("--rounds must be 1 or more")
    lab = load_lab()
    inventory = lab.up()
    try:
        if lab.run_playbook(PLAYBOOK, quiet=True) != 0:
            raise SystemExit("bench_site_rerun: converging the lab failed")
        with tempfile.TemporaryDirectory() as tmp:
            defaults_cfg = Path(tmp) / "ansible.cfg"
            defaults_cfg.write_text(f"[defaults]\nroles_path = {REPO / 'roles'}\nhost_key_checking = true\n",
                                    encoding="utf-8")
            configs: dict[str, Path | None] = {"defaults": defaults_cfg, "tuned": None}
            results: list[dict[str, object]] = []
            times: dict[str, list[float]] = {"defaults": [], "tuned": []}
            cpu: dict[str, list[float]] = {"defaults": [], "tuned": []}
            load_before = _load()
            for i in range(rounds):
                order = ["defaults", "tuned"] if i % 2 == 0 else ["tuned", "defaults"]
                runs = {name: _timed(lab, name, configs[name]) for name in order}
                result: dict[str, object] = {"order": order}
                for name, (wall, controller, hosts) in runs.items():
                    times[name].append(wall)
                    cpu[name].append(controller + (hosts or 0.0))
                    result[f"{name}_s"] = round(wall, 2)
                    result[f"{name}_cpu_controller_s"] = round(controller, 2)
                    result[f"{name}_cpu_hosts_s"] = None if hosts is None else round(hosts, 2)
                result["ratio"] = round(runs["defaults"][0] / runs["tuned"][0], 2)
                results.append(result)
                print(f"round {i + 1}/{rounds}: {json.dumps(results[-1])}", file=sys.stderr)
        defaults_s = statistics.median(times["defaults"])
        tuned_s = statistics.median(times["tuned"])
        print(json.dumps({"benchmark": "bench_site_rerun", "hosts": len(lab.lab_hosts()),
                          "inventory": str(inventory), "rounds": results,
                          "tuned_s": round(tuned_s, 2), "defaults_s": round(defaults_s, 2),
                          "ratio": round(defaults_s / tuned_s, 2),
                          # controller + hosts (hosts only where their cgroups could be read)
                          "tuned_cpu_s": round(statistics.median(cpu["tuned"]), 2),
                          "defaults_cpu_s": round(statistics.median(cpu["defaults"]), 2),
                          "loadavg_before": load_before, "loadavg_after": _load()}))
    finally:
        if not args.keep_lab:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
