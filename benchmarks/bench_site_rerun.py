"""Idempotent re-run of playbooks/site.yml on the 3-host SSH lab: tuned ansible.cfg vs defaults.

Both runs go over real SSH with host keys checked; the "defaults" config sets only what the run
needs to work (roles_path, host_key_checking), everything else is Ansible's default. The lab is
converged once first, so every timed run changes nothing (a run that reports a change fails the
benchmark). Then N rounds, each timing one run per config, the order rotating between rounds so a
drift in the machine's load falls on each. Each timed run starts with no SSH control master open
to the lab, so no config rides on a connection another one opened.

--latency-ms 0,2,10 measures the same at each one-way delay: every SSH connection goes through
benchmarks/latency_relay.py as its ProxyCommand, set in ansible_ssh_common_args by a second
inventory source (host vars, which take precedence over the lab's group_vars), so every config
gets the same path and known_hosts is still checked. The relays also count each run's round
trips (latency_relay.py --stats): unlike the wall time, that count does not move with the
machine's load, and each round trip costs up to twice the one-way delay. --config NAME=PATH adds a
candidate ansible.cfg to compare beside the two.

The agent's source is copied once at the start and every run builds its wheel from that copy, so
an edit under agents/ while the benchmark runs does not turn a re-run into an install.

Prints the rounds on stderr and one JSON object on stdout. Without --latency-ms:
{"hosts": 3, "tuned_s": median, "defaults_s": median, "ratio": defaults_s / tuned_s, "rounds": [...]}
(and each config's fastest round, *_min_s);
with it, "curve": one such object per latency, and the curve as a table on stderr.
Run: .venv/bin/python benchmarks/bench_site_rerun.py [--rounds N | --quick] [--latency-ms 0,2,10]
[--config NAME=PATH] [--keep-lab] (under `flock -o /tmp/fleet-lab.lock` where others share the lab).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import yaml
from sshlab import load_lab

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = "playbooks/site.yml"
RELAY = Path(__file__).resolve().with_name("latency_relay.py")
_RECAP = re.compile(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hosts_cpu(lab: ModuleType) -> float | None:
    readings = [lab.host_cpu_seconds(host) for host in lab.lab_hosts()]
    return None if None in readings else sum(readings)


class Run:
    """How ansible-playbook is started: inventory sources and extra variables, the same for every
    config; ``relay_stats`` is where the latency relays report, when they are used."""

    def __init__(self, inventories: list[Path], extra_vars: dict[str, str], relay_stats: Path | None) -> None:
        self.inventories = inventories
        self.extra_vars = extra_vars
        self.relay_stats = relay_stats

    def argv(self) -> list[str]:
        exe = Path(sys.executable).with_name("ansible-playbook")
        argv = [str(exe if exe.exists() else "ansible-playbook")]
        for inventory in self.inventories:
            argv += ["-i", str(inventory)]
        if self.extra_vars:
            argv += ["-e", json.dumps(self.extra_vars)]
        return [*argv, PLAYBOOK]


def _relay_traffic(stats: Path, hosts: int) -> dict[str, int]:
    """Sum of the relays' lines once every host's relay has ended (after its master was closed);
    empties the file for the next run."""
    deadline = time.monotonic() + 15
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = stats.read_text(encoding="utf-8").splitlines() if stats.exists() else []
        if len(lines) >= hosts:
            time.sleep(0.2)  # a second connection to a host, if any, ends about now too
            lines = stats.read_text(encoding="utf-8").splitlines()
            break
        time.sleep(0.1)
    else:
        raise SystemExit(f"bench_site_rerun: {stats}: {len(lines)} of {hosts} relays reported")
    stats.write_text("", encoding="utf-8")
    records = [json.loads(line) for line in lines]
    return {key: sum(int(r[key]) for r in records) for key in ("round_trips", "bytes_up", "bytes_down")}


def _timed(lab: ModuleType, name: str, config: Path | None,
           run: Run) -> tuple[float, float, float | None, dict[str, int] | None]:
    """One site.yml run from cold SSH connections: wall seconds, CPU seconds on the controller
    (ansible-playbook, its workers and ssh clients; not the daemonised ControlPersist masters nor
    their relays) and in the lab's containers (None when their cgroups cannot be read). Fails
    unless the run changed nothing. CPU time does not depend on what else the machine is doing,
    so it shows where the time goes on a busy machine too. Last, what the relays counted (None
    without them)."""
    lab.close_ssh_masters()
    hosts_before = _hosts_cpu(lab)
    controller_before = _children_cpu()
    if run.relay_stats is not None:
        run.relay_stats.write_text("", encoding="utf-8")
    start = time.perf_counter()
    proc = subprocess.run(run.argv(), cwd=REPO, env=lab.playbook_env(config), capture_output=True, text=True,
                          check=False)
    took = time.perf_counter() - start
    # The masters end here, and with them the relays, which then report what they counted.
    lab.close_ssh_masters()
    controller = _children_cpu() - controller_before
    hosts_after = _hosts_cpu(lab)
    hosts = None if hosts_before is None or hosts_after is None else hosts_after - hosts_before
    recaps = _RECAP.findall(proc.stdout)
    if proc.returncode != 0 or not recaps:
        raise SystemExit(f"bench_site_rerun: {PLAYBOOK} failed (exit {proc.returncode}) with the {name} "
                         f"config:\n{(proc.stdout + proc.stderr)[-2000:]}")
    if any(changed != "0" for changed, _, _ in recaps):
        raise SystemExit(f"bench_site_rerun: the {name} re-run changed something: not an idempotent re-run")
    traffic = None if run.relay_stats is None else _relay_traffic(run.relay_stats, len(lab.lab_hosts()))
    return took, controller, hosts, traffic


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def latency_inventory(lab: ModuleType, delay_ms: float, dest: Path, stats: Path) -> Path:
    """An inventory source that sends every lab host's SSH through the relay: the lab's own
    ansible_ssh_common_args (from its group_vars, still templated with the lab's inventory_dir,
    which stays the first source's) plus the ProxyCommand, as host vars."""
    group_vars = yaml.safe_load((lab.INVENTORY / "group_vars" / "lab.yml").read_text(encoding="utf-8"))
    common = str(group_vars["ansible_ssh_common_args"])
    # -I -S: the relay needs only the standard library, and each SSH connection pays its start-up.
    command = shlex.join([sys.executable, "-I", "-S", str(RELAY), "--delay-ms", f"{delay_ms:g}",
                          "--stats", str(stats)])
    args = f"{common} -o {shlex.quote(f'ProxyCommand={command} %h %p')}"
    hosts = {host.name: {"ansible_ssh_common_args": args} for host in lab.lab_hosts()}
    dest.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, width=1000), encoding="utf-8")
    return dest


def _measure(lab: ModuleType, configs: dict[str, Path | None], run: Run,
             rounds: int, label: str) -> dict[str, object]:
    names = list(configs)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    trips: dict[str, list[int]] = {name: [] for name in names}
    results: list[dict[str, object]] = []
    load_before = _load()
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        runs = {name: _timed(lab, name, configs[name], run) for name in order}
        result: dict[str, object] = {"order": order}
        for name, (wall, controller, hosts, traffic) in runs.items():
            times[name].append(wall)
            cpu[name].append(controller + (hosts or 0.0))
            result[f"{name}_s"] = round(wall, 2)
            result[f"{name}_cpu_controller_s"] = round(controller, 2)
            result[f"{name}_cpu_hosts_s"] = None if hosts is None else round(hosts, 2)
            if traffic is not None:
                trips[name].append(traffic["round_trips"])
                result[f"{name}_relay"] = traffic
        result["ratio"] = round(runs["defaults"][0] / runs["tuned"][0], 2)
        results.append(result)
        print(f"{label}round {i + 1}/{rounds}: {json.dumps(result)}", file=sys.stderr)
    medians = {name: statistics.median(times[name]) for name in names}
    doc: dict[str, object] = {"rounds": results}
    for name in names:
        doc[f"{name}_s"] = round(medians[name], 2)
    # Another job's load only ever adds time: on a shared machine the fastest round is the better
    # estimate of the run itself.
    for name in names:
        doc[f"{name}_min_s"] = round(min(times[name]), 2)
    doc["ratio"] = round(medians["defaults"] / medians["tuned"], 2)
    for name in names:
        if name not in ("defaults", "tuned"):
            doc[f"ratio_{name}"] = round(medians["defaults"] / medians[name], 2)
    # controller + hosts (hosts only where their cgroups could be read)
    for name in names:
        doc[f"{name}_cpu_s"] = round(statistics.median(cpu[name]), 2)
    for name in names:
        if trips[name]:
            # all 3 hosts together; per host they run side by side
            doc[f"{name}_round_trips"] = round(statistics.median(trips[name]))
    doc["loadavg_before"] = load_before
    doc["loadavg_after"] = _load()
    return doc


def _latencies(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--latency-ms: {text!r} is not a list of numbers such as 0,2,10") \
            from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("--latency-ms: delays must be 0 or more")
    return values


def _config(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in ("defaults", "tuned"):
        raise argparse.ArgumentTypeError(f"--config: {text!r}: expected NAME=PATH, NAME a new lowercase word")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--config: {path}: no such file")
    return name, Path(path).resolve()


def _table(curve: list[dict[str, object]], names: list[str]) -> str:
    head = ["latency (one way)", *(f"{n} s (min)" for n in names), "defaults / tuned",
            *(f"defaults / {n}" for n in names if n not in ("defaults", "tuned")),
            *(f"{n} round trips" for n in names), "load before / after"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for point in curve:
        cells = [f"{point['latency_ms']:g} ms",
                 *(f"{point[f'{n}_s']} ({point[f'{n}_min_s']})" for n in names), f"{point['ratio']}",
                 *(f"{point[f'ratio_{n}']}" for n in names if n not in ("defaults", "tuned")),
                 *(f"{point.get(f'{n}_round_trips', '-')}" for n in names),
                 f"{point['loadavg_before']} / {point['loadavg_after']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, each one run per config (default 3)")
    p.add_argument("--quick", action="store_true", help="one round")
    p.add_argument("--latency-ms", type=_latencies, metavar="MS[,MS...]",
                   help="one-way delays to add to every SSH connection, through benchmarks/latency_relay.py")
    p.add_argument("--config", type=_config, action="append", default=[], metavar="NAME=PATH",
                   help="another ansible.cfg to time beside defaults and tuned (repeatable)")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    args = p.parse_args()
    rounds = 1 if args.quick else args.rounds
    if rounds < 1:
        p.error("--rounds must be 1 or more")
    lab = load_lab()
    inventory = lab.up()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            agent_source = Path(tmp) / "agents"
            shutil.copytree(REPO / "agents", agent_source, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".*_cache"))
            extra_vars = {"fleet_agent_source_dir": str(agent_source)}
            if lab.run_playbook(PLAYBOOK, ["-e", json.dumps(extra_vars)], quiet=True) != 0:
                raise SystemExit("bench_site_rerun: converging the lab failed")
            defaults_cfg = Path(tmp) / "ansible.cfg"
            defaults_cfg.write_text(f"[defaults]\nroles_path = {REPO / 'roles'}\nhost_key_checking = true\n",
                                    encoding="utf-8")
            configs: dict[str, Path | None] = {"defaults": defaults_cfg, "tuned": None, **dict(args.config)}
            doc: dict[str, object] = {"benchmark": "bench_site_rerun", "hosts": len(lab.lab_hosts()),
                                      "inventory": str(inventory)}
            if args.latency_ms is None:
                doc.update(_measure(lab, configs, Run([inventory], extra_vars, None), rounds, ""))
            else:
                curve = []
                stats = Path(tmp) / "relay-stats.jsonl"
                for delay in args.latency_ms:
                    extra = latency_inventory(lab, delay, Path(tmp) / f"latency-{delay:g}ms.yml", stats)
                    run = Run([inventory, extra], extra_vars, stats)
                    point = _measure(lab, configs, run, rounds, f"{delay:g} ms: ")
                    curve.append({"latency_ms": delay, **point})
                doc["curve"] = curve
                print(_table(curve, list(configs)), file=sys.stderr)
        print(json.dumps(doc))
    finally:
        if not args.keep_lab:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
