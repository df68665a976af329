"""Options several commands take, declared once so they read and behave the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetctl.views.output import OutputFormat

PatternArg = Annotated[str, typer.Argument(help="Host name or Ansible pattern (gpu_nodes:&rack1, h100-*)")]
InventoryOpt = Annotated[str | None, typer.Option(
    "-i", "--inventory", help="Inventory (default: $FLEETCTL_INVENTORY, else ansible.cfg)")]
DbOpt = Annotated[Path | None, typer.Option("--db", help="State database (default: $FLEETCTL_DB)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
MaxUnavailableOpt = Annotated[str, typer.Option(
    "--max-unavailable", metavar="N|N%",
    help="Most hosts out of service at once in the scope, counting hosts already drained or down")]
ScopeOpt = Annotated[str | None, typer.Option(
    "--scope", metavar="GROUP", help="Count max-unavailable within this inventory group (default: fleet)")]
OutputOpt = Annotated[OutputFormat | None, typer.Option(
    "-o", "--output", case_sensitive=False,
    help="table, wide (more columns), json, yaml or name (one per line)")]
