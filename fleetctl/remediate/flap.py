"""Flap damping: a host repaired again and again goes to quarantine instead of round and round.

The remediation history is data the caller reads from the audit log: one :class:`Started` per
remediation started, whatever became of it. Only those that drained the host count (a report-only
decision starts nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fleetctl.remediate.policy import FlapDamping


@dataclass(frozen=True)
class Started:
    """A remediation started on ``host`` at ``at`` (``kind``: repair, quarantine, rma); ``ended_at``:
    when the host went back to service (None while it is out)."""

    host: str
    at: float
    kind: str = "repair"
    ended_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "at": self.at, "kind": self.kind, "ended_at": self.ended_at}


def answered_until(host: str, history: Iterable[Started]) -> float | None:
    """The time up to which ``host``'s observations were answered by a remediation: the end of its
    latest (its start while it is still out); None when it never had one."""
    times = [s.ended_at if s.ended_at is not None else s.at for s in history if s.host == host]
    return max(times, default=None)


def in_window(history: Iterable[Started], now: float, window_s: float) -> list[Started]:
    """The starts within ``(now - window_s, now]``; a start stamped after ``now`` (another machine's
    clock) counts too: it happened, and counting it errs on the side of doing less."""
    return [s for s in history if s.at > now - window_s]


@dataclass(frozen=True)
class Flapping:
    host: str
    recent: int  # repairs started within the window
    damping: FlapDamping

    @property
    def flapping(self) -> bool:
        return self.recent >= self.damping.max_remediations

    def why(self) -> str:
        return (f"flapping: {self.recent} remediations within {self.damping.window_s:.0f}s "
                f"(max {self.damping.max_remediations}): quarantined instead of another repair")


def flapping(host: str, history: Iterable[Started], now: float, damping: FlapDamping) -> Flapping:
    """Whether ``host`` already had the most repairs the window allows: then the next is a quarantine."""
    mine = [s for s in history if s.host == host and s.kind == "repair"]
    return Flapping(host, len(in_window(mine, now, damping.window_s)), damping)
