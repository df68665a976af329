"""``fleet-agent``: run the agent, take one sample, check this host, or run a simulated fleet.

argparse, not Typer: the agent is installed on every host and stays light. Every command imports
its modules inside its function (collectors, prometheus_client, the simulator), so that
``fleet-agent --help`` starts fast and ``run`` never loads the simulator unless its config asks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fleet_agent import __version__
from fleet_agent.printable import printable

if TYPE_CHECKING:
    from fleet_agent.collectors.nvml_record import NvmlRecorder
    from fleet_agent.config import AgentConfig
    from fleet_agent.daemon import ChipSource
    from fleet_agent.schema import NodeReport

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleet-agent",
        description="Node agent of fleetctl: samples GPU/TPU health, serves JSON and Prometheus metrics.",
    )
    p.add_argument("--version", action="version", version=f"fleet-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="sample in the background and serve /healthz, /v1/node, /metrics")
    run.add_argument("--config", metavar="FILE",
                     help="YAML config (default /etc/fleet-agent/config.yaml when it exists)")

    once = sub.add_parser("once", help="take one sample and print it (for debugging a host)")
    once.add_argument("--json", action="store_true", help="print the JSON node report")
    once.add_argument("--config", metavar="FILE", help="YAML config")
    once.add_argument("--scenario", metavar="FILE", help="sample simulated chips from this scenario")
    once.add_argument("--host-index", type=int, default=0, metavar="I",
                      help="which host of the scenario (default 0)")
    nvml_io = once.add_mutually_exclusive_group()
    nvml_io.add_argument("--record-nvml", metavar="FILE",
                         help="also write every NVML call and its answer to FILE (a bug report, a test "
                              "fixture: scripts/hw-validate.sh)")
    nvml_io.add_argument("--replay-nvml", metavar="FILE",
                         help="read the chips from a recording made by --record-nvml instead of NVML")

    check = sub.add_parser(
        "check", help="one sample, its problems one per line; exit 0 healthy or degraded, 1 unhealthy, "
                      "2 could not tell (Slurm's HealthCheckProgram, NHC)")
    check.add_argument("--config", metavar="FILE",
                       help="YAML config (default /etc/fleet-agent/config.yaml when it exists)")
    check.add_argument("--scenario", metavar="FILE", help="sample simulated chips from this scenario")
    check.add_argument("--host-index", type=int, default=0, metavar="I",
                       help="which host of the scenario (default 0)")
    check.add_argument("--timeout", type=float, metavar="S",
                       help="deadline of each collector call (default: the config's collector_timeout_s)")
    check.add_argument("--slurm", action="store_true",
                       help="drain this Slurm node when unhealthy (Reason=\"fleet-agent: ...\"); resume it "
                            "when healthy if the drain is fleet-agent's; could-not-tell changes nothing")
    check.add_argument("--node-name", metavar="NAME",
                       help="Slurm node name for --slurm (default $SLURMD_NODENAME, else hostname -s)")

    sim = sub.add_parser("sim-fleet", help="N simulated agents in one process on 127.0.0.1")
    sim.add_argument("--hosts", type=int, required=True, metavar="N")
    sim.add_argument("--base-port", type=int, required=True, metavar="P",
                     help="agents listen on ports P .. P+N-1")
    sim.add_argument("--scenario", metavar="FILE", default="demo",
                     help="scenario file, or the name of a shipped one (default: demo)")
    sim.add_argument("--write-inventory", metavar="FILE", help="write an Ansible YAML inventory of the fleet")
    sim.add_argument("--interval", type=float, metavar="S",
                     help="sampling interval (default: 5 s, longer for large fleets)")
    sim.add_argument("--token", metavar="T",
                     help="require this bearer token on /v1/node and /metrics (visible in ps: prefer "
                          "token_file in --config); --write-inventory then carries it, mode 0600")
    sim.add_argument("--config", metavar="FILE", help="YAML config for thresholds, timeouts, health")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fleet_agent.config import ConfigError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "once":
            return _once(args)
        if args.command == "check":
            return _check(args)
        return _sim_fleet(args)
    except ConfigError as exc:
        print(f"fleet-agent: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `fleet-agent once | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _load(path: str | None) -> AgentConfig:
    from fleet_agent.config import load_config

    return load_config(path)


def _chips(cfg: AgentConfig) -> ChipSource | None:
    """The simulated host a config's ``simulation:`` section names, else None (this host's chips).
    The daemon takes it as a ChipSource and never imports the simulator itself."""
    if cfg.simulation is None:
        return None
    from fleet_agent.sim.lookup import simulated_host

    return simulated_host(cfg.simulation.scenario, cfg.simulation.host_index, cfg.source)


def _run(args: argparse.Namespace) -> int:
    from fleet_agent.daemon import run_agent

    cfg = _load(args.config)
    return run_agent(cfg, _chips(cfg))


def _load_for_sample(args: argparse.Namespace) -> AgentConfig:
    """The config, pointed at ``--scenario``'s host when one is given (``once``, ``check``)."""
    cfg = _load(args.config)
    if args.scenario:
        from fleet_agent.sim.lookup import resolve_scenario

        cfg = cfg.with_scenario(str(resolve_scenario(args.scenario)), args.host_index)
    return cfg


def _once(args: argparse.Namespace) -> int:
    from fleet_agent.check import take_sample

    cfg = _load_for_sample(args)
    recorder = _nvml_io(args)
    if args.replay_nvml:
        from dataclasses import replace

        cfg = replace(cfg, collectors=("nvml",), simulation=None)
    report = take_sample(cfg, _chips(cfg))
    if recorder is not None:
        recorder.save(args.record_nvml)
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_table(report))
    return 0


def _nvml_io(args: argparse.Namespace) -> NvmlRecorder | None:
    """``--record-nvml``: a recorder in front of the real pynvml; ``--replay-nvml``: a recording
    in its place. Either way the collector's own ``import pynvml`` picks it up."""
    from fleet_agent.config import ConfigError

    if args.scenario and (args.record_nvml or args.replay_nvml):
        raise ConfigError("--scenario: simulated chips do not go through pynvml; "
                          "drop --record-nvml/--replay-nvml")
    if args.record_nvml:
        from fleet_agent.collectors.nvml_record import NvmlRecorder

        target = Path(args.record_nvml)
        if not target.parent.is_dir():
            raise ConfigError(f"--record-nvml: {target.parent} is not a directory")
        try:
            return NvmlRecorder.install()
        except ImportError:
            raise ConfigError("--record-nvml: nvidia-ml-py is not installed "
                              "(pip install 'fleetctl-agent[nvml]')") from None
    if args.replay_nvml:
        from fleet_agent.sim.nvml_replay import NvmlReplay, RecordingError

        try:
            NvmlReplay.load(args.replay_nvml).install()
        except RecordingError as exc:
            raise ConfigError(f"--replay-nvml: {exc}") from None
    return None


def _check(args: argparse.Namespace) -> int:
    """``fleet-agent check``: never a traceback and never exit 1 for a failure of its own (1 means
    unhealthy to whoever runs it): anything that goes wrong before a verdict exits 2."""
    from fleet_agent import check
    from fleet_agent.config import ConfigError

    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise ConfigError("--timeout: expected a positive number of seconds")
    node = args.node_name or check.default_node_name()
    if args.slurm and not check.valid_node_name(node):
        raise ConfigError(f"--node-name: {node!r} is not a single Slurm node name "
                          "(letters, digits, '.', '_', '-')")
    try:
        cfg = _load_for_sample(args)
        result = check.run_check(cfg, _chips(cfg), timeout_s=args.timeout)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a health check's crash is "could not tell", said in one line
        print(f"fleet-agent check: {type(exc).__name__}: {printable(str(exc))}", file=sys.stderr)
        return check.EXIT_UNKNOWN
    for line in result.lines():
        print(line)
    sys.stdout.flush()
    if args.slurm:
        try:
            done = check.slurm_act(result, node)
            if done is not None:
                print(f"fleet-agent check: slurm: {printable(done)}", file=sys.stderr)
        except check.SlurmActionError as exc:
            print(f"fleet-agent check: slurm: {node}: {printable(str(exc))}", file=sys.stderr)
    return result.code


def _sim_fleet(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fleet_agent.config import ConfigError
    from fleet_agent.sim.fleet import run_sim_fleet
    from fleet_agent.sim.lookup import resolve_scenario

    cfg = _load(args.config) if args.config else _load_defaults()
    if args.token is not None:
        if not args.token.strip():
            raise ConfigError("--token: must not be empty")
        cfg = replace(cfg, token=args.token.strip())
    if args.interval is not None and not args.interval > 0:
        raise ConfigError("--interval: expected a positive number")
    if args.interval is not None and args.interval <= cfg.collector_timeout_s:
        raise ConfigError(f"--interval: must be longer than collector_timeout_s ({cfg.collector_timeout_s})")
    return run_sim_fleet(cfg, scenario=str(resolve_scenario(args.scenario)), hosts=args.hosts,
                         base_port=args.base_port, interval_s=args.interval, inventory=args.write_inventory)


def _load_defaults() -> AgentConfig:
    from fleet_agent.config import AgentConfig

    # sim-fleet never reads the host's /etc config: a demo must not pick up production settings.
    return AgentConfig()


def render_table(report: NodeReport) -> str:
    """A plain text table of one report (no rich on hosts)."""
    lines = [
        f"host {report.host}  status {report.status.value}  chips {len(report.chips)}"
        + (f"/{report.chips_expected}" if report.chips_expected is not None else "")
        + (f"  driver {report.driver_version}" if report.driver_version else "")
        + (f"  cuda {report.cuda_driver_version}" if report.cuda_driver_version else "")
        + ("  DRAINED" + (f" ({report.drained_reason})" if report.drained_reason else "")
           if report.drained else ""),
    ]
    h = report.host_metrics
    host_bits = [f"cpu {h.cpu_pct:.0f}%" if h.cpu_pct is not None else "",
                 f"mem {h.memory_used_bytes / h.memory_total_bytes:.0%}"
                 if h.memory_used_bytes is not None and h.memory_total_bytes else "",
                 f"load {h.load1:.2f}" if h.load1 is not None else "",
                 f"up {h.uptime_s / 86400:.1f}d" if h.uptime_s is not None else ""]
    if any(host_bits):
        lines.append("host " + "  ".join(b for b in host_bits if b))
    rows = [("CHIP", "KIND", "MODEL", "STATUS", "TEMP", "UTIL", "MEM", "POWER", "PROBLEMS")]
    for c in report.chips:
        mem = "-"
        if c.memory_used_bytes is not None and c.memory_total_bytes:
            mem = f"{c.memory_used_bytes / c.memory_total_bytes:.0%}"
        problems = "; ".join(f"{p.check}: {p.message}" for p in c.problems)
        if c.error and not problems:
            problems = c.error
        rows.append((
            str(c.index), c.kind, c.model, c.status.value + (" (stale)" if c.stale else ""),
            "-" if c.temperature_c is None else f"{c.temperature_c:.0f}C",
            "-" if c.utilization_pct is None else f"{c.utilization_pct:.0f}%",
            mem,
            "-" if c.power_w is None else f"{c.power_w:.0f}W",
            problems or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1])
    for p in report.problems:
        lines.append(f"node: {p.severity.value} {p.check}: {p.message} (action: {p.action.value})")
    for col in report.collectors:
        if not col.ok:
            lines.append(f"collector {col.name}: {col.error}")
    # Model names, messages and reasons come from the driver, files, scenarios: shown, never obeyed.
    return "\n".join(printable(line) for line in lines)


if __name__ == "__main__":
    sys.exit(main())
