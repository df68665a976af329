"""The one owner of fleetctl's standard output: the rich Console and ``--json`` documents.

A terminal gets rich's defaults (its width, wrapped text). A pipe (a script, a CI log) gets wide
lines that are never soft-wrapped, rather than table cells folded at 80 columns.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 200  # at least this wide when stdout is not a terminal

# Characters a JSON encoder may leave raw in UTF-8 but a terminal acts on: DEL, the C1 controls
# (U+0080-U+009F: a one-character CSI), bidi marks, embeddings, overrides and isolates, and the
# line and paragraph separators. They occur only inside strings, where ``\uXXXX`` is the same value.
_RAW_IN_JSON = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def _escaped(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


def stdout_console() -> Console:
    """The Console every table and live display on stdout is drawn on."""
    from rich.console import Console  # here: ``--json`` output does not load rich

    console = Console()
    if console.is_terminal:
        return console
    return Console(width=max(console.width, PIPE_WIDTH), soft_wrap=True)


def print_json(doc: Any) -> None:
    """A ``--json`` document on stdout, one per call: a JSON-able value (indented), or the bytes of an
    already encoded document (written as they are: any locale, no re-encoding; only the characters a
    terminal would act on are written as ``\\uXXXX`` escapes)."""
    data = doc if isinstance(doc, bytes) else json.dumps(doc, indent=2).encode()
    if not data.isascii() or b"\x7f" in data:  # two C-speed scans spare the regex on plain ASCII
        data = _RAW_IN_JSON.sub(_escaped, data)  # exact JSON still, but nothing a terminal would obey
    sys.stdout.flush()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()
