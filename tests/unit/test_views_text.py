"""The one path outside text takes to the terminal: never markup, never a raw control, clipped cells."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console
from rich.table import Table

from fleetctl.views.text import CELL_LIMIT, NAME_LIMIT, cell, clip, from_ansi, ident, outside, visible

# Every kind of sequence a hostile or broken source can send: CSI (clear screen), OSC 8 (a link),
# the one-byte C1 CSI, CR (overwrite the line), BEL, BS, DEL, a bidi override, a lone surrogate.
HOSTILE = "a\x1b[2Jb\x1b]8;;http://x\x07c\x1b]8;;\x07d\x9b31me\rf\x07g\x08h\x7fi\u202ej\ud800k"
SHOWN = "a\\x1b[2Jb\\x1b]8;;http://x\\x07c\\x1b]8;;\\x07d\\x9b31me\\rf\\x07g\\x08h\\x7fi\\u202ej\\ud800k"
RAW = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x202E, 0xD800)} - {"\n"}


def printed(*renderables: object, width: int = 80) -> str:
    out = StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=True, legacy_windows=False)
    for r in renderables:
        console.print(r)
    return out.getvalue()


def test_every_control_is_shown_as_a_visible_escape() -> None:
    assert visible(HOSTILE) == SHOWN
    assert visible("tab\there\nline") == "tab\\there\\nline"  # one line stays one line
    assert visible(None) == ""
    assert visible(42) == "42"


def test_multiline_keeps_newlines_and_tabs_but_nothing_else() -> None:
    assert visible("a\r\nb\tc\n\x1b[Kd\re", multiline=True) == "a\nb\tc\n\\x1b[Kd\\re"


def test_plain_printable_text_is_left_as_it_is() -> None:
    text = "GPU 3: XID 79 — fallen off the bus [HBM3] ü 日本 🙂 \\x1b"
    assert visible(text) == text


def test_markup_is_never_parsed_and_controls_never_reach_the_terminal() -> None:
    markup = "[bold]x[/] [/] [link=http://evil.example]click[/link] [maint] swap PSU"
    out = printed(outside(markup), outside(HOSTILE), cell(HOSTILE), ident(HOSTILE), width=200)
    assert markup in out
    assert SHOWN in out
    assert not RAW & set(out), sorted(RAW & set(out))


def test_clip_at_the_end_or_in_the_middle() -> None:
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefgh", 6) == "abcde…"
    assert clip("abcdefgh", 6, middle=True) == "abc…gh"
    assert clip("abcdefgh", 1) == "…"
    assert clip("abcdefgh", 0) == ""
    assert visible("x" * 10_000 + "END", limit=10) == "x" * 9 + "…"
    assert visible("x" * 10_000 + "END", limit=10, middle=True) == "x" * 5 + "…" + "xEND"


def test_clipping_counts_the_escapes_it_shows() -> None:
    assert visible("\x1b" * 50, limit=12) == "\\x1b\\x1b\\x1…"
    assert len(visible("\x9b" * 10_000, limit=CELL_LIMIT)) == CELL_LIMIT


def test_cells_are_clipped_names_keep_their_distinguishing_end() -> None:
    assert len(cell("m" * 10_000).plain) == CELL_LIMIT
    long_name = "rack7-" + "x" * 300 + "-0042"
    shown = ident(long_name).plain
    assert len(shown) == NAME_LIMIT and shown.startswith("rack7-") and shown.endswith("-0042")


def test_a_style_is_applied_to_the_whole_text() -> None:
    t = outside("[red]x", style="bold")
    assert t.plain == "[red]x" and str(t.style) == "bold"


def test_from_ansi_keeps_colours_and_escapes_everything_else() -> None:
    t = from_ansi("\x1b[31m-old\x1b[0m\n\x1b[32m+new\x1b]8;;http://x\x07\x9b\x1b[0m\n")
    assert t.plain == "-old\n+new\\x1b]8;;http://x\\x07\\x9b\n"
    assert [str(s.style) for s in t.spans] == ["color(1)", "color(2)"]


@pytest.mark.parametrize("width", [40, 80, 120])
def test_one_absurd_cell_does_not_widen_the_table_past_the_screen(width: int) -> None:
    table = Table(box=None)
    table.add_column("HOST", no_wrap=True)
    table.add_column("MESSAGE", no_wrap=True, overflow="ellipsis")
    table.add_row(ident("h" * 300), cell("m" * 10_000))
    table.add_row(ident("h1"), cell("ok"))
    lines = printed(table, width=width).splitlines()
    assert len(lines) == 3
    assert all(len(line) <= width for line in lines)
    assert lines[2].split() == ["h1", "ok"]
