"""``fleetctl inventory``: the hosts a pattern selects, as fleetctl sees them."""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.commands import add
from fleetctl.commands.params import InventoryOpt, JsonOpt


def register(app: typer.Typer) -> None:
    add(app, "inventory", inventory)


def inventory(
    pattern: Annotated[str, typer.Argument(help="Ansible host pattern")] = "all",
    inventory_path: InventoryOpt = None,
    as_json: JsonOpt = False,
    show_vars: Annotated[bool, typer.Option("--vars", help="Include inventory variables (secrets masked)")]
    = False,
) -> None:
    """List the inventory's hosts: address, agent port, groups, expected chips."""
    from fleetctl.inventory import load_inventory

    hosts = load_inventory(inventory_path).select(pattern)
    if as_json:
        from fleetctl.views.console import print_json
        from fleetctl.views.inventory import host_dict

        print_json([host_dict(h, with_vars=show_vars) for h in hosts])
        return
    from fleetctl.views.inventory import print_hosts

    print_hosts(hosts, with_vars=show_vars)
