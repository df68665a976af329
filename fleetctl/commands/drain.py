"""``fleetctl drain | undrain | status``: parse, call fleetctl.drain, render.

Exit codes: 0 all done, 1 some host failed or was refused, 2 usage or configuration error.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetctl.commands import add
from fleetctl.commands.params import (
    DbOpt,
    InventoryOpt,
    JsonOpt,
    MaxUnavailableOpt,
    OutputOpt,
    PatternsArg,
    PatternsRequiredArg,
    ScopeOpt,
)

if TYPE_CHECKING:
    from fleetctl.drain import Outcome
    from fleetctl.views.output import OutputFormat


def register(app: typer.Typer) -> None:
    add(app, "drain", drain)
    add(app, "undrain", undrain)
    add(app, "status", status)


def echo_err(line: str) -> None:
    """Progress lines of the core (plans, hosts as they finish; host names and reasons in them) go to
    stderr, made safe to print."""
    from fleetctl.views.text import echo

    echo(line, err=True)


def show_outcomes(outcomes: Sequence[Outcome], fmt: OutputFormat, extra: dict[str, Any] | None = None) -> int:
    """Print the per-host outcomes in ``fmt``; 0 when every host is fine, else 1."""
    from fleetctl.views.output import emit

    def table(wide: bool) -> None:
        from fleetctl.views.drain import print_outcomes

        print_outcomes(outcomes)

    emit(fmt, doc=lambda: {**(extra or {}), "hosts": [o.to_dict() for o in outcomes]},
         names=lambda: [o.host for o in outcomes], table=table)
    return 0 if all(o.ok for o in outcomes) else 1


def drain(
    patterns: PatternsRequiredArg,
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
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Take hosts out of service through their scheduler (Slurm, Kubernetes or none)."""
    from fleetctl import drain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.inventory import join_patterns
    from fleetctl.validation import Size, require_reason
    from fleetctl.views.output import resolve

    fmt = resolve(output, as_json=as_json)
    opts = core.DrainOptions(reason=require_reason(reason), wait=wait, timeout_s=timeout, dry_run=dry_run,
                             force=force, max_unavailable=Size.parse(max_unavailable, "--max-unavailable"))
    with drain_context(inventory, db, write=not dry_run) as ctx:
        outcomes = core.drain(ctx.conn, ctx.select(join_patterns(patterns)), ctx.pool(scope), ctx.schedulers,
                              opts, echo=echo_err)
    if dry_run:
        typer.echo("dry run: nothing changed", err=True)
    return show_outcomes(outcomes, fmt)


def undrain(
    patterns: PatternsRequiredArg,
    force: Annotated[bool, typer.Option("--force", help="Undrain even if the agent reports the host "
                                        "unhealthy, or it is quarantined")] = False,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Put hosts back into service: only drains fleetctl made, only healthy hosts unless --force."""
    from fleetctl import drain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.inventory import join_patterns
    from fleetctl.views.output import resolve

    fmt = resolve(output, as_json=as_json)
    with drain_context(inventory, db) as ctx:
        health = functools.partial(core.agent_health, inventory=list(ctx.inventory.hosts.values()))
        outcomes = core.undrain(ctx.conn, ctx.select(join_patterns(patterns)), ctx.schedulers, health,
                                force=force, echo=echo_err)
    return show_outcomes(outcomes, fmt)


def status(
    patterns: PatternsArg = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    history: Annotated[int, typer.Option("--history", help="Also show the last N audit entries "
                                         "of these hosts", min=0)] = 0,
) -> int:
    """Per host: scheduler state, fleetctl state, reason, who and when, running workloads."""
    from fleetctl import drain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.inventory import join_patterns
    from fleetctl.state import hosts as hstate
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=as_json)
    with drain_context(inventory, db, write=False) as ctx:
        hosts = ctx.select(join_patterns(patterns))
        rows = core.status(ctx.conn, hosts, ctx.schedulers)
        entries = [e for h in hosts for e in hstate.audit(ctx.conn, h.name, history)] if history else []
    entries.sort(key=lambda e: e.at)

    def doc() -> dict[str, Any]:
        out: dict[str, Any] = {"hosts": [r.to_dict() for r in rows]}
        if history:
            out["audit"] = [vars(e) for e in entries]
        return out

    def table(wide: bool) -> None:
        from fleetctl.views.drain import print_status

        print_status(rows, entries, wide=wide)

    emit(fmt, doc=doc, names=lambda: [r.host for r in rows], table=table)
    return 0
