"""The one owner of fleetctl's standard output: the rich Console, ``--json`` documents, and the
plain renderer every table view uses when stdout is not a terminal.

A terminal gets rich's drawing (its width, columns that fold, long names clipped in the middle). A
pipe (a script, cron, a CI log, ``ssh bastion fleetctl ... | grep``) gets plain text instead:

* :func:`show` ``(renderable, console=None)`` -- print a table, a ``Text`` or a ``Group`` of them.
  On a terminal it is ``console.print``. Otherwise each ``rich.table.Table`` becomes
  :func:`plain_lines`: its title (if any) on one line, the header, then ONE LINE PER ROW, columns
  padded to the widest cell and two spaces apart, nothing truncated (a cell clipped with
  :func:`fleetctl.views.text.ident`/``cell`` prints its whole text), nothing wrapped, no colour, an
  empty cell as ``-`` (so ``awk '{print $2}'`` still finds the column); a ``Text`` prints its plain
  lines; anything else is printed by rich without soft wrapping. Views build their tables as
  before and call ``show(table)`` (or ``show(Group(...))``) instead of ``console.print``.
* :func:`plain_lines` ``(table) -> list[str]`` -- the lines above, for tests and for callers that
  add their own.
* :func:`is_terminal` ``() -> bool`` -- whether :func:`show` would draw (rich's own test: honours
  ``FORCE_TERMINAL``/``TTY_COMPATIBLE``, as the colours do).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

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
    print_json_pieces((data,))


def print_json_pieces(pieces: Iterable[bytes]) -> None:
    """A ``--json`` document written piece by piece as its encoder makes them (a large fleet's report
    never whole in memory); each piece ends outside a string, so each is made safe on its own."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    for data in pieces:
        if not data.isascii() or b"\x7f" in data:  # two C-speed scans spare the regex on plain ASCII
            data = _RAW_IN_JSON.sub(_escaped, data)  # exact JSON still, but nothing a terminal would obey
        out.write(data)
    out.write(b"\n")
    out.flush()


def is_terminal() -> bool:
    """Whether stdout is a terminal a person reads (so tables are drawn, not written plainly)."""
    return stdout_console().is_terminal


def plain_lines(table: Table) -> list[str]:
    """``table`` as lines for a pipe: title, header, one line per row; whole cells, no colour, no wrap."""
    from rich.cells import cell_len

    from fleetctl.views.text import unclipped

    columns = table.columns
    rows: list[list[str]] = []
    if table.show_header:
        rows.append([unclipped(c.header) or "-" for c in columns])
    for i in range(table.row_count):
        rows.append([(unclipped(c._cells[i]) if i < len(c._cells) else "") or "-" for c in columns])
    # Padded by display width: a wide (CJK) character takes two columns of the terminal reading the pipe.
    widths = [max((cell_len(r[j]) for r in rows), default=0) for j in range(len(columns))]
    lines = [unclipped(table.title)] if table.title else []
    for r in rows:
        parts = [_pad(v, w, right=c.justify == "right") for v, w, c in zip(r, widths, columns, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return lines


def _pad(value: str, width: int, *, right: bool) -> str:
    from rich.cells import cell_len

    fill = " " * max(width - cell_len(value), 0)
    return fill + value if right else value + fill


def show(renderable: RenderableType, console: Console | None = None) -> None:
    """Print ``renderable`` on stdout: drawn by rich on a terminal, else plainly (see the module doc)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    console = console or stdout_console()
    if console.is_terminal:
        console.print(renderable)
        return
    parts = list(renderable.renderables) if isinstance(renderable, Group) else [renderable]
    for part in parts:
        if isinstance(part, Group):
            show(part, console)
        elif isinstance(part, Table):
            _write(console, plain_lines(part))
        elif isinstance(part, Text):
            _write(console, part.plain.split("\n"))
        else:
            console.print(part, soft_wrap=True)


def _write(console: Console, lines: list[str]) -> None:
    console.file.write("".join(line + "\n" for line in lines))
    console.file.flush()
