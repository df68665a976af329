"""What each of fleetctl's speed tricks (fleetctl/speedups.py) buys; prints one JSON document.

Every trick is measured with and without (``FLEETCTL_SPEEDUPS_OFF=<trick>``), in alternating runs,
medians of ``--runs``, against the benchmark targets it serves:

- ``fleetctl health --json`` over ``--hosts`` simulated hosts (``fleet-agent sim-fleet``, its own
  process), the whole command from interpreter start to exit, with a warm inventory cache and with
  a cold one (the inventory's cache entry deleted before each run; Ansible's plugin routing table
  stays cached, as in benchmarks/bench_health.py). Target: <= 0.8 s at 1,000 hosts.
- an inventory parse alone (no agents) of a ``--parse-hosts`` inventory of the same shape, cold
  cache, in its own process: ``parse_s`` is ``load_inventory`` inside the process, ``process_s``
  interpreter start to exit. It is the part of a cold 10,000-host ``fleetctl health`` (target
  <= 8 s) that the Ansible tricks serve.
- ``fleetctl --help``, all tricks on against all off. Target: <= 0.3 s.

A trick is *material* when it saves at least ``THRESHOLD_SHARE`` of the target of one of the
benchmarks it serves (docs/performance.md). Tricks that do not run on a path (the Ansible ones on a
warm cache) are not measured there.

    python benchmarks/bench_speedups.py                     # 1,000 hosts, 7 runs; 10,000-host parse, 3 runs
    python benchmarks/bench_speedups.py --runs 5 --parse-runs 2
    python benchmarks/bench_speedups.py --quick             # 3 runs per arm, 1 parse run per arm
    python benchmarks/bench_speedups.py --skip-parse        # the 1,000-host figures and --help only
    python benchmarks/bench_speedups.py --tricks gc_pause,parse_once
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simfleet import raise_nofile, start_fleet, stop  # noqa: E402 - benchmarks/ is on the path

from fleetctl.speedups import ENV_OFF, TRICKS  # noqa: E402 - after the path above

BIN = Path(sys.executable).parent
BASE_PORT = 28500  # sim-fleet's agents: BASE_PORT .. BASE_PORT + hosts, below the ephemeral range
THRESHOLD_SHARE = 0.05
HEALTH_TARGET_S = {1000: 0.8, 10000: 8.0}
HELP_TARGET_S = 0.3
# The tricks that run on each path; the others cannot change its figure.
WARM_TRICKS = ("gc_pause", "gc_freeze")
COLD_TRICKS = tuple(TRICKS)
PARSE_TRICKS = tuple(TRICKS)

MAIN = "import sys; from fleetctl.cli import main; sys.argv[0] = 'fleetctl'; main()"
PARSE = """
import sys, time, json
started = time.perf_counter()
from fleetctl.inventory import load_inventory
inv = load_inventory(sys.argv[1], cache_dir=__import__("pathlib").Path(sys.argv[2]))
assert not inv.from_cache
print(json.dumps({"parse_s": time.perf_counter() - started, "hosts": len(inv.hosts)}), flush=True)
"""


def log(msg: str) -> None:
    print(f"[bench_speedups] {msg}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def env_for(off: str, cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, ENV_OFF: off}
    if cache is not None:
        env["FLEETCTL_CACHE_DIR"] = str(cache)
    return env


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds, interpreter start to exit
    cpu: float  # user + system seconds of the process
    parse: float = 0.0  # load_inventory alone (the parse benchmark)


def timed_run(argv: list[str], env: dict[str, str], what: str) -> tuple[Timing, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode not in (0, 1):
        raise SystemExit(f"{what} (off: {env.get(ENV_OFF) or 'none'}) failed ({out.returncode}): "
                         f"{out.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu), out.stdout


def fleetctl(args: list[str], off: str, cache: Path | None = None) -> Timing:
    """One whole ``fleetctl`` command with the tricks in ``off`` switched off."""
    timing, _ = timed_run([sys.executable, "-c", MAIN, *args], env_for(off, cache), f"fleetctl {args[0]}")
    return timing


def drop_inventory_cache(cache: Path) -> None:
    for entry in cache.glob("inventory-*.json"):
        entry.unlink()


def with_and_without(trick: str, runs: int, once: Callable[[str], Timing]) -> dict[str, Any]:
    """``once(off)`` alternately with every trick on and with ``trick`` off; medians.

    ``saves_s`` is the median of the paired differences (each "without" run minus the "with" run
    next to it), which a slow stretch of a shared machine disturbs less than a difference of
    medians; ``saves_cpu_s`` is the same for the process's CPU time (user + system).
    """
    on: list[Timing] = []
    off: list[Timing] = []
    for i in range(runs):
        # Alternate which arm goes first, so a slow stretch of the machine lands on both.
        for arm in (("", on), (trick, off)) if i % 2 == 0 else ((trick, off), ("", on)):
            arm[1].append(once(arm[0]))
    return {
        "with_s": median([t.wall for t in on]), "without_s": median([t.wall for t in off]),
        "saves_s": median([b.wall - a.wall for a, b in zip(on, off, strict=True)]),
        "with_cpu_s": median([t.cpu for t in on]), "without_cpu_s": median([t.cpu for t in off]),
        "saves_cpu_s": median([b.cpu - a.cpu for a, b in zip(on, off, strict=True)]),
        "with_runs_s": [round(t.wall, 3) for t in on], "without_runs_s": [round(t.wall, 3) for t in off],
    }


def describe(figure: dict[str, Any]) -> str:
    return (f"{figure['with_s']:.3f}s with, {figure['without_s']:.3f}s without, "
            f"saves {figure['saves_s']:.3f}s (CPU {figure['saves_cpu_s']:.3f}s)")


def judged(figure: dict[str, Any], target_s: float) -> dict[str, Any]:
    share = figure["saves_s"] / target_s
    return {**figure, "target_s": target_s, "share_of_target": round(share, 3),
            "material": share >= THRESHOLD_SHARE}


# Beside both inventories: group variables written as inventory/example and the tests write them,
# so that the templating of host variables (fleetctl renders ansible_* connection variables) and
# the token idiom are part of the parse, as in a real fleet's inventory.
GROUP_VARS_ALL = """\
ansible_user: sre
ansible_ssh_private_key_file: "{{ inventory_dir }}/keys/id_ed25519"
fleet_agent_token: "{{ vault_fleet_agent_token | default('') }}"
"""


def bench_fleet(workdir: Path, hosts: int, runs: int, tricks: list[str]) -> dict[str, Any]:
    log(f"{hosts} hosts: starting sim-fleet")
    (workdir / "group_vars").mkdir(exist_ok=True)
    (workdir / "group_vars" / "all.yml").write_text(GROUP_VARS_ALL)
    proc, inv = start_fleet(workdir, hosts, BASE_PORT, ready_within_s=300)
    target = HEALTH_TARGET_S.get(hosts, 0.8)
    args = ["health", "-i", str(inv), "--json"]
    cache = workdir / f"cache-{hosts}"
    try:
        fleetctl(args, "", cache)  # fills the inventory cache and the routing table's
        warm: dict[str, Any] = {}
        cold: dict[str, Any] = {}
        def warm_once(off: str) -> Timing:
            return fleetctl(args, off, cache)

        for trick in ["all", *[t for t in tricks if t in WARM_TRICKS]]:
            warm[trick] = judged(with_and_without(trick, runs, warm_once), target)
            log(f"warm {trick}: {describe(warm[trick])}")

        def cold_once(off: str) -> Timing:
            drop_inventory_cache(cache)
            return fleetctl(args, off, cache)

        for trick in ["all", *[t for t in tricks if t in COLD_TRICKS]]:
            cold[trick] = judged(with_and_without(trick, runs, cold_once), target)
            log(f"cold {trick}: {describe(cold[trick])}")
        return {"hosts": hosts, "runs": runs, "target_s": target, "warm_cache": warm, "cold_cache": cold}
    finally:
        stop(proc)


def scaled_inventory(template: Path, hosts: int, out: Path) -> Path:
    """An inventory of ``hosts`` hosts in the shape of sim-fleet's (``template``): its hosts repeated
    under new names, each copy in the same groups (nothing is contacted: parse only)."""
    import yaml

    doc = yaml.safe_load(template.read_text())
    names = list(doc["all"]["hosts"])
    rename = {(name, k): f"{name}-{k}" for k in range(-(-hosts // len(names))) for name in names}
    chosen = list(rename.items())[:hosts]
    new_hosts = {new: doc["all"]["hosts"][old] for (old, _k), new in chosen}
    children = {}
    for group, body in (doc["all"].get("children") or {}).items():
        members = set(body.get("hosts") or {})
        children[group] = {"hosts": {new: None for (old, _k), new in chosen if old in members}}
    new_doc: dict[str, Any] = {"all": {"hosts": new_hosts}}
    if doc["all"].get("vars"):
        new_doc["all"]["vars"] = doc["all"]["vars"]
    if children:
        new_doc["all"]["children"] = children
    out.write_text(yaml.safe_dump(new_doc, sort_keys=False))
    return out


def bench_parse(workdir: Path, template: Path, hosts: int, runs: int, tricks: list[str]) -> dict[str, Any]:
    inv = scaled_inventory(template, hosts, workdir / f"parse-{hosts}.yml")
    cache = workdir / f"cache-parse-{hosts}"
    target = HEALTH_TARGET_S.get(hosts, 8.0)
    figures: dict[str, Any] = {}

    def once(off: str) -> Timing:
        drop_inventory_cache(cache)
        timing, out = timed_run([sys.executable, "-c", PARSE, str(inv), str(cache)], env_for(off), "parse")
        got = json.loads(out)
        assert got["hosts"] == hosts
        return Timing(timing.wall, timing.cpu, float(got["parse_s"]))

    once("")  # the routing table's cache entry, as after any earlier run
    for trick in ["all", *[t for t in tricks if t in PARSE_TRICKS]]:
        seen: dict[str, list[float]] = {"": [], trick: []}

        def recorded(off: str, seen: dict[str, list[float]] = seen) -> Timing:
            timing = once(off)
            seen[off].append(timing.parse)
            return timing

        figure = judged(with_and_without(trick, runs, recorded), target)
        figure["parse_with_s"], figure["parse_without_s"] = median(seen[""]), median(seen[trick])
        figures[trick] = figure
        log(f"parse {hosts} {trick}: {figure['with_s']:.2f}s with, {figure['without_s']:.2f}s without, "
            f"saves {figure['saves_s']:.3f}s (CPU {figure['saves_cpu_s']:.3f}s; parse alone "
            f"{figure['parse_with_s']:.2f}s / {figure['parse_without_s']:.2f}s)")
    return {"hosts": hosts, "runs": runs, "target_s": target, "tricks": figures,
            "what": "with_s/without_s: interpreter start to exit; parse_*: load_inventory alone"}


def bench_help(runs: int) -> dict[str, Any]:
    figure = with_and_without("all", runs, lambda off: fleetctl(["--help"], off))
    return judged(figure, HELP_TARGET_S)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=1000, help="simulated fleet size (default 1000)")
    p.add_argument("--runs", type=int, default=7, help="runs per arm (default 7)")
    p.add_argument("--parse-hosts", type=int, default=10000, help="parse-only inventory size (default 10000)")
    p.add_argument("--parse-runs", type=int, default=3, help="runs per arm of the parse (default 3)")
    p.add_argument("--skip-parse", action="store_true", help="no parse-only figures")
    p.add_argument("--tricks", help=f"comma-separated subset of: {', '.join(TRICKS)}")
    p.add_argument("--quick", action="store_true", help="3 runs per arm, 1 parse run per arm")
    # scripts/bench-all.sh passes the same BENCH_ARGS to every benchmark: others' options are ignored.
    args, ignored = p.parse_known_args()
    if ignored:
        log(f"ignoring options meant for other benchmarks: {' '.join(ignored)}")
    if args.quick:
        args.runs, args.parse_runs = 3, 1
    tricks = args.tricks.split(",") if args.tricks else list(TRICKS)
    unknown = [t for t in tricks if t not in TRICKS]
    if unknown:
        p.error(f"unknown tricks: {', '.join(unknown)}")
    raise_nofile()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-speedups-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {
            "benchmark": "fleetctl speed tricks, with and without", "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg()[0], "threshold_share_of_target": THRESHOLD_SHARE,
            "tricks": TRICKS,
        }
        result["health"] = bench_fleet(work, args.hosts, args.runs, tricks)
        result["help_startup"] = bench_help(max(args.runs, 5))
        if not args.skip_parse:
            result["parse"] = bench_parse(work, work / f"fleet-{args.hosts}.yml", args.parse_hosts,
                                          args.parse_runs, tricks)
        material: dict[str, list[str]] = {t: [] for t in tricks}
        for path, figures in (("health warm", result["health"]["warm_cache"]),
                              ("health cold", result["health"]["cold_cache"]),
                              ("parse", (result.get("parse") or {}).get("tricks", {}))):
            for trick, figure in figures.items():
                if trick in material and figure["material"]:
                    material[trick].append(path)
        result["material_on"] = material
        result["load_avg_at_end"] = os.getloadavg()[0]
        result["elapsed_s"] = round(time.time() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
