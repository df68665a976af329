"""Outside text on screen: the one path every string fleetctl did not write itself takes to the terminal.

An agent's answer, a scheduler's reason, a host name, an inventory value, a row another fleetctl wrote:
any of them may hold rich markup (``[bold]``, ``[/]``) or terminal control sequences (ESC, CSI, OSC,
C1 controls, CR, BS, BEL). Here such text becomes text that shows as written. Markup is never parsed
(rich gets a ``Text``, never a ``str``), and every control character, bidi override and line
separator is shown as the visible escape Python would write (``\\x1b``, ``\\r``, ``\\u202e``): a
message cannot clear the screen, move the cursor, set a link or reorder what the SRE reads. Table
cells are clipped with an ellipsis so that one absurd string cannot push every other host's row
apart; ``--json`` keeps the full text.

Only the standard library is imported here at module level: the plain-``str`` half serves the
one-line messages on stderr, whose commands must not load rich.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

ELLIPSIS = "…"
NAME_LIMIT = 64  # host names and other identifiers in a table: clipped in the middle (the suffix differs)
CELL_LIMIT = 200  # reasons, problem messages, notes in a table cell
LINE_LIMIT = 2000  # one line on stderr (a 10 MB reason must not flood the terminal)

# What never reaches the terminal raw: the C0 and C1 controls and DEL, the bidi embeddings, overrides
# and isolates (they reorder what follows them), the Unicode line and paragraph separators, and lone
# surrogates (undecodable bytes a subprocess's output kept: writing one would raise).
_UNSAFE = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
           *range(0x2066, 0x206A), 0x2028, 0x2029, *range(0xD800, 0xE000)]
_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_LINE = {code: _escape(code) for code in _UNSAFE}  # one line: newlines and tabs are shown too
_BLOCK = {code: text for code, text in _LINE.items() if code not in (0x09, 0x0A)}  # several lines
_SGR = re.compile(r"(\x1b\[[0-9;]*m)")  # colour and weight: the only sequences from_ansi may keep


def clip(text: str, limit: int, *, middle: bool = False) -> str:
    """``text`` at most ``limit`` characters, an ellipsis where it was cut (its end, or its middle)."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS[:limit]
    if middle:
        tail = (limit - 1) // 2
        return text[:limit - 1 - tail] + ELLIPSIS + (text[-tail:] if tail else "")
    return text[:limit - 1] + ELLIPSIS


def visible(value: object, *, limit: int | None = None, middle: bool = False, multiline: bool = False) -> str:
    """Outside text as a ``str`` that is safe to print: controls escaped, clipped to ``limit``.

    ``multiline`` keeps newlines and tabs (CRLF read as LF); ``None`` is the empty string.
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > 2 * limit + 2:  # only the ends can show: escape no more
        text = text[:limit + 1] + (text[-(limit + 1):] if middle else "")
    if multiline:
        text = text.replace("\r\n", "\n").translate(_BLOCK)
    else:
        text = text.translate(_LINE)
    return text if limit is None else clip(text, limit, middle=middle)


def outside(value: object, *, style: str = "", limit: int | None = None, middle: bool = False,
            multiline: bool = False) -> Text:
    """Outside text as a rich ``Text``: shown as written (no markup), controls escaped, clipped."""
    from rich.text import Text  # here: the stderr lines do not load rich

    return Text(visible(value, limit=limit, middle=middle, multiline=multiline), style=style)


def cell(value: object, *, style: str = "") -> Text:
    """A reason, message or note in a table cell (clipped at :data:`CELL_LIMIT`)."""
    return outside(value, style=style, limit=CELL_LIMIT)


def ident(value: object, *, style: str = "") -> Text:
    """A host name or other identifier in a table cell (clipped in the middle at :data:`NAME_LIMIT`)."""
    return outside(value, style=style, limit=NAME_LIMIT, middle=True)


def from_ansi(value: str) -> Text:
    """Output of a tool that colours it (Ansible's diffs): its colours kept, every other control escaped
    (the diffed file's own bytes come from a host)."""
    from rich.text import Text

    parts = _SGR.split(value)  # odd items: the colour sequences
    return Text.from_ansi("".join(p if i % 2 else visible(p, multiline=True) for i, p in enumerate(parts)))


def echo(line: str, *, err: bool = False) -> None:
    """One line that may carry outside text (a host name, a reason), on stdout or stderr, made safe."""
    import typer  # the echo the rest of the CLI uses (CliRunner and capsys capture it)

    typer.echo(visible(line, limit=LINE_LIMIT), err=err)
