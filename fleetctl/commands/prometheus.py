"""``fleetctl prometheus targets``: Prometheus file_sd targets from the inventory."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Annotated

import typer

from fleetctl.commands import add, group
from fleetctl.commands.params import InventoryOpt, PatternsArg


def register(app: typer.Typer) -> None:
    prometheus = group(app, "prometheus", help="Prometheus integration: scrape targets from the inventory.")
    add(prometheus, "targets", targets, label="prometheus targets")


def targets(
    patterns: PatternsArg = None,
    inventory: InventoryOpt = None,
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Write to FILE atomically (Prometheus re-reads it); default stdout")] = None,
) -> None:
    """Write file_sd JSON: one target per agent, labelled host=<inventory name>, group=<first group>."""
    from fleetctl.errors import UsageError
    from fleetctl.inventory import join_patterns, load_inventory
    from fleetctl.promsource import file_sd_targets

    hosts = load_inventory(inventory).select(join_patterns(patterns))
    doc = file_sd_targets(hosts)
    if output is None:
        from fleetctl.views.console import print_json

        print_json(doc)
        return
    try:
        write_atomically(output, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"{output}: {exc.strerror or exc}") from None
    from fleetctl.views.text import echo

    echo(f"{len(hosts)} targets -> {output}", err=True)


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
