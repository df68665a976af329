"""``fleetctl burn-in PATTERN...``: gate new and repaired hosts before they take work.

Three checks per host (provision state, the agent, DCGM's diagnostics; fleetctl.burnin.gate), each
host's result recorded in the state database, its lifecycle moved (burn_in, then in_service or
suspect).

Exit codes: 0 every host passed, 1 some host failed (or the run was refused), 2 usage or
configuration error, 3 no host failed but some burn-in is incomplete (a check could not run: no
DCGM on a TPU host, no dcgmi, a diagnostic that timed out), unless ``--allow-missing`` allowed it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.commands import add
from fleetctl.commands.params import DbOpt, InventoryOpt, JsonOpt, OutputOpt, PatternsRequiredArg


def register(app: typer.Typer) -> None:
    add(app, "burn-in", burn_in)


def burn_in(
    patterns: PatternsRequiredArg,
    level: Annotated[int, typer.Option(
        "--level", metavar="1-4", help="DCGM run level: 1 deployment checks (seconds), 2 + PCIe and memory "
                                       "(minutes), 3 + stress and power (about 15 min), 4 longer")] = 1,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="SECONDS", min=1,
        help="Most seconds DCGM may run on a host (default per level: 300, 900, 3600, 14400)")] = None,
    allow_missing: Annotated[list[str] | None, typer.Option(
        "--allow-missing", metavar="CHECK",
        help="A check that may be missing without making the burn-in incomplete: dcgm (recorded)")] = None,
    skip_provision_check: Annotated[bool, typer.Option(
        "--skip-provision-check",
        help="Do not require a successful provision run recorded for the host (recorded)")] = False,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Burn in hosts: provision state, the agent with every expected chip, DCGM's diagnostics."""
    from fleetctl.burnin.gate import MAY_BE_MISSING, GateOptions, burn_in_hosts
    from fleetctl.commands.context import drain_context
    from fleetctl.commands.drain import echo_err
    from fleetctl.drain import current_user
    from fleetctl.errors import UsageError
    from fleetctl.inventory import join_patterns
    from fleetctl.state import burnin as store
    from fleetctl.state import db as statedb
    from fleetctl.state.lifecycle import who
    from fleetctl.validation import one_of
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=as_json)
    if level not in (1, 2, 3, 4):
        raise UsageError(f"--level: {level} is not a DCGM run level (1, 2, 3 or 4)")
    missing = frozenset(one_of("--allow-missing", m.strip().lower(), MAY_BE_MISSING)
                        for m in allow_missing or ())
    opts = GateOptions(level=level, actor=who(current_user()), skip_provision_check=skip_provision_check,
                       allow_missing=missing)
    with drain_context(inventory, db) as ctx:
        hosts = ctx.select(join_patterns(patterns))
        conn = statedb.connect(ctx.db_path, schema=store.SCHEMA)  # this module's table, created here
        try:
            result = burn_in_hosts(conn, hosts, list(ctx.inventory.hosts.values()), level, options=opts,
                                   inventory_sources=list(ctx.inventory.sources), timeout_s=timeout,
                                   echo=echo_err)
        finally:
            conn.close()

    def table(wide: bool) -> None:
        from fleetctl.views.burnin import print_result

        print_result(result, wide=wide)

    emit(fmt, doc=result.to_dict, names=lambda: [h.host for h in result.hosts], table=table)
    return result.exit_code
