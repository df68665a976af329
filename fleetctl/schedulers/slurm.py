"""Slurm through its own clients: ``scontrol`` to drain/resume and read node state, ``squeue`` for jobs.

The clients run where Slurm's client configuration is: locally, or on the inventory's Slurm
controller host over SSH (``fleet_slurm_controller``). A node's Slurm name defaults to the inventory
name (``fleet_slurm_node_name`` overrides it).

State mapping (``scontrol show node -o``, e.g. ``State=ALLOCATED+DRAIN``): the DRAIN flag with jobs
still allocated (ALLOCATED, MIXED, COMPLETING) is *draining*; DRAIN on an idle or down node is
*drained*; DOWN or NOT_RESPONDING without DRAIN is *down*.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fleetctl.schedulers.base import (
    ForeignDrainError,
    HostLike,
    NodeState,
    SchedState,
    SchedulerError,
)
from fleetctl.schedulers.transport import CommandResult, CommandRunner

_BUSY = {"ALLOCATED", "MIXED", "COMPLETING"}
_DOWN = {"DOWN", "NOT_RESPONDING", "FAIL", "ERROR", "FUTURE", "POWERED_DOWN", "POWERING_DOWN"}
# Slurm appends "[user@time]" to a reason set through scontrol.
_REASON_SUFFIX = re.compile(r"\s*\[[^\]@]*@[^\]]*\]\s*$")
_NOT_FOUND = ("invalid node name", "node not found", "not found")


def parse_node_line(line: str) -> tuple[str, NodeState]:
    """Parse one line of ``scontrol show node -o`` into (node name, state)."""
    fields = _fields(line)
    name = fields.get("NodeName")
    raw_state = fields.get("State")
    if not name or raw_state is None:
        raise SchedulerError(f"unexpected scontrol output: {line[:120]!r}")
    parts = set(raw_state.rstrip("*$~#!%@^-").split("+"))
    reason = fields.get("Reason")
    if reason is not None:
        reason = _REASON_SUFFIX.sub("", reason).strip() or None
    drain = "DRAIN" in parts
    if drain:
        state = SchedState.DRAINING if parts & _BUSY else SchedState.DRAINED
    elif parts & _DOWN:
        state = SchedState.DOWN
    elif parts & {"IDLE", "ALLOCATED", "MIXED", "COMPLETING", "PLANNED", "RESERVED", "MAINTENANCE"}:
        state = SchedState.ACTIVE
    else:
        state = SchedState.UNKNOWN
    return name, NodeState(state, reason if (drain or state is SchedState.DOWN) else None, raw_state)


_NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# Fields that ``scontrol show node -o`` prints after Reason (Reason holds spaces, so it ends where
# the next of these begins, not at the end of the line).
_AFTER_REASON = re.compile(r" (?=(?:Comment|Extra|InstanceId|InstanceType|LastBusyTime|ResumeAfterTime)=)")


def _fields(line: str) -> dict[str, str]:
    """key=value pairs; ``Reason`` runs to the next field Slurm prints after it, or the line's end."""
    head, sep, rest = line.strip().partition(" Reason=")
    parts = _AFTER_REASON.split(rest, maxsplit=1)
    reason, tail = parts[0], (parts[1] if len(parts) > 1 else "")
    fields: dict[str, str] = {}
    for token in (head + " " + tail).split():
        key, eq, value = token.partition("=")
        if eq:
            fields[key] = value
    if sep:
        fields["Reason"] = reason
    return fields


class SlurmScheduler:
    kind = "slurm"

    def __init__(self, runner: CommandRunner, *, timeout_s: float = 30.0) -> None:
        self.runner = runner
        self.timeout_s = timeout_s

    @staticmethod
    def node_name(host: HostLike) -> str:
        name = str(host.vars.get("fleet_slurm_node_name") or host.name)
        # One node, by its plain name: a hostlist ("gpu[1-3]", "a,b") would drain several nodes
        # while max-unavailable counts one, and a leading "-" would be read as an scontrol option.
        if not _NODE_NAME.fullmatch(name):
            raise SchedulerError(f"{host.name}: {name!r} is not a single Slurm node name (set "
                                 "fleet_slurm_node_name to the node's name: letters, digits, '.', '_', '-')")
        return name

    def _run(self, argv: Sequence[str], host: HostLike | None = None) -> CommandResult:
        who = f"{host.name}: " if host else ""
        try:
            result = self.runner.run(argv, timeout=self.timeout_s)
        except OSError as exc:  # the client could not even start (E2BIG, EACCES, ...): Slurm was not told
            raise SchedulerError(f"{who}Slurm ({self.runner.where}): cannot run {argv[0]}: "
                                 f"{exc.strerror or exc}") from None
        if result.rc != 0:
            msg = result.last_error_line()
            if host is not None and any(s in msg.lower() for s in _NOT_FOUND):
                raise SchedulerError(f"{who}Slurm has no node named {self.node_name(host)!r} ({msg})")
            raise SchedulerError(f"{who}Slurm ({self.runner.where}): {' '.join(argv[:2])} failed: {msg}")
        return result

    def state(self, host: HostLike) -> NodeState:
        out = self._run(["scontrol", "show", "node", "-o", self.node_name(host)], host).stdout
        for line in out.splitlines():
            if line.strip():
                return parse_node_line(line)[1]
        raise SchedulerError(f"{host.name}: Slurm has no node named {self.node_name(host)!r}")

    def states(self, hosts: Sequence[HostLike]) -> dict[str, NodeState]:
        """All nodes in one ``scontrol`` call (a fleet of thousands is one round trip)."""
        out = self._run(["scontrol", "show", "node", "-o"]).stdout
        by_node = dict(parse_node_line(ln) for ln in out.splitlines() if ln.strip())
        result: dict[str, NodeState] = {}
        for host in hosts:
            try:
                node = self.node_name(host)
            except SchedulerError as exc:  # one bad name must not hide every other node's state
                result[host.name] = NodeState(SchedState.UNKNOWN, None, str(exc))
                continue
            result[host.name] = by_node.get(node, NodeState(SchedState.UNKNOWN, None, "not in Slurm"))
        return result

    def drain(self, host: HostLike, reason: str) -> None:
        current = self.state(host)
        if current.foreign_drain:
            raise ForeignDrainError(f"{host.name}: already drained in Slurm by someone else "
                                    f"(Reason={current.reason!r}); left as it is")
        if current.state in (SchedState.DRAINING, SchedState.DRAINED):
            return  # ours already; a second update would only rewrite the reason
        self._run(["scontrol", "update", f"NodeName={self.node_name(host)}", "State=DRAIN",
                   f"Reason={reason}"], host)

    def undrain(self, host: HostLike) -> None:
        current = self.state(host)
        if current.state not in (SchedState.DRAINING, SchedState.DRAINED):
            return
        if not current.ours:
            raise ForeignDrainError(f"{host.name}: drained in Slurm by someone else "
                                    f"(Reason={current.reason!r}); not resuming it")
        self._run(["scontrol", "update", f"NodeName={self.node_name(host)}", "State=RESUME"], host)

    def running_workloads(self, host: HostLike) -> list[str]:
        out = self._run(["squeue", "-h", "-w", self.node_name(host), "-t", "RUNNING,COMPLETING,SUSPENDED",
                         "-o", "%i %u %j"], host).stdout
        return [f"job {line.strip()}" for line in out.splitlines() if line.strip()]
