"""Text from outside the agent (a driver's message, a model name, a drained file, a scenario) made
safe to print: every control character shown as the escape Python writes (``\\x1b``, ``\\r``,
``\\u202e``), so no message can clear a terminal, set a link or reorder what is read.

One table for the agent's own output (``once``, ``check``) and for fleetctl's, which builds its
views on it (``fleetctl/views/text.py``).
"""

from __future__ import annotations

# The C0 and C1 controls and DEL, the bidi embeddings, overrides and isolates (they reorder what
# follows them), the Unicode line and paragraph separators, and lone surrogates (undecodable bytes a
# subprocess's output kept: writing one would raise).
UNSAFE: tuple[int, ...] = (
    *range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
    *range(0x2066, 0x206A), 0x2028, 0x2029, *range(0xD800, 0xE000))
_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


ONE_LINE: dict[int, str] = {code: _escape(code) for code in UNSAFE}  # newlines and tabs shown too
SEVERAL_LINES: dict[int, str] = {code: text for code, text in ONE_LINE.items() if code not in (0x09, 0x0A)}


def printable(text: str) -> str:
    """``text`` on one line with every control character escaped."""
    return text.translate(ONE_LINE)
