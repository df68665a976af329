"""``fleetctl prometheus targets``: Prometheus file_sd targets from the inventory."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Annotated

import typer

prometheus_app = typer.Typer(help="Prometheus integration: scrape targets from the inventory.",
                             no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(prometheus_app, name="prometheus")


@prometheus_app.command("targets")
def targets(
    pattern: Annotated[str, typer.Argument(help="Ansible host pattern")] = "all",
    inventory: Annotated[str | None, typer.Option(
        "-i", "--inventory", help="Inventory path (default: $FLEETCTL_INVENTORY, else ansible.cfg)")] = None,
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Write to FILE atomically (Prometheus re-reads it); default stdout")] = None,
) -> None:
    """Write file_sd JSON: one target per agent, labelled host=<inventory name>, group=<first group>."""
    from fleetctl.commands import select_hosts
    from fleetctl.promsource import file_sd_targets

    hosts = select_hosts("prometheus targets", inventory, pattern)
    text = json.dumps(file_sd_targets(hosts), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_atomically(output, text)
    except OSError as exc:
        typer.echo(f"fleetctl prometheus targets: {output}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(hosts)} targets -> {output}", err=True)


def write_atomically(path: str, text: str) -> None:
    """Temp file in the same directory + rename: Prometheus never reads a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".targets-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
