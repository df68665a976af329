"""Options several commands take, declared once so they read and behave the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetctl.state.location import StateLocation
from fleetctl.views.output import OutputFormat

PatternArg = Annotated[str, typer.Argument(help="Host name or Ansible pattern (gpu_nodes:&rack1, h100-*)")]
# Several patterns are joined with ':' as Ansible joins them (fleetctl.inventory.join_patterns):
# `fleetctl drain h1 h2 -r x` is `h1:h2`; none is `all` where the command has that default.
PatternsArg = Annotated[list[str] | None, typer.Argument(
    metavar="[PATTERN]...", show_default=False,
    help="Host names or Ansible patterns, joined with ':' (gpu_nodes:&rack1 '!h100-0003'); default all")]
PatternsRequiredArg = Annotated[list[str], typer.Argument(
    metavar="PATTERN...", help="Host names or Ansible patterns, joined with ':' (gpu_nodes:&rack1, h100-*)")]
# Environment variables are read by the options themselves (shown in --help); an option given on the
# command line wins, as before. ANSIBLE_INVENTORY and ansible.cfg still come after FLEETCTL_INVENTORY.
InventoryOpt = Annotated[str | None, typer.Option(
    "-i", "--inventory", envvar="FLEETCTL_INVENTORY", show_envvar=True,
    help="Inventory (default: $ANSIBLE_INVENTORY, else ansible.cfg's)")]
# path_type: a PostgreSQL URL must reach fleetctl whole (a plain Path collapses its //).
DbOpt = Annotated[Path | None, typer.Option(
    "--db", envvar="FLEETCTL_DB", show_envvar=True, dir_okay=False, path_type=StateLocation,
    help="State database: a file (default: ~/.local/state/fleetctl/fleetctl.db) or postgresql://user@host/db")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
MaxUnavailableOpt = Annotated[str, typer.Option(
    "--max-unavailable", metavar="N|N%",
    help="Most hosts out of service at once in the scope, counting hosts already drained or down")]
ScopeOpt = Annotated[str | None, typer.Option(
    "--scope", metavar="GROUP", help="Count max-unavailable within this inventory group (default: fleet)")]
OutputOpt = Annotated[OutputFormat | None, typer.Option(
    "-o", "--output", case_sensitive=False, metavar="FORMAT",
    help="table, wide (more columns), json, yaml or name (one per line)")]
PrometheusUrlOpt = Annotated[str | None, typer.Option(
    "--prometheus-url", envvar="FLEETCTL_PROMETHEUS_URL", show_envvar=True,
    help="Prometheus base URL (user:password@ for basic auth)")]
# A file, not the token itself: a command line is seen by every user of the machine (ps).
PrometheusTokenFileOpt = Annotated[Path | None, typer.Option(
    "--prometheus-token-file", envvar="FLEETCTL_PROMETHEUS_TOKEN_FILE", show_envvar=True, dir_okay=False,
    metavar="FILE", help="Bearer token sent to Prometheus (an authenticating proxy, Thanos, Mimir)")]
PrometheusTenantOpt = Annotated[str | None, typer.Option(
    "--prometheus-tenant", envvar="FLEETCTL_PROMETHEUS_TENANT", show_envvar=True, metavar="ID",
    help="Tenant sent as X-Scope-OrgID (Mimir, Cortex; several joined with '|')")]
