"""``fleetctl inventory`` on screen and as JSON: hosts with their agent endpoint, secrets masked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetctl.inventory import Host

# Variables whose values are never printed (the agent token is not in Host.vars at all).
_SECRET_NAME = re.compile(r"pass|token|secret|key|credential", re.IGNORECASE)


def token_kind(host: Host) -> str:
    if host.agent_token is None:
        return "none"
    return "vault" if host.agent_token.is_vaulted else "set"


def masked_vars(variables: Any) -> dict[str, Any]:
    def mask(key: str, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and "__ansible_vault__" in value:
            return "<vault>"
        if _SECRET_NAME.search(key) and not key.endswith("_file"):
            return "<hidden>"
        return value

    return {str(k): mask(str(k), v) for k, v in variables.items()}


def host_dict(host: Host, *, with_vars: bool = False) -> dict[str, Any]:
    """A host in the ``--json`` list."""
    doc: dict[str, Any] = {
        "name": host.name, "address": host.address, "port": host.agent_port, "groups": list(host.groups),
        "expected_chips": host.expected_chips, "token": token_kind(host),
    }
    if with_vars:
        doc["vars"] = masked_vars(host.vars)
    return doc


def print_hosts(hosts: Sequence[Host], *, with_vars: bool, wide: bool = False) -> None:
    """The host table (``wide``: every group, and the variables), and a count on a terminal.

    The table keeps to 80 columns for usual names: the first group only; ``wide`` or ``--vars``
    add what does not fit.
    """
    from rich.table import Table  # here: ``--json`` does not load rich
    from rich.text import Text

    from fleetctl.views.console import is_terminal, show
    from fleetctl.views.text import cell, ident, outside

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("HOST", "ADDRESS", "PORT", "CHIPS", "TOKEN", "GROUPS" if wide else "GROUP"):
        table.add_column(name, justify="right" if name in ("PORT", "CHIPS") else "left",
                         overflow="fold" if name == "GROUPS" else "ellipsis", no_wrap=name != "GROUPS")
    if with_vars or wide:
        table.add_column("VARS", overflow="fold")
    for h in hosts:
        row: list[Text | str] = [
            ident(h.name), ident(h.address), str(h.agent_port),
            "-" if h.expected_chips is None else str(h.expected_chips), token_kind(h),
            cell(",".join(h.groups) or "-") if wide else ident(h.first_group),
        ]
        if with_vars or wide:  # every variable, however long: the column folds
            row.append(outside(" ".join(f"{k}={v}" for k, v in sorted(masked_vars(h.vars).items()))))
        table.add_row(*row)
    show(table)
    if is_terminal():  # a pipe gets records only
        show(Text(f"{len(hosts)} hosts", style="dim"))
