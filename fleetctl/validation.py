"""Inputs more than one command takes, each checked in one place with one message.

Core modules call these (so a caller that skips the CLI gets the same checks) and commands pass
the raw option text through; every failure is a :class:`~fleetctl.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fleetctl.errors import UsageError

# ASCII digits only (\d takes any script's) and no space inside: "5 %" is a typo to refuse.
_SIZE = re.compile(r"([0-9]+)(%?)")
REASON_REQUIRED = "a reason is required: --reason TEXT"


@dataclass(frozen=True)
class Size:
    """``N`` hosts or ``N%`` of a pool (rounded down, never below 1 so a rollout can progress).

    The value of ``--batch`` (provision, maintain) and ``--max-unavailable`` (drain, maintain).
    """

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str, option: str) -> Size:
        m = _SIZE.fullmatch(text.strip())
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(1)) > 100):
            raise UsageError(f"{option} {text!r}: expected a number of hosts N >= 1 or a percentage 1%..100%")
        return cls(int(m.group(1)), bool(m.group(2)))

    def of(self, total: int) -> int:
        if not self.percent:
            return self.value
        return max(1, math.floor(total * self.value / 100))

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


def require_reason(reason: str | None) -> str:
    """A drain reason: required, and not only whitespace."""
    if reason is None or not reason.strip():
        raise UsageError(REASON_REQUIRED)
    return reason


def one_of(option: str, value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else a usage error listing them."""
    choices = tuple(allowed)
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")
    return value
