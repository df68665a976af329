"""``fleetctl provision`` against plain ``ansible-playbook`` on the same inventory and playbook.

Both are run alternately, several times, in one process; the figure is the ratio of the medians
(fleetctl / ansible-playbook; target <= 1.05). Prints one JSON document.

    python benchmarks/bench_provision.py                 # --local: local-connection hosts
    python benchmarks/bench_provision.py --inventory inventory/lab --playbook site --pattern all
    BENCH_ARGS=--quick make bench                        # fewer rounds

Host key checking is on for both (fleetctl's default) and both run from the repository root, so
they read the same ansible.cfg.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

LOCAL_PLAYBOOK = """\
- name: Benchmark play
  hosts: all
  gather_facts: false
  tasks:
{tasks}
"""
LOCAL_TASK = """\
    - name: Write file {i}
      ansible.builtin.copy:
        content: "{{{{ inventory_hostname }}}} {i}\\n"
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}-{i}.txt"
        mode: "0644"
    - name: Run command {i}
      ansible.builtin.command: "true"
      changed_when: false
"""


def make_local(workdir: Path, hosts: int, tasks: int) -> tuple[Path, Path]:
    out = workdir / "out"
    out.mkdir()
    lines = ["[bench]"] + [f"h{i:03d} ansible_connection=local" for i in range(hosts)]
    lines += ["[all:vars]", f"ansible_python_interpreter={sys.executable}", f"out_dir={out}"]
    inventory = workdir / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    playbook = workdir / "bench.yml"
    playbook.write_text(LOCAL_PLAYBOOK.format(tasks="".join(LOCAL_TASK.format(i=i) for i in range(tasks))))
    return inventory, playbook


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], ok_codes: tuple[int, ...]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process tree). CPU time is the steadier figure on a
    shared machine; wall time is what an operator waits."""
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    if proc.returncode not in ok_codes:
        tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        sys.exit(f"benchmark: {argv[0]} exited {proc.returncode}:\n{tail}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="local-connection hosts (the default)")
    parser.add_argument("--inventory", help="an inventory to run against instead (e.g. the SSH lab's)")
    parser.add_argument("--playbook", default="site", help="with --inventory: playbook name or path")
    parser.add_argument("--pattern", default="all")
    parser.add_argument("--hosts", type=int, default=3, help="--local: number of hosts")
    parser.add_argument("--tasks", type=int, default=8, help="--local: pairs of tasks per host")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds

    with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
        workdir = Path(tmp)
        if args.inventory:
            inventory = Path(args.inventory).resolve()
            sys.path.insert(0, str(REPO))
            from fleetctl.provision import resolve_playbook

            playbook = resolve_playbook(args.playbook, REPO)
            mode = "inventory"
        else:
            inventory, playbook = make_local(workdir, args.hosts, args.tasks)
            mode = "local"
        env = {k: v for k, v in os.environ.items() if k not in ("ANSIBLE_HOST_KEY_CHECKING", "FLEETCTL_DB")}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            FLEETCTL_DB=str(workdir / "state" / "fleetctl.db"),
            FLEETCTL_CACHE_DIR=str(workdir / "cache"),
            ANSIBLE_HOST_KEY_CHECKING="True",
        )
        plain = [str(BIN / "ansible-playbook"), "-i", str(inventory), "--limit", args.pattern,
                 "--forks", str(args.forks), str(playbook)]
        fleet = [str(BIN / "fleetctl"), "provision", args.pattern, "-i", str(inventory), "-p", str(playbook),
                 "--forks", str(args.forks), "--json"]
        # Warm-up: OS caches, fact cache, fleetctl's inventory cache; not measured.
        timed(plain, env, (0,))
        timed(fleet, env, (0,))
        plain_runs: list[tuple[float, float]] = []
        fleet_runs: list[tuple[float, float]] = []
        for _ in range(rounds):  # alternated, so drift in machine load hits both alike
            plain_runs.append(timed(plain, env, (0,)))
            fleet_runs.append(timed(fleet, env, (0,)))
        plain_s, plain_cpu = [r[0] for r in plain_runs], [r[1] for r in plain_runs]
        fleet_s, fleet_cpu = [r[0] for r in fleet_runs], [r[1] for r in fleet_runs]
        plain_med, fleet_med = statistics.median(plain_s), statistics.median(fleet_s)
        plain_cpu_med, fleet_cpu_med = statistics.median(plain_cpu), statistics.median(fleet_cpu)
        print(json.dumps({
            "benchmark": "provision_overhead",
            "mode": mode,
            "inventory": str(inventory) if mode == "inventory" else f"{args.hosts} local hosts",
            "playbook": str(playbook) if mode == "inventory" else f"{2 * args.tasks} tasks per host",
            "rounds": rounds,
            "ansible_playbook_s": [round(x, 3) for x in plain_s],
            "fleetctl_provision_s": [round(x, 3) for x in fleet_s],
            "ansible_playbook_median_s": round(plain_med, 3),
            "fleetctl_provision_median_s": round(fleet_med, 3),
            "overhead_s": round(fleet_med - plain_med, 3),
            "overhead_ratio": round(fleet_med / plain_med, 3),
            "ansible_playbook_cpu_median_s": round(plain_cpu_med, 3),
            "fleetctl_provision_cpu_median_s": round(fleet_cpu_med, 3),
            "cpu_overhead_ratio": round(fleet_cpu_med / plain_cpu_med, 3),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "target_ratio": 1.05,
            "meets_target": fleet_med / plain_med <= 1.05,
        }, indent=2))


if __name__ == "__main__":
    main()
