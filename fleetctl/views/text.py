"""Outside text on screen: the one path every string fleetctl did not write itself takes to the terminal.

An agent's answer, a scheduler's reason, a host name, an inventory value, a row another fleetctl wrote:
any of them may hold rich markup (``[bold]``, ``[/]``) or terminal control sequences (ESC, CSI, OSC,
C1 controls, CR, BS, BEL). Here such text becomes text that shows as written. Markup is never parsed
(rich gets a ``Text``, never a ``str``), and every control character, bidi override and line
separator is shown as the visible escape Python would write (``\\x1b``, ``\\r``, ``\\u202e``): a
message cannot clear the screen, move the cursor, set a link or reorder what the SRE reads. Table
cells are clipped with an ellipsis on a terminal so that one absurd string cannot push every other
host's row apart; a clipped cell remembers its whole text (:func:`unclipped`), which the plain
renderer for pipes (:func:`fleetctl.views.console.show`) prints instead: a script never gets a cut
host name. ``--json`` keeps the full text too.

Only the standard library is imported here at module level: the plain-``str`` half serves the
one-line messages on stderr, whose commands must not load rich.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fleet_agent.printable import ONE_LINE as _LINE
from fleet_agent.printable import SEVERAL_LINES as _BLOCK

if TYPE_CHECKING:
    from rich.text import Text

ELLIPSIS = "…"
NAME_LIMIT = 64  # host names and other identifiers in a table: clipped in the middle (the suffix differs)
CELL_LIMIT = 200  # reasons, problem messages, notes in a table cell
LINE_LIMIT = 2000  # one line on stderr (a 10 MB reason must not flood the terminal)

# What never reaches the terminal raw, and how it is shown instead: fleet_agent.printable's tables
# (the agent prints with the same ones).
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
    """Outside text as a rich ``Text``: shown as written (no markup), controls escaped, clipped.

    A clipped one keeps ``value``: :func:`unclipped` gives its whole text (escaped) for a pipe.
    """
    from rich.text import Text  # here: the stderr lines do not load rich

    shown = visible(value, limit=limit, middle=middle, multiline=multiline)
    if limit is None or len(shown) < limit:  # clip() leaves exactly ``limit`` characters
        return Text(shown, style=style)
    text = _clipped_class()(shown, style=style)
    text.whole = (value, multiline)  # type: ignore[attr-defined]
    return text


_CLIPPED: type[Text] | None = None


def _clipped_class() -> type[Text]:
    """A ``Text`` that also holds the value it was clipped from (rich's Text has slots: a subclass)."""
    global _CLIPPED
    if _CLIPPED is None:
        from rich.text import Text

        class ClippedText(Text):
            whole: tuple[object, bool]

        _CLIPPED = ClippedText
    return _CLIPPED


def unclipped(value: object) -> str:
    """A table cell's whole text, controls escaped, never clipped: what a pipe gets.

    ``value`` is a cell as given to a rich table (``str``, ``Text``, a clipped ``Text``, or None).
    """
    whole = getattr(value, "whole", None)
    if whole is not None:
        return visible(whole[0], multiline=whole[1])
    plain = getattr(value, "plain", None)
    if isinstance(plain, str):
        return plain
    return "" if value is None else str(value)


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
