"""``fleetctl hosts [PATTERN]... | hosts set HOST STATE | hosts show HOST``: each host's lifecycle.

``fleetctl hosts`` with patterns (or none, or only options) lists; ``set`` and ``show`` (alias
``describe``) are its subcommands. The list and the page read the state database only; ``set``
writes one audited transition; ``show`` also asks the host's agent, bounded by ``--timeout``
(an agent that does not answer is shown as such, not an error).

Exit codes: 0 done, 1 a transition refused, 2 usage or configuration error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer import _click
from typer.core import TyperGroup

from fleetctl.commands import run_command
from fleetctl.commands.params import DbOpt, InventoryOpt, JsonOpt, OutputOpt, PatternsArg

if TYPE_CHECKING:
    from fleetctl.fanout import FetchResult
    from fleetctl.inventory import Host
    from fleetctl.state.db import Connection

_LIST = "list"


class HostsGroup(TyperGroup):
    """A group whose first word may be a host pattern: anything but a subcommand or --help lists."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        # The subcommands' options that take a value (that value is not the first word), from
        # their own declarations, so a new option cannot be forgotten here.
        valued = {opt for cmd in self.commands.values() for p in cmd.params
                  if p.param_type_name == "option" and not getattr(p, "is_flag", False)
                  and not getattr(p, "count", False) for opt in p.opts}
        first = _first_word(args, valued)
        if first is not None and args[first] in self.commands:
            # `fleetctl hosts -i INV set ...`: options may come before the subcommand, as elsewhere
            args = [args[first], *args[:first], *args[first + 1:]]
        elif not (args and args[0] in ctx.help_option_names):
            args = [_LIST, *args]
        return super().parse_args(ctx, args)


def _first_word(args: list[str], valued: set[str]) -> int | None:
    """The index of the first argument that is neither an option nor the value of one in ``valued``."""
    value_next = False
    for i, arg in enumerate(args):
        if value_next:
            value_next = False
        elif arg == "--":  # what follows is patterns, even a word like "show"
            return None
        elif arg.startswith("-") and arg != "-":
            value_next = arg in valued
        else:
            return i
    return None


def register(app: typer.Typer) -> None:
    sub = typer.Typer(cls=HostsGroup, no_args_is_help=False,
                      help="Each host's lifecycle: list (the default), set a state, show one host's page.")
    app.add_typer(sub, name="hosts")
    sub.command(_LIST, help="Per host: lifecycle state, since when, why, last health, drain state "
                            "(the default: `fleetctl hosts [PATTERN]...`).")(run_command("hosts", hosts_list))
    sub.command("set")(run_command("hosts set", hosts_set))
    sub.command("show")(run_command("hosts show", hosts_show))
    sub.command("describe", hidden=True)(run_command("hosts describe", hosts_show))


def hosts_list(
    patterns: PatternsArg = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    from fleetctl.commands.context import drain_context
    from fleetctl.inventory import join_patterns
    from fleetctl.state import lifecycle
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=as_json)
    with drain_context(inventory, db, write=False) as ctx:
        rows = lifecycle.overview(ctx.conn, [h.name for h in ctx.select(join_patterns(patterns))])

    def table(wide: bool) -> None:
        from fleetctl.views.hosts import print_hosts

        print_hosts(rows, wide=wide)

    emit(fmt, doc=lambda: {"hosts": [r.to_dict() for r in rows]}, names=lambda: [r.host for r in rows],
         table=table)
    return 0


def hosts_set(
    host: Annotated[str, typer.Argument(help="An inventory host name")],
    state: Annotated[str, typer.Argument(
        help="new, burn_in, in_service, suspect, repairing, quarantined, rma or retired")],
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why (required); recorded")] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow a transition the lifecycle does not, or "
                                        "replace a state a newer fleetctl wrote")] = False,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Move a host to a lifecycle state, recorded with who, why and when."""
    from fleetctl.commands.context import drain_context
    from fleetctl.drain import current_user
    from fleetctl.state import lifecycle
    from fleetctl.validation import require_reason
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=as_json)
    to = lifecycle.parse_state(state)
    why = require_reason(reason)
    with drain_context(inventory, db) as ctx:
        name = _one_host(ctx.select(host), host).name
        before = lifecycle.set_state(ctx.conn, name, to, actor=current_user(), reason=why, force=force)
        after = lifecycle.get(ctx.conn, name)

    def table(wide: bool) -> None:
        from fleetctl.views.text import echo

        echo(f"{name}: {before.label} -> {after.label} ({why})")

    emit(fmt, doc=lambda: {"host": name, "from": before.label, **after.to_dict()}, names=lambda: [name],
         table=table)
    return 0


def hosts_show(
    host: Annotated[str, typer.Argument(help="An inventory host name")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the host's agent",
                                           min=0.01)] = 5.0,
    history: Annotated[int, typer.Option("--history", help="Most entries of each history shown",
                                         min=1)] = 20,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """One host's page: lifecycle and its history, drains, provision runs, the last burn-in,
    remediations, the agent's report now."""
    from fleetctl.commands.context import drain_context
    from fleetctl.state import burnin, lifecycle
    from fleetctl.state import hosts as hstate
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=as_json)
    with drain_context(inventory, db, write=False) as ctx:
        target = _one_host(ctx.select(host), host)
        row = lifecycle.overview(ctx.conn, [target.name])[0]
        doc: dict[str, Any] = {
            **row.to_dict(),
            "history": [e.to_dict() for e in lifecycle.history(ctx.conn, target.name, history)],
            "drains": [vars(e) for e in hstate.audit(ctx.conn, target.name, history)],
            "runs": [r.to_dict() for r in lifecycle.runs_for(ctx.conn, target.name, history)],
        }
        last = burnin.last_many(ctx.conn, [target.name]).get(target.name)
        doc["burn_in"] = last.to_dict() if last else None
        doc["remediations"] = _remediations(ctx.conn, target.name, history)
    doc["agent"] = agent_doc(target, _ask_agent(target, timeout))

    def table(wide: bool) -> None:
        from fleetctl.views.hosts import print_page

        print_page(doc)

    emit(fmt, doc=lambda: doc, names=lambda: [target.name], table=table)
    return 0


def _one_host(selected: list[Host], typed: str) -> Host:
    from fleetctl.errors import UsageError

    exact = [h for h in selected if h.name == typed]
    if exact:
        return exact[0]
    if len(selected) == 1:
        return selected[0]
    shown = ", ".join(h.name for h in selected[:5]) + (" ..." if len(selected) > 5 else "")
    raise UsageError(f"HOST {typed!r} selects {len(selected)} hosts ({shown}): give one host")


def _remediations(conn: Connection, host: str, limit: int) -> list[dict[str, Any]]:
    """The host's remediations, newest first, each with ``open`` (not ended: running, failing or
    interrupted) and ``step_name`` (the step it is at; None past the last)."""
    from fleetctl.state import remediation as rstate

    out = []
    for rec in rstate.SqlStore(conn).for_host(host, limit):  # read only: no lease holder, nothing written
        step = rec.steps[rec.next_step] if 0 <= rec.next_step < len(rec.steps) else None
        out.append({**rec.to_dict(), "open": rec.state in rstate.OPEN_STATES, "step_name": step})
    return out


def _ask_agent(host: Host, timeout: float) -> FetchResult:
    from fleetctl.fanout import NODE_PATH, FanoutOptions, agent_tokens, fetch_all

    tokens = agent_tokens([host])
    # A little past the host's own timeout: its outcome (refused, timeout) is named, not the deadline's.
    # The whole report: the page shows each chip's XIDs (vendor detail, not in the summary view).
    options = FanoutOptions(timeout_s=timeout, deadline_s=timeout + 1.0, path=NODE_PATH)
    return fetch_all([host], lambda h: tokens[h.name], options)[0]


def agent_doc(host: Host, result: FetchResult) -> dict[str, Any]:
    """What the page shows of the agent's answer: versions, status, problems and each chip's XIDs."""
    report = result.report
    base: dict[str, Any] = {"endpoint": host.agent_endpoint, "outcome": str(result.kind),
                            "detail": result.detail or None, "reachable": report is not None}
    if report is None:
        return base
    chips = [{"index": c.index, "kind": c.kind, "model": c.model, "uuid": c.uuid, "status": c.status.value,
              "xid_total": c.gpu.xid_total if c.gpu else 0,
              "xid_counts": dict(c.gpu.xid_counts) if c.gpu else {},
              "last_xid": c.gpu.last_xid if c.gpu else None} for c in report.chips]
    every = [*report.problems, *(p for c in report.chips for p in c.problems)]
    problems = [{"check": p.check, "severity": p.severity.value, "message": p.message,
                 "action": p.action.value} for p in every]
    return {**base, "host": report.host, "agent_version": report.agent_version,
            "status": report.status.value, "driver_version": report.driver_version,
            # the CUDA version the driver supports; None from an agent too old to report it
            "cuda_driver_version": report.cuda_driver_version,
            "sampled_at": report.sampled_at, "chips": chips, "problems": problems}
