"""``fleet-agent``: run the agent, take one sample, or run a simulated fleet.

argparse, not Typer: the agent is installed on every host and stays light. Every command imports
its modules inside its function (collectors, prometheus_client, the simulator), so that
``fleet-agent --help`` starts fast and ``run`` never loads the simulator unless its config asks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fleet_agent import __version__

if TYPE_CHECKING:
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
        return _sim_fleet(args)
    except ConfigError as exc:
        print(f"fleet-agent: {exc}", file=sys.stderr)
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


def _once(args: argparse.Namespace) -> int:
    from fleet_agent.daemon import build_agent, close_within, shutdown_pools
    from fleet_agent.sampler import DaemonThreadPool

    cfg = _load(args.config)
    if args.scenario:
        from fleet_agent.sim.lookup import resolve_scenario

        cfg = cfg.with_scenario(str(resolve_scenario(args.scenario)), args.host_index)
    pool = DaemonThreadPool(32, "collector")
    try:
        chips = _chips(cfg)
        # One sample: drain XID events inline rather than start an event thread.
        rt = build_agent(cfg, executor=pool, chips=chips, xid_events="poll")
        report = rt.sampler.sample_once()
        if chips is not None:
            chips.release_hangs()
        close_within([rt], 1.0)
    finally:
        shutdown_pools(pool)
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_table(report))
    return 0


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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
