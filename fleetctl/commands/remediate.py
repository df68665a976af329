"""``fleetctl remediate``: observe the fleet, plan remediations through the policy, and act on them.

Exit codes (a single round: plan only or --apply): 0 nothing failed and no fleet-wide stop; 1 a
remediation failed or quarantined its host, the fleet-wide stop is on, or another loop holds the
lease; 2 usage or configuration error (a policy error names the file and the field); 130 stopped
between two steps of a remediation (the next run resumes it). --watch ends 0 when stopped between
rounds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetctl.commands import add
from fleetctl.commands.params import (
    DbOpt,
    InventoryOpt,
    JsonOpt,
    OutputOpt,
    PatternsArg,
    PrometheusTenantOpt,
    PrometheusTokenFileOpt,
    PrometheusUrlOpt,
)

if TYPE_CHECKING:
    from fleetctl.remediate.loop import RoundResult
    from fleetctl.report import FleetReport
    from fleetctl.views.output import OutputFormat

# A test hook, off unless set: as this step (drain, reset_gpu, ...) starts the loop says so on stderr
# and waits, so a test can SIGKILL it there and check that the next run resumes.
PAUSE_ENV = "FLEETCTL_TEST_REMEDIATE_PAUSE_AT"


def register(app: typer.Typer) -> None:
    add(app, "remediate", remediate)


class _Stop:
    """SIGINT/SIGTERM set a flag: the loop stops after the step in progress (never inside one)."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            if self._previous[sig] is not signal.SIG_IGN:
                signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.pressed:  # a second Ctrl-C: stop now (the record says where; the next run resumes)
            raise KeyboardInterrupt
        self.pressed = True
        print("fleetctl remediate: stopping after the step in progress (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.pressed and time.monotonic() < end:
            time.sleep(min(0.2, end - time.monotonic()))


@contextlib.contextmanager
def _database(db_path: Path | None) -> Iterator[tuple[Any, Path]]:
    from fleetctl.errors import state_database
    from fleetctl.state import db
    from fleetctl.state import remediation as rstate

    path = db_path or db.default_path()
    with state_database(path):
        conn = db.connect(path, schema=rstate.SCHEMA)
    try:
        db.require_writable(conn)  # every round records its observations
        with state_database():
            yield conn, path
    finally:
        conn.close()


def _pause_hook(step_name: str) -> Callable[[str, str], None]:
    def pause(step: str, host: str) -> None:
        if step == step_name:
            print(f"fleetctl remediate: paused at {step} ({host}) for {PAUSE_ENV}", file=sys.stderr,
                  flush=True)
            time.sleep(600)

    return pause


def remediate(
    patterns: PatternsArg = None,
    policy: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE", help="Remediation policy (YAML; default: the shipped one, "
        "fleetctl/remediate/default-policy.yaml)")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Act once: resume open remediations, start "
                                        "the planned ones")] = False,
    watch: Annotated[float | None, typer.Option(
        "--watch", metavar="SECONDS", min=1.0, help="Observe, plan and act every SECONDS until Ctrl-C "
        "(implies --apply); Ctrl-C stops after the step in progress")] = None,
    source: Annotated[str, typer.Option(
        "--source", help="agents (direct fan-out) or prometheus (the action label of "
        "fleet_health_check_failing; an agent without it reads none: reported only)")] = "agents",
    prometheus_url: PrometheusUrlOpt = None,
    prometheus_token_file: PrometheusTokenFileOpt = None,
    prometheus_tenant: PrometheusTenantOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.01, help="Per-agent timeout, seconds")] = 5.0,
    deadline: Annotated[float, typer.Option("--deadline", min=0.01,
                                            help="Overall deadline of one observation, seconds")] = 30.0,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", min=0, help="Seconds to wait for workloads to leave a host")] = 3600.0,
    repair_timeout: Annotated[float, typer.Option(
        "--repair-timeout", min=1, help="Seconds a repair playbook (a reboot) may take")] = 1800.0,
    verify_timeout: Annotated[float, typer.Option(
        "--verify-timeout", min=0, help="Burn-in: seconds to wait for the agent to report the host fit "
        "for work")] = 120.0,
    burn_in_level: Annotated[int, typer.Option(
        "--burn-in-level", metavar="1-4", min=1, max=4,
        help="Burn-in: DCGM run level after a repair (as fleetctl burn-in --level)")] = 1,
    allow_missing: Annotated[list[str] | None, typer.Option(
        "--allow-missing", metavar="CHECK",
        help="Burn-in: a check that may be missing without failing the burn-in: dcgm (recorded)")] = None,
    reprovision_playbook: Annotated[str, typer.Option(
        "--reprovision-playbook", help="The playbook of the reprovision step")] = "site.yml",
    extra_vars: Annotated[list[str] | None, typer.Option(
        "--extra-vars", "-e",
        help="To the repair playbooks: k=v, @file or a JSON object; repeatable")] = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Plan remediations for unhealthy hosts; with --apply (or --watch) drain, repair, burn in, undrain.

    Each round reads the fleet report, records one observation per host, and plans through the
    policy: hysteresis, flap damping, budgets shared with drain and maintain, and a fleet-wide stop.
    A failed step leaves the host drained and quarantined. One loop per state database (a lease);
    a loop killed at any step is resumed from its record by the next run.
    """
    from fleetctl import assets
    from fleetctl.burnin.gate import MAY_BE_MISSING
    from fleetctl.commands.health import PrometheusAccess, _collector
    from fleetctl.drain import current_user
    from fleetctl.errors import SourceUnavailable, UsageError
    from fleetctl.inventory import join_patterns, load_inventory
    from fleetctl.provision import parse_extra_vars, resolve_playbook
    from fleetctl.remediate import actions
    from fleetctl.remediate.lease_keeper import LeaseKeeper
    from fleetctl.remediate.loop import Engine
    from fleetctl.remediate.policy import default_policy, load_policy
    from fleetctl.schedulers import SchedulerFactory
    from fleetctl.state import remediation as rstate
    from fleetctl.state.runs import this_machine
    from fleetctl.validation import one_of
    from fleetctl.views.output import resolve

    fmt = resolve(output, as_json=as_json)
    if source not in ("agents", "prometheus"):
        raise UsageError(f"--source {source!r}: expected agents or prometheus")
    pol = load_policy(policy) if policy is not None else default_policy()
    missing = frozenset(one_of("--allow-missing", m.strip().lower(), MAY_BE_MISSING)
                        for m in allow_missing or ())
    acting = apply or watch is not None
    extra = list(extra_vars or [])
    parse_extra_vars(extra, Path.cwd())  # bad -e: exit 2 before anything is observed
    reprovision = str(resolve_playbook(reprovision_playbook, Path.cwd())) if acting else reprovision_playbook
    pattern = join_patterns(patterns)
    collect, _ = _collector(pattern, inventory, source,
                            PrometheusAccess(prometheus_url, prometheus_token_file, prometheus_tenant),
                            timeout, deadline, 512)
    inv = load_inventory(inventory)
    actor = current_user()
    with _database(db) as (conn, db_path), _Stop() as stop:
        keeper: LeaseKeeper | None = None
        holder = rstate.LeaseHolder(f"{this_machine()}:{os.getpid()}", actor, this_machine(), os.getpid())
        if acting:
            keeper = LeaseKeeper(db_path, holder)
            taken = keeper.take(conn)
            if taken is not None:
                _err(f"fleetctl remediate: took over the lease of {taken.describe()} (gone)")
        try:
            everyone = list(inv.hosts.values())
            steps = actions.FleetSteps(
                conn, inv.hosts, everyone, SchedulerFactory(inv.hosts.get), pol,
                actions.RemediateOptions(actor, drain_timeout, repair_timeout, reprovision, extra),
                actions.ansible_playbook_run(list(inv.sources), db_path),
                actions.burn_in_with(conn, everyone, list(inv.sources), timeout_s=verify_timeout,
                                     level=burn_in_level, allow_missing=missing),
                assets.playbooks_dir() / "remediate", echo=_err, loop_id=holder.id if acting else "")
            pause_at = os.environ.get(PAUSE_ENV)

            def stopped() -> bool:
                return stop.pressed or (keeper is not None and keeper.lost is not None)

            # Writes are fenced by the lease (a loop presumed dead writes nothing more); each new start
            # and each step is preceded by a fresh observation.
            engine = Engine(pol, rstate.SqlStore(conn, holder=holder.id if acting else None), steps,
                            actor=actor, interval_s=watch or 30.0, echo=_err, stop=stopped,
                            on_step=_pause_hook(pause_at) if pause_at else None,
                            rows_now=(lambda: _whole(collect()).hosts) if acting else None)
            # Planning only while a loop runs: its observations are its own (ours would hasten them).
            # (the lease's expiry is the database's clock, as the loop that holds it wrote it)
            record = (acting or (lease := rstate.current_lease(conn)) is None
                      or not lease.live(rstate.db_now(conn)))
            code = 0
            result: RoundResult | None = None
            while True:
                began = time.monotonic()
                try:
                    report = _whole(collect())
                except SourceUnavailable as exc:
                    if result is None or watch is None:  # the first round's failure is the command's
                        raise
                    # No observation this round: nothing is decided on what was not seen (a host
                    # missing from a failed round must not count as unreachable); the next round asks.
                    _err(f"fleetctl remediate: round skipped, no observation: {exc.one_line()}")
                    if lost := (keeper.lost if keeper is not None else None) or engine.lease_lost:
                        _err(f"fleetctl remediate: lease lost: {lost}; stopped")
                        return 1
                    if stop.pressed:
                        break
                    stop.sleep(max(0.0, watch - (time.monotonic() - began)))
                    continue
                result = engine.round(report.hosts, time.time(), apply=acting, record=record)
                _show(result, fmt, apply=acting, watching=watch is not None)
                code = max(code, _code(result))
                lost = (keeper.lost if keeper is not None else None) or engine.lease_lost
                if lost:  # another loop holds the state database now: a failure, not a clean stop
                    _err(f"fleetctl remediate: lease lost: {lost}; stopped")
                    return 1
                if watch is None or result.interrupted or stop.pressed:
                    break
                stop.sleep(max(0.0, watch - (time.monotonic() - began)))  # one round every SECONDS
            if result is not None and result.interrupted:
                return 130  # a remediation stopped between two steps: the next run resumes it
            return code if watch is None else 0  # a loop stopped between rounds: a clean stop
        finally:
            if keeper is not None:
                keeper.release(conn)


def _whole(report: FleetReport) -> FleetReport:
    """``report``, if remediation may decide on it: not one built from answers that came with warnings
    (a Thanos store or a vmstorage node down): a chip whose series were on it reads as missing, and
    the policy would reboot a host for it."""
    from fleetctl.errors import SourceUnavailable

    if report.warnings:
        first = report.warnings[0]
        raise SourceUnavailable(f"Prometheus answered with warnings ({first['query']}: {first['warning']}): "
                                "a partial view of the fleet, nothing is decided on it")
    return report


def _err(line: str) -> None:
    from fleetctl.views.text import echo

    echo(line, err=True)


def _code(result: RoundResult) -> int:
    from fleetctl.errors import EXIT_USAGE
    from fleetctl.remediate.loop import HELD, WAITING_LOCK

    if result.blind is not None:  # it could not see the fleet to go on: its source is down or partial
        return EXIT_USAGE

    left_open = ("interrupted", HELD, WAITING_LOCK)
    if result.plan.fleet_stopped or any(not f.ok and f.state not in left_open for f in result.finished):
        return 1
    return 0


def _show(result: RoundResult, fmt: OutputFormat, *, apply: bool, watching: bool) -> None:
    from fleetctl.views.output import OutputFormat, emit

    if fmt is OutputFormat.yaml and watching:
        print("---", flush=True)
    if fmt is OutputFormat.json and watching:
        import json

        print(json.dumps(result.to_dict(), separators=(",", ":")), flush=True)
        return

    def table(wide: bool) -> None:
        from fleetctl.views.remediate import print_round

        print_round(result, apply=apply)

    emit(fmt, doc=result.to_dict, names=lambda: [a.host for a in result.plan.actions], table=table)
