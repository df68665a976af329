"""``fleetctl maintain``: parse, call fleetctl.maintain, render.

Exit codes: 0 every host maintained, 1 some host failed or the rollout stopped, 2 usage or
configuration error (nothing drained).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
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


class RebootChoice(StrEnum):
    """--reboot (fleetctl.maintain.RebootMode)."""

    auto = "auto"
    always = "always"
    never = "never"


# A test hook, off unless set: at the start of this step (fleetctl.maintain.STEPS) maintain says so
# on stderr and waits, so a test can SIGKILL it there and check that a re-run resumes.
PAUSE_ENV = "FLEETCTL_TEST_MAINTAIN_PAUSE_AT"


def register(app: typer.Typer) -> None:
    add(app, "maintain", maintain)


def _pause_hook(step_name: str) -> Callable[[str, Sequence[str]], None]:
    def pause(step: str, hosts: Sequence[str]) -> None:
        if step == step_name:
            print(f"fleetctl maintain: paused at {step} ({', '.join(hosts)}) for {PAUSE_ENV}",
                  file=sys.stderr, flush=True)
            time.sleep(600)

    return pause


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
    reboot: Annotated[RebootChoice, typer.Option(
        "--reboot", help="Reboot after provisioning: auto (only hosts whose run left "
        "nvidia_driver_reboot_needed true), always, or never")] = RebootChoice.auto,
    reboot_timeout: Annotated[float, typer.Option(
        "--reboot-timeout", min=1, help="Seconds to wait for a rebooted host to come back; one that "
        "does not is quarantined")] = 900.0,
    extra_vars: Annotated[list[str] | None, typer.Option(
        "--extra-vars", "-e", help="To the playbooks (provision and reboot): k=v, @file or a JSON "
        "object; repeatable")] = None,
    tags: Annotated[list[str] | None, typer.Option(
        "--tags", "-t", help="Provision only tasks with these tags")] = None,
    skip_tags: Annotated[list[str] | None, typer.Option(
        "--skip-tags", help="Provision skips these tags")] = None,
    scope: ScopeOpt = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Rolling maintenance: per batch drain (wait) → provision → reboot → verify health → undrain.

    --reboot auto (the default) reboots a host only when its provision run left
    nvidia_driver_reboot_needed true (kured-style); always reboots every host; never skips it.
    A host failing provisioning, not back from its reboot within --reboot-timeout, or failing
    verification stays drained, marked quarantined.
    """
    from fleetctl import maintain as core
    from fleetctl.commands.context import drain_context
    from fleetctl.commands.provision import _split
    from fleetctl.drain import agent_health
    from fleetctl.inventory import join_patterns
    from fleetctl.provision import parse_extra_vars, resolve_playbook
    from fleetctl.validation import Size
    from fleetctl.views.output import resolve

    fmt = resolve(output, as_json=as_json)

    playbook_path = resolve_playbook(playbook, Path.cwd())  # an unknown playbook: exit 2, nothing drained
    args = core.PlaybookArgs(list(extra_vars or []), _split(tags), _split(skip_tags))
    opts = core.MaintainOptions(
        playbook=str(playbook_path), reason=reason or "", batch=Size.parse(batch, "--batch"),
        max_unavailable=Size.parse(max_unavailable, "--max-unavailable"), max_failures=max_failures,
        dry_run=dry_run, drain_timeout_s=drain_timeout, verify_timeout_s=verify_timeout,
        reboot=core.RebootMode(reboot.value), reboot_timeout_s=reboot_timeout,
        extra_vars=parse_extra_vars(args.extra_vars, Path.cwd()).redacted(), tags=args.tags,
        skip_tags=args.skip_tags,
    )
    pause_at = os.environ.get(PAUSE_ENV)
    with drain_context(inventory, db, write=not dry_run) as ctx:
        sources = list(ctx.inventory.sources)
        selected = ctx.select(join_patterns(patterns))
        # Bad -e values or unknown tags: exit 2 before anything is drained.
        core.check_playbook_args(sources, ",".join(h.name for h in selected) or "all", str(playbook_path),
                                 args)
        provisioner = core.ansible_provisioner(sources, ctx.db_path, args=args)
        rebooter = core.ansible_rebooter(sources, ctx.db_path, extra_vars=args.extra_vars)
        markers = core.ansible_boot_markers(sources, ctx.db_path, extra_vars=args.extra_vars)
        health = functools.partial(agent_health, inventory=list(ctx.inventory.hosts.values()))
        result = core.maintain(ctx.conn, selected, ctx.pool(scope), ctx.schedulers,
                               provisioner, health, opts, echo=echo_err, rebooter=rebooter,
                               boot_markers=markers,
                               on_step=_pause_hook(pause_at) if pause_at else None)
    if dry_run:
        typer.echo("dry run: nothing changed", err=True)
        return 0
    if result.stopped:
        echo_err(f"fleetctl maintain: {result.stopped}")
    code = show_outcomes(result.outcomes, fmt, {"run_id": result.run_id, "stopped": result.stopped,
                                                "options": result.options, "rebooted": result.rebooted})
    return code if result.stopped is None else 1
