"""``fleetctl maintain``: parse, call fleetctl.maintain, render.

Exit codes: 0 every host maintained, 1 some host failed or the rollout stopped, 2 usage or
configuration error (nothing drained).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from fleetctl.commands import add
from fleetctl.commands.drain import echo_err, show_outcomes
from fleetctl.commands.params import (
    DbOpt,
    InventoryOpt,
    JsonOpt,
    MaxUnavailableOpt,
    OutputOpt,
    PatternsRequiredArg,
    ScopeOpt,
)


def register(app: typer.Typer) -> None:
    add(app, "maintain", maintain)


def maintain(
    patterns: PatternsRequiredArg,
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
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Rolling maintenance: per batch drain (wait) → provision → verify health → undrain.

    A host failing provisioning or verification stays drained, marked quarantined.
    """
    from fleetctl import maintain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.drain import agent_health
    from fleetctl.inventory import join_patterns
    from fleetctl.provision import resolve_playbook
    from fleetctl.validation import Size
    from fleetctl.views.output import resolve

    fmt = resolve(output, as_json=as_json)

    playbook_path = resolve_playbook(playbook, Path.cwd())  # an unknown playbook: exit 2, nothing drained
    opts = core.MaintainOptions(
        playbook=str(playbook_path), reason=reason or "", batch=Size.parse(batch, "--batch"),
        max_unavailable=Size.parse(max_unavailable, "--max-unavailable"), max_failures=max_failures,
        dry_run=dry_run, drain_timeout_s=drain_timeout, verify_timeout_s=verify_timeout,
    )
    with drain_context(inventory, db, write=not dry_run) as ctx:
        provisioner = core.ansible_provisioner(list(ctx.inventory.sources), ctx.db_path)
        health = functools.partial(agent_health, inventory=list(ctx.inventory.hosts.values()))
        result = core.maintain(ctx.conn, ctx.select(join_patterns(patterns)), ctx.pool(scope), ctx.schedulers,
                               provisioner, health, opts, echo=echo_err)
    if dry_run:
        typer.echo("dry run: nothing changed", err=True)
        return 0
    if result.stopped:
        echo_err(f"fleetctl maintain: {result.stopped}")
    code = show_outcomes(result.outcomes, fmt, {"run_id": result.run_id, "stopped": result.stopped})
    return code if result.stopped is None else 1
