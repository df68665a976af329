"""The one small interface every cluster scheduler adapter implements.

A scheduler knows whether a host may receive work (``state``), how to stop new work landing on it
and move running work off (``drain``), how to put it back (``undrain``) and what still runs there
(``running_workloads``). ``drain`` is idempotent and makes progress each time it is called: the
drain loop calls it again while it waits (Kubernetes retries evictions that a PodDisruptionBudget
refused; Slurm does nothing once the node is already draining for fleetctl).

Drain reasons are tagged ``fleetctl:<user>: <text>`` so a drain someone else set is recognised and
never overwritten or undone.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fleetctl.errors import FleetctlError, UsageError

REASON_PREFIX = "fleetctl:"
_TAG = re.compile(r"^fleetctl:[^:\s]+: \S")


class HostLike(Protocol):
    """What the adapters need of an inventory host (fleetctl.inventory.Host has it)."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def vars(self) -> Mapping[str, Any]: ...


class SchedState(enum.StrEnum):
    """What the scheduler says about a host, reduced to what drain logic needs."""

    ACTIVE = "active"  # schedulable
    DRAINING = "draining"  # unschedulable, work still running
    DRAINED = "drained"  # unschedulable, nothing running
    DOWN = "down"  # not responding / not ready: unavailable, but not drained by anyone
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeState:
    state: SchedState
    reason: str | None = None  # the drain reason the scheduler holds, if any
    detail: str = ""  # the scheduler's own words, e.g. "ALLOCATED+DRAIN"

    @property
    def ours(self) -> bool:
        """True when the drain (if any) was set by fleetctl."""
        return self.reason is not None and is_fleetctl_reason(self.reason)

    @property
    def foreign_drain(self) -> bool:
        """Unschedulable or down with a reason fleetctl did not write: never touch it."""
        if self.state in (SchedState.DRAINING, SchedState.DRAINED):
            return not self.ours
        return self.state is SchedState.DOWN and bool(self.reason) and not self.ours

    @property
    def available(self) -> bool:
        return self.state is SchedState.ACTIVE


class SchedulerError(FleetctlError):
    """The scheduler could not be asked or refused a command (down, unknown node, ...; exit 1)."""


class ForeignDrainError(SchedulerError):
    """The host was drained by someone else; fleetctl reports it and leaves it alone."""


class SchedulerConfigError(UsageError):
    """An inventory variable that selects or configures a scheduler is wrong (exit 2)."""


@runtime_checkable
class Scheduler(Protocol):
    kind: str

    def state(self, host: HostLike) -> NodeState: ...

    def drain(self, host: HostLike, reason: str) -> None: ...

    def undrain(self, host: HostLike) -> None: ...

    def running_workloads(self, host: HostLike) -> list[str]: ...


def states(scheduler: Scheduler, hosts: Iterable[HostLike]) -> dict[str, NodeState]:
    """Many hosts' states; adapters with a bulk query (Slurm) provide ``states`` themselves."""
    bulk = getattr(scheduler, "states", None)
    if bulk is not None:
        result: dict[str, NodeState] = bulk(list(hosts))
        return result
    return {h.name: scheduler.state(h) for h in hosts}


def tag_reason(user: str, text: str) -> str:
    """``fleetctl:<user>: <text>``; the text is required and kept on one line."""
    text = " ".join(text.split())
    if not text:
        raise ValueError("a drain reason is required (--reason TEXT)")
    user = re.sub(r"[^A-Za-z0-9._@-]", "_", user) or "unknown"
    return f"{REASON_PREFIX}{user}: {text}"


def is_fleetctl_reason(reason: str) -> bool:
    return bool(_TAG.match(reason))
