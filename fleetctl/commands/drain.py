"""``fleetctl drain | undrain | status | maintain``: parse, call fleetctl.drain / fleetctl.maintain, render.

Exit codes: 0 all done, 1 some host failed or was refused, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import sqlite3

    from fleetctl.drain import HostStatus, Outcome
    from fleetctl.inventory import Host, Inventory
    from fleetctl.schedulers import SchedulerFactory

PatternArg = Annotated[str, typer.Argument(help="Host name or Ansible pattern (gpu_nodes:&rack1, h100-*)")]
InventoryOpt = Annotated[str | None, typer.Option(
    "-i", "--inventory", help="Inventory (default: $FLEETCTL_INVENTORY, else ansible.cfg)")]
DbOpt = Annotated[Path | None, typer.Option("--db", help="State database (default: $FLEETCTL_DB)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
MaxUnavailableOpt = Annotated[str, typer.Option(
    "--max-unavailable", metavar="N|N%",
    help="Most hosts out of service at once in the scope, counting hosts already drained or down")]
ScopeOpt = Annotated[str | None, typer.Option(
    "--scope", metavar="GROUP", help="Count max-unavailable within this inventory group (default: fleet)")]


def register(app: typer.Typer) -> None:
    app.command("drain")(drain)
    app.command("undrain")(undrain)
    app.command("status")(status)
    app.command("maintain")(maintain)


class _Ctx:
    """What every command loads: the inventory, the state database, the scheduler factory."""

    def __init__(self, command: str, inventory: str | None, db_path: Path | None) -> None:
        import sqlite3

        from fleetctl.errors import UsageError
        from fleetctl.inventory import load_inventory
        from fleetctl.schedulers import SchedulerFactory
        from fleetctl.state import db
        from fleetctl.state import hosts as hstate

        self.command = command
        self.inventory: Inventory = load_inventory(inventory)
        self.db_path = db_path or db.default_path()
        try:
            self.conn: sqlite3.Connection = db.connect(self.db_path, schema=hstate.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"state database {self.db_path}: {exc}") from None
        self.schedulers: SchedulerFactory = SchedulerFactory(self.inventory.hosts.get)

    def select(self, pattern: str) -> list[Host]:
        return self.inventory.select(pattern)

    def pool(self, scope: str | None) -> list[Host]:
        from fleetctl.errors import UsageError

        if scope is None:
            return list(self.inventory.hosts.values())
        if scope not in self.inventory.groups:
            raise UsageError(f"--scope {scope!r}: no such group in {self.inventory.label}")
        return self.inventory.select(scope)


def _run(command: str, body: Any) -> None:
    """Run ``body``; a FleetctlError becomes its one-line message and exit code.

    A host whose state changed under us (another fleetctl) is a refusal (exit 1); a database that
    cannot be read or written is a configuration problem (exit 2). Neither shows a traceback.
    """
    import sqlite3

    from fleetctl.errors import EXIT_PROBLEMS, EXIT_USAGE, FleetctlError, first_line
    from fleetctl.state.hosts import TransitionError

    try:
        code = body()
    except FleetctlError as exc:
        typer.echo(f"fleetctl {command}: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except TransitionError as exc:
        typer.echo(f"fleetctl {command}: state conflict: {exc}", err=True)
        raise typer.Exit(EXIT_PROBLEMS) from None
    except sqlite3.Error as exc:
        typer.echo(f"fleetctl {command}: state database: {first_line(exc)}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(code)


def _console() -> Any:
    from rich.console import Console

    # Piped output (scripts, CI logs) gets wide lines rather than cells folded at 80 columns.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


def _outcomes(outcomes: Sequence[Outcome], as_json: bool, extra: dict[str, Any] | None = None) -> int:
    if as_json:
        doc: dict[str, Any] = {**(extra or {}), "hosts": [o.to_dict() for o in outcomes]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        from rich.table import Table

        if not outcomes:
            return 0
        table = Table(box=None, pad_edge=False)
        for col in ("HOST", "RESULT", "STATE", "MESSAGE"):
            table.add_column(col)
        for o in outcomes:
            table.add_row(o.host, "[green]ok[/]" if o.ok else "[red]FAILED[/]", o.state, o.message)
        _console().print(table)
    return 0 if all(o.ok for o in outcomes) else 1


def drain(
    pattern: PatternArg,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why (required); recorded and "
                                               "shown in the scheduler as 'fleetctl:<user>: <text>'")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until no workload runs")] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait before drain_failed",
                                           min=0)] = 3600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing")] = False,
    force: Annotated[bool, typer.Option("--force", help="Drain even past max-unavailable or a live "
                                        "provision/maintain host lock (an emergency); never overrides a "
                                        "drain someone else set")] = False,
    max_unavailable: MaxUnavailableOpt = "1",
    scope: ScopeOpt = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take hosts out of service through their scheduler (Slurm, Kubernetes or none)."""

    def body() -> int:
        from fleetctl import drain as core
        from fleetctl.errors import UsageError

        if reason is None or not reason.strip():
            raise UsageError("a reason is required: --reason TEXT")
        limit = core.Size.parse(max_unavailable, "--max-unavailable")
        ctx = _Ctx("drain", inventory, db)
        opts = core.DrainOptions(reason=reason, wait=wait, timeout_s=timeout, dry_run=dry_run, force=force,
                                 max_unavailable=limit)
        outcomes = core.drain(ctx.conn, ctx.select(pattern), ctx.pool(scope), ctx.schedulers, opts,
                              echo=_echo_err)
        if dry_run:
            typer.echo("dry run: nothing changed", err=True)
        return _outcomes(outcomes, as_json)

    _run("drain", body)


def undrain(
    pattern: PatternArg,
    force: Annotated[bool, typer.Option("--force", help="Undrain even if the agent reports the host "
                                        "unhealthy, or it is quarantined")] = False,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put hosts back into service: only drains fleetctl made, only healthy hosts unless --force."""

    def body() -> int:
        from fleetctl import drain as core

        ctx = _Ctx("undrain", inventory, db)
        outcomes = core.undrain(ctx.conn, ctx.select(pattern), ctx.schedulers, core.agent_health, force=force,
                                echo=_echo_err)
        return _outcomes(outcomes, as_json)

    _run("undrain", body)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(
    pattern: Annotated[str, typer.Argument(help="Host name or Ansible pattern")] = "all",
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    history: Annotated[int, typer.Option("--history", help="Also show the last N audit entries "
                                         "of these hosts", min=0)] = 0,
) -> None:
    """Per host: scheduler state, fleetctl state, reason, who and when, running workloads."""

    def body() -> int:
        from fleetctl import drain as core
        from fleetctl.state import hosts as hstate

        ctx = _Ctx("status", inventory, db)
        hosts = ctx.select(pattern)
        rows = core.status(ctx.conn, hosts, ctx.schedulers)
        entries = [e for h in hosts for e in hstate.audit(ctx.conn, h.name, history)] if history else []
        if as_json:
            doc: dict[str, Any] = {"hosts": [r.to_dict() for r in rows]}
            if history:
                doc["audit"] = [vars(e) for e in sorted(entries, key=lambda e: e.at)]
            typer.echo(json.dumps(doc, indent=2))
            return 0
        _status_table(rows)
        for e in sorted(entries, key=lambda e: e.at):
            typer.echo(f"{_when(e.at)} {e.host} {e.from_state} -> {e.to_state} by {e.actor}"
                       f"{': ' + e.reason if e.reason else ''}{' (' + e.note + ')' if e.note else ''}")
        return 0

    _run("status", body)


def _status_table(rows: Sequence[HostStatus]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("HOST", "SCHEDULER", "SCHED STATE", "FLEETCTL", "REASON", "BY", "SINCE", "WORKLOADS", "NOTE"):
        table.add_column(col)
    for r in rows:
        reason = r.reason or r.scheduler_reason or ""
        work = ", ".join(r.workloads[:3]) + (f" +{len(r.workloads) - 3}" if len(r.workloads) > 3 else "")
        table.add_row(r.host, r.scheduler, r.scheduler_state, r.state, reason, r.actor or "", _when(r.since),
                      work, r.note or "")
    _console().print(table)


def maintain(
    pattern: PatternArg,
    playbook: Annotated[str, typer.Option("--playbook", "-p",
                                          help="A playbook name in playbooks/ or a path")],
    batch: Annotated[str, typer.Option("--batch", metavar="N|N%", help="Hosts per batch")] = "1",
    max_unavailable: MaxUnavailableOpt = "1",
    max_failures: Annotated[int, typer.Option("--max-failures", help="Stop starting batches once more "
                                              "hosts than this have failed")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only")] = False,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Drain reason "
                                               "(default: maintain PLAYBOOK (run ID))")] = None,
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", min=0,
                                                 help="Seconds to wait for workloads to leave")] = 3600.0,
    verify_timeout: Annotated[float, typer.Option(
        "--verify-timeout", min=0, help="Seconds to wait for agents to report healthy")] = 120.0,
    scope: ScopeOpt = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rolling maintenance: per batch drain (wait) → provision → verify health → undrain.

    A host failing provisioning or verification stays drained, marked quarantined.
    """

    def body() -> int:
        from fleetctl import drain as core
        from fleetctl import maintain as mcore
        from fleetctl.provision import resolve_playbook

        playbook_path = resolve_playbook(playbook, Path.cwd())  # an unknown playbook: exit 2, nothing drained
        opts = mcore.MaintainOptions(
            playbook=str(playbook_path), reason=reason or "", batch=core.Size.parse(batch, "--batch"),
            max_unavailable=core.Size.parse(max_unavailable, "--max-unavailable"), max_failures=max_failures,
            dry_run=dry_run, drain_timeout_s=drain_timeout, verify_timeout_s=verify_timeout,
        )
        ctx = _Ctx("maintain", inventory, db)
        provisioner = mcore.ansible_provisioner(list(ctx.inventory.sources), ctx.db_path)
        result = mcore.maintain(ctx.conn, ctx.select(pattern), ctx.pool(scope), ctx.schedulers, provisioner,
                                core.agent_health, opts, echo=_echo_err)
        if dry_run:
            typer.echo("dry run: nothing changed", err=True)
            return 0
        if result.stopped:
            typer.echo(f"fleetctl maintain: {result.stopped}", err=True)
        code = _outcomes(result.outcomes, as_json, {"run_id": result.run_id, "stopped": result.stopped})
        return code if result.stopped is None else 1

    _run("maintain", body)


