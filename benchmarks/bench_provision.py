"""``fleetctl provision`` against plain ``ansible-playbook`` on the same lab and playbook.

The default, where docker works, is the SSH lab (tests/lab/lab.py: 3 Debian containers over real
SSH, host keys checked) and playbooks/site.yml: the lab is converged once (by fleetctl, which also
warms its inventory cache), then every timed run is an idempotent re-run: a round in which a run
changes something (the lab is shared; or a role is not idempotent) is discarded and run again,
at most twice, and listed in the figures. ``--local`` uses generated local-connection hosts instead (no
docker needed); ``--inventory`` any other inventory.

The two commands alternate, several rounds, the order swapping each round so drift in the
machine's load falls on both; each lab run starts from cold SSH connections (no control master
left by the other). Figures: median wall time and median CPU time of the whole process tree
(children's rusage: fleetctl + ansible-runner + ansible-playbook + workers + ssh), their ratios
fleetctl / ansible-playbook (target <= 1.05), every round, and the load average before and after.
Prints the rounds on stderr and one JSON document on stdout.

    python benchmarks/bench_provision.py                # the SSH lab (run under flock, below)
    python benchmarks/bench_provision.py --local        # local-connection hosts
    python benchmarks/bench_provision.py --inventory inventory/lab --playbook site --pattern all
    BENCH_ARGS=--quick make bench                       # fewer rounds

The lab is shared: run the lab mode under ``flock /tmp/fleetctl-lab.lock``; it is left running.
Both commands run from the repository root with the same environment, so they read the same
ansible.cfg; host key checking is on for both (fleetctl's default).
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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from sshlab import load_lab

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


def docker_works() -> bool:
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class NotIdempotent(Exception):
    """A timed run changed something on the hosts: its time is not a re-run's."""


def timed(
    argv: Sequence[str], env: dict[str, str], check: Callable[[str], str | None]
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process tree). CPU time is the steadier figure on a
    shared machine; wall time is what an operator waits. ``check`` reads stdout, says what is wrong."""
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    if proc.returncode != 0:
        tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        sys.exit(f"bench_provision: {Path(argv[0]).name} exited {proc.returncode}:\n{tail}")
    problem = check(proc.stdout)
    if problem:
        raise NotIdempotent(f"{Path(argv[0]).name} {problem}")
    return elapsed, cpu


def plain_changed_nothing(stdout: str) -> str | None:
    recaps = [line for line in stdout.splitlines() if " : ok=" in line]
    if not recaps:
        return "printed no PLAY RECAP"
    changed = [line.split()[0] for line in recaps if "changed=0 " not in line]
    return f"changed something on {', '.join(changed)}: not an idempotent re-run" if changed else None


def fleetctl_changed_nothing(stdout: str) -> str | None:
    hosts = json.loads(stdout)["hosts"]
    changed = [h["host"] for h in hosts if h["changed"]]
    return f"changed something on {', '.join(changed)}: not an idempotent re-run" if changed else None


def _anything(stdout: str) -> str | None:
    return None


def _median_ratio(a: list[float], b: list[float]) -> float:
    return round(statistics.median(a) / statistics.median(b), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--lab", action="store_true",
                      help="the SSH lab and playbooks/site.yml (default with docker)")
    mode.add_argument("--local", action="store_true", help="local-connection hosts (default without docker)")
    mode.add_argument("--inventory", help="another inventory to run against")
    parser.add_argument("--playbook", default="site", help="with --inventory: playbook name or path")
    parser.add_argument("--pattern", default="all")
    parser.add_argument("--hosts", type=int, default=3, help="--local: number of hosts")
    parser.add_argument("--tasks", type=int, default=8, help="--local: pairs of tasks per host")
    parser.add_argument("--rounds", type=int, help="timed rounds (default: 3 on the lab, 5 otherwise)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (2 on the lab, 3 otherwise)")
    parser.add_argument("--forks", type=int, help="--forks for both (default: ansible.cfg's)")
    args = parser.parse_args()
    if not (args.lab or args.local or args.inventory):
        args.lab, args.local = docker_works(), not docker_works()
    rounds = args.rounds or ((2 if args.quick else 3) if args.lab else (3 if args.quick else 5))
    if rounds < 1:
        parser.error("--rounds must be 1 or more")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
        workdir = Path(tmp)
        lab: ModuleType | None = None
        check_plain, check_fleet = _anything, _anything
        if args.lab:
            lab = load_lab()
            inventory, playbook, name = Path(lab.up()), REPO / "playbooks" / "site.yml", "lab"
            check_plain, check_fleet = plain_changed_nothing, fleetctl_changed_nothing
        elif args.inventory:
            sys.path.insert(0, str(REPO))
            from fleetctl.provision import resolve_playbook

            inventory, playbook = Path(args.inventory).resolve(), resolve_playbook(args.playbook, REPO)
            name = "inventory"
        else:
            inventory, playbook = make_local(workdir, args.hosts, args.tasks)
            name = "local"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
        (workdir / "state").mkdir(exist_ok=True)  # fleetctl creates no directory named by --db
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_HOST_KEY_CHECKING="True",
            FLEETCTL_DB=str(workdir / "state" / "fleetctl.db"),
            FLEETCTL_CACHE_DIR=str(workdir / "cache"),
        )
        forks = ["--forks", str(args.forks)] if args.forks else []
        plain = [str(BIN / "ansible-playbook"), "-i", str(inventory), "--limit", args.pattern, *forks,
                 str(playbook)]
        fleet = [str(BIN / "fleetctl"), "provision", args.pattern, "-i", str(inventory), "-p", str(playbook),
                 *forks, "--json"]

        def cold() -> None:
            if lab is not None:
                lab.close_ssh_masters()

        # Warm-up, not measured: converges the lab, fills OS caches, Ansible's fact cache and
        # fleetctl's inventory cache. On the lab one converge (2 minutes) is enough.
        timed(fleet, env, _anything)
        if lab is None:
            timed(plain, env, _anything)
        commands = {"ansible_playbook": (plain, check_plain), "fleetctl_provision": (fleet, check_fleet)}
        wall: dict[str, list[float]] = {key: [] for key in commands}
        cpu: dict[str, list[float]] = {key: [] for key in commands}
        discarded: list[str] = []
        index = 0
        while index < rounds:
            order = list(commands) if index % 2 == 0 else list(reversed(commands))
            try:
                timings = {}
                for key in order:
                    cold()
                    timings[key] = timed(commands[key][0], env, commands[key][1])
            except NotIdempotent as exc:
                # Something else changed the hosts (the lab is shared) or a role is not idempotent:
                # that run re-converged them; the round is run again, up to twice in all.
                discarded.append(f"round {index + 1}: {exc}")
                print(f"round {index + 1} discarded: {exc}", file=sys.stderr)
                if len(discarded) > 2:
                    sys.exit(f"bench_provision: runs keep changing the hosts: {'; '.join(discarded)}")
                continue
            for key, (took, used) in timings.items():
                wall[key].append(round(took, 3))
                cpu[key].append(round(used, 3))
            index += 1
            print(f"round {index}/{rounds}: " + ", ".join(
                f"{key} {wall[key][-1]:.2f}s wall {cpu[key][-1]:.2f}s cpu" for key in commands
            ) + f"; load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    ratio = _median_ratio(wall["fleetctl_provision"], wall["ansible_playbook"])
    print(json.dumps({
        "benchmark": "provision_overhead",
        "mode": name,
        "inventory": f"{args.hosts} local hosts" if name == "local" else str(inventory),
        "playbook": f"{2 * args.tasks} tasks per host" if name == "local" else str(playbook),
        "rounds": rounds,
        "ansible_playbook_s": wall["ansible_playbook"],
        "fleetctl_provision_s": wall["fleetctl_provision"],
        "ansible_playbook_cpu_s": cpu["ansible_playbook"],
        "fleetctl_provision_cpu_s": cpu["fleetctl_provision"],
        "round_ratios": [
            round(f / p, 3) for f, p in zip(wall["fleetctl_provision"], wall["ansible_playbook"], strict=True)
        ],
        "ansible_playbook_median_s": statistics.median(wall["ansible_playbook"]),
        "fleetctl_provision_median_s": statistics.median(wall["fleetctl_provision"]),
        "overhead_s": round(statistics.median(wall["fleetctl_provision"])
                            - statistics.median(wall["ansible_playbook"]), 3),
        "overhead_ratio": ratio,
        "ansible_playbook_cpu_median_s": statistics.median(cpu["ansible_playbook"]),
        "fleetctl_provision_cpu_median_s": statistics.median(cpu["fleetctl_provision"]),
        "cpu_overhead_ratio": _median_ratio(cpu["fleetctl_provision"], cpu["ansible_playbook"]),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "discarded_rounds": discarded,
        "target_ratio": 1.05,
        "meets_target": ratio <= 1.05,
    }, indent=2))


if __name__ == "__main__":
    main()
