"""One module per command group; each exposes ``register(app: typer.Typer) -> None``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from fleetctl.inventory import Host


def select_hosts(command: str, inventory: str | None, pattern: str) -> list[Host]:
    """The inventory's hosts matching ``pattern``; an inventory error ends ``fleetctl <command>``
    with its one-line message and exit code (2)."""
    from fleetctl.errors import FleetctlError
    from fleetctl.inventory import load_inventory

    try:
        return load_inventory(inventory).select(pattern)
    except FleetctlError as exc:
        typer.echo(f"fleetctl {command}: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
