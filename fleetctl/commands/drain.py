"""``fleetctl drain | undrain | status``: parse, call fleetctl.drain, render.

Exit codes: 0 all done, 1 some host failed or was refused, 2 usage or configuration error.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetctl.commands import add
from fleetctl.commands.params import DbOpt, InventoryOpt, JsonOpt, MaxUnavailableOpt, PatternArg, ScopeOpt

if TYPE_CHECKING:
    from fleetctl.drain import Outcome


def register(app: typer.Typer) -> None:
    add(app, "drain", drain)
    add(app, "undrain", undrain)
    add(app, "status", status)


def echo_err(line: str) -> None:
    """Progress lines of the core (plans, hosts as they finish; host names and reasons in them) go to
    stderr, made safe to print."""
    from fleetctl.views.text import echo

    echo(line, err=True)


def show_outcomes(outcomes: Sequence[Outcome], as_json: bool, extra: dict[str, Any] | None = None) -> int:
    """Print the per-host outcomes; 0 when every host is fine, else 1."""
    if as_json:
        from fleetctl.views.console import print_json

        print_json({**(extra or {}), "hosts": [o.to_dict() for o in outcomes]})
    else:
        from fleetctl.views.drain import print_outcomes

        print_outcomes(outcomes)
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
) -> int:
    """Take hosts out of service through their scheduler (Slurm, Kubernetes or none)."""
    from fleetctl import drain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.validation import Size, require_reason

    opts = core.DrainOptions(reason=require_reason(reason), wait=wait, timeout_s=timeout, dry_run=dry_run,
                             force=force, max_unavailable=Size.parse(max_unavailable, "--max-unavailable"))
    with drain_context(inventory, db, write=not dry_run) as ctx:
        outcomes = core.drain(ctx.conn, ctx.select(pattern), ctx.pool(scope), ctx.schedulers, opts,
                              echo=echo_err)
    if dry_run:
        typer.echo("dry run: nothing changed", err=True)
    return show_outcomes(outcomes, as_json)


def undrain(
    pattern: PatternArg,
    force: Annotated[bool, typer.Option("--force", help="Undrain even if the agent reports the host "
                                        "unhealthy, or it is quarantined")] = False,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Put hosts back into service: only drains fleetctl made, only healthy hosts unless --force."""
    from fleetctl import drain as core
    from fleetctl.commands.context import drain_context

    with drain_context(inventory, db) as ctx:
        health = functools.partial(core.agent_health, inventory=list(ctx.inventory.hosts.values()))
        outcomes = core.undrain(ctx.conn, ctx.select(pattern), ctx.schedulers, health, force=force,
                                echo=echo_err)
    return show_outcomes(outcomes, as_json)


def status(
    pattern: Annotated[str, typer.Argument(help="Host name or Ansible pattern")] = "all",
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    history: Annotated[int, typer.Option("--history", help="Also show the last N audit entries "
                                         "of these hosts", min=0)] = 0,
) -> int:
    """Per host: scheduler state, fleetctl state, reason, who and when, running workloads."""
    from fleetctl import drain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.state import hosts as hstate

    with drain_context(inventory, db, write=False) as ctx:
        hosts = ctx.select(pattern)
        rows = core.status(ctx.conn, hosts, ctx.schedulers)
        entries = [e for h in hosts for e in hstate.audit(ctx.conn, h.name, history)] if history else []
    entries.sort(key=lambda e: e.at)
    if as_json:
        from fleetctl.views.console import print_json

        doc: dict[str, Any] = {"hosts": [r.to_dict() for r in rows]}
        if history:
            doc["audit"] = [vars(e) for e in entries]
        print_json(doc)
        return 0
    from fleetctl.views.drain import print_status

    print_status(rows, entries)
    return 0
