"""``-o/--output``: the one choice of output shape every listing command takes (kubectl's habit).

``table`` is the default view; ``wide`` adds columns; ``json`` and ``yaml`` are the whole document;
``name`` prints one identifier per line (a host, a run id) for ``xargs`` and loops. The older
``--json`` flags are the same as ``-o json``.

Standard library only at module level (``--json`` and ``name`` must not load rich or yaml).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from fleetctl.errors import UsageError


class OutputFormat(StrEnum):  # StrEnum: str() is the value (shell completion offers it)
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"


def resolve(output: OutputFormat | None, *, as_json: bool = False) -> OutputFormat:
    """The format asked for: ``--json`` is ``-o json``; both, naming different formats: refused."""
    if as_json and output not in (None, OutputFormat.json):
        raise UsageError(f"--json and -o {output.value if output else ''} ask for two formats: give one")
    if as_json:
        return OutputFormat.json
    return output or OutputFormat.table


def print_yaml(doc: Any) -> None:
    """A YAML document on stdout (block style, keys in the document's order)."""
    import yaml

    # ASCII only: every character outside it is written as an escape YAML reads back as the same
    # value, so an agent's control characters never reach the terminal raw.
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a value shared by many hosts (a group's list) is written out at each, no &id001

    sys.stdout.write(yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=False,
                               default_flow_style=False))
    sys.stdout.flush()


def print_names(names: Iterable[str]) -> None:
    """One identifier per line, as written (control characters shown escaped)."""
    from fleetctl.views.text import visible

    sys.stdout.write("".join(visible(n) + "\n" for n in names))
    sys.stdout.flush()


def emit(fmt: OutputFormat, *, doc: Callable[[], Any], names: Callable[[], Iterable[str]],
         table: Callable[[bool], None]) -> None:
    """Print a command's result in ``fmt``: ``doc()`` for json/yaml, ``names()`` for name, else
    ``table(wide)`` (a view that draws on a terminal and writes plain lines to a pipe)."""
    if fmt is OutputFormat.json:
        from fleetctl.views.console import print_json

        print_json(doc())
    elif fmt is OutputFormat.yaml:
        print_yaml(doc())
    elif fmt is OutputFormat.name:
        print_names(names())
    else:
        table(fmt is OutputFormat.wide)
