"""``fleetctl inventory``: the hosts a pattern selects, as fleetctl sees them."""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.commands import add
from fleetctl.commands.params import InventoryOpt, JsonOpt, OutputOpt, PatternsArg


def register(app: typer.Typer) -> None:
    add(app, "inventory", inventory)


def inventory(
    patterns: PatternsArg = None,
    inventory_path: InventoryOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    show_vars: Annotated[bool, typer.Option("--vars", help="Include inventory variables (secrets masked)")]
    = False,
) -> None:
    """List the inventory's hosts: address, agent port, groups, expected chips."""
    from fleetctl.inventory import join_patterns, load_inventory
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=as_json)
    hosts = load_inventory(inventory_path).select(join_patterns(patterns))

    def doc() -> list[dict[str, object]]:
        from fleetctl.views.inventory import host_dict

        return [host_dict(h, with_vars=show_vars) for h in hosts]

    def table(wide: bool) -> None:
        from fleetctl.views.inventory import print_hosts

        print_hosts(hosts, with_vars=show_vars, wide=wide)

    emit(fmt, doc=doc, names=lambda: [h.name for h in hosts], table=table)
