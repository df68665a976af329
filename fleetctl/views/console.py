"""The one owner of fleetctl's standard output: the rich Console and ``--json`` documents.

A terminal gets rich's defaults (its width, wrapped text). A pipe (a script, a CI log) gets wide
lines that are never soft-wrapped, rather than table cells folded at 80 columns.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 200  # at least this wide when stdout is not a terminal


def stdout_console() -> Console:
    """The Console every table and live display on stdout is drawn on."""
    from rich.console import Console  # here: ``--json`` output does not load rich

    console = Console()
    if console.is_terminal:
        return console
    return Console(width=max(console.width, PIPE_WIDTH), soft_wrap=True)


def print_json(doc: Any) -> None:
    """A ``--json`` document on stdout, one per call: a JSON-able value (indented), or the bytes of an
    already encoded document (written as they are: any locale, no re-encoding)."""
    data = doc if isinstance(doc, bytes) else json.dumps(doc, indent=2).encode()
    sys.stdout.flush()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()
