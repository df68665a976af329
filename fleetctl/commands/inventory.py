"""``fleetctl inventory``: the hosts a pattern selects, as fleetctl sees them."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fleetctl.inventory import Host

# Variables whose values are never printed (the agent token is not in Host.vars at all).
_SECRET_NAME = re.compile(r"pass|token|secret|key|credential", re.IGNORECASE)


def register(app: typer.Typer) -> None:
    app.command("inventory")(inventory)


def inventory(
    pattern: Annotated[str, typer.Argument(help="Ansible host pattern")] = "all",
    inventory_path: Annotated[str | None, typer.Option(
        "-i", "--inventory", help="Inventory path (default: $FLEETCTL_INVENTORY, else ansible.cfg)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    show_vars: Annotated[bool, typer.Option("--vars", help="Include inventory variables (secrets masked)")]
    = False,
) -> None:
    """List the inventory's hosts: address, agent port, groups, expected chips."""
    from fleetctl.commands import select_hosts

    hosts = select_hosts("inventory", inventory_path, pattern)
    if as_json:
        sys.stdout.write(json.dumps([host_dict(h, with_vars=show_vars) for h in hosts], indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("HOST", "ADDRESS", "PORT", "GROUPS", "CHIPS", "TOKEN"):
        table.add_column(name, justify="right" if name in ("PORT", "CHIPS") else "left", no_wrap=True)
    if show_vars:
        table.add_column("VARS", overflow="fold")
    for h in hosts:
        row = [h.name, h.address, str(h.agent_port), ",".join(h.groups) or "-",
               "-" if h.expected_chips is None else str(h.expected_chips), token_kind(h)]
        if show_vars:
            row.append(" ".join(f"{k}={v}" for k, v in sorted(masked_vars(h.vars).items())))
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"{len(hosts)} hosts", style="dim")


def token_kind(host: Host) -> str:
    if host.agent_token is None:
        return "none"
    return "vault" if host.agent_token.is_vaulted else "set"


def masked_vars(variables: Any) -> dict[str, Any]:
    def mask(key: str, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and "__ansible_vault__" in value:
            return "<vault>"
        if _SECRET_NAME.search(key) and not key.endswith("_file"):
            return "<hidden>"
        return value

    return {str(k): mask(str(k), v) for k, v in variables.items()}


def host_dict(host: Host, *, with_vars: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": host.name, "address": host.address, "port": host.agent_port, "groups": list(host.groups),
        "expected_chips": host.expected_chips, "token": token_kind(host),
    }
    if with_vars:
        doc["vars"] = masked_vars(host.vars)
    return doc
