"""Scheduler ``none``: for fleets without a scheduler, the drain is a file on the host.

fleet-agent's ``drained_file`` setting names the file; while it exists the agent reports
``drained: true`` (with the file's content as the reason) in ``/v1/node`` and ``fleet_node_drained 1``,
so load balancers and alerting can act on it. The file is written atomically (temp file + rename)
over the host's own connection (SSH, or local for ``ansible_connection=local``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence

from fleetctl.schedulers.base import ForeignDrainError, HostLike, NodeState, SchedState, SchedulerError
from fleetctl.schedulers.transport import CommandResult, CommandRunner, runner_for

DEFAULT_DRAINED_FILE = "/var/lib/fleet-agent/drained"
DRAINED_FILE_VAR = "fleet_agent_drained_file"


class _Guarded:
    """A host's runner whose OS errors (the command could not start) are scheduler errors."""

    def __init__(self, host: HostLike, runner: CommandRunner) -> None:
        self.host, self.runner, self.where = host, runner, runner.where

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        try:
            return self.runner.run(argv, stdin=stdin, timeout=timeout)
        except OSError as exc:
            raise SchedulerError(f"{self.host.name}: cannot run {argv[0]} ({self.where}): "
                                 f"{exc.strerror or exc}") from None


class NoneScheduler:
    kind = "none"

    def __init__(self, runner_factory: Callable[[HostLike], CommandRunner] = runner_for) -> None:
        self._factory = runner_factory

    def _runner_factory(self, host: HostLike) -> CommandRunner:
        return _Guarded(host, self._factory(host))

    @staticmethod
    def drained_file(host: HostLike) -> str:
        path = str(host.vars.get(DRAINED_FILE_VAR) or DEFAULT_DRAINED_FILE)
        if not posixpath.isabs(path):
            raise SchedulerError(f"{host.name}: {DRAINED_FILE_VAR}={path!r} must be an absolute path")
        return path

    def state(self, host: HostLike) -> NodeState:
        path = self.drained_file(host)
        result = self._runner_factory(host).run(["cat", "--", path])
        if result.rc == 0:
            return NodeState(SchedState.DRAINED, result.stdout.strip() or None, f"drained file {path}")
        if "no such file" in result.stderr.lower():
            return NodeState(SchedState.ACTIVE, None, "no drained file")
        raise SchedulerError(f"{host.name}: cannot read {path}: {result.last_error_line()}")

    def pool_states(self, hosts: Sequence[HostLike]) -> dict[str, NodeState]:
        """The hosts' drained flags as their agents report them (``/v1/node``), for counting a pool.

        One SSH connection per host is too slow for counting a fleet of thousands; the agents
        read the same file and answer in one fan-out. An agent that does not answer counts as down.
        The few hosts an agent reports drained are confirmed on the host itself: an agent's
        report is up to one sampling interval old, and a file fleetctl removed a moment ago must
        not count.
        """
        from fleetctl.inventory import Host

        if not all(isinstance(h, Host) for h in hosts):
            return {h.name: self._state_or_down(h) for h in hosts}
        from fleetctl.fanout import FanoutOptions, fetch_all

        def token(h: Host) -> str | None:
            return h.agent_token.reveal() if h.agent_token is not None else None

        result: dict[str, NodeState] = {}
        for r in fetch_all([h for h in hosts if isinstance(h, Host)], token,
                           FanoutOptions(timeout_s=5.0, deadline_s=60.0)):
            if r.report is None:
                result[r.host.name] = NodeState(SchedState.DOWN, None, f"agent {r.kind}: {r.detail}")
            elif r.report.drained:
                result[r.host.name] = self._state_or_down(r.host)
            else:
                result[r.host.name] = NodeState(SchedState.ACTIVE, None, "agent reports not drained")
        return result

    def _state_or_down(self, host: HostLike) -> NodeState:
        try:
            return self.state(host)
        except SchedulerError as exc:
            return NodeState(SchedState.DOWN, None, f"unreachable: {exc}")

    def drain(self, host: HostLike, reason: str) -> None:
        current = self.state(host)
        if current.state is SchedState.DRAINED:
            if not current.ours:
                raise ForeignDrainError(f"{host.name}: already drained by someone else "
                                        f"({current.reason or 'empty drained file'!r}); left as it is")
            return
        path = self.drained_file(host)
        tmp = f"{path}.fleetctl-tmp"
        runner = self._runner_factory(host)
        for argv, stdin in (
            (["mkdir", "-p", "--", posixpath.dirname(path)], None),
            (["tee", "--", tmp], reason + "\n"),
            (["mv", "-f", "--", tmp, path], None),
        ):
            result = runner.run(argv, stdin=stdin)
            if result.rc != 0:
                raise SchedulerError(f"{host.name}: cannot write {path}: {result.last_error_line()}")

    def undrain(self, host: HostLike) -> None:
        current = self.state(host)
        if current.state is not SchedState.DRAINED:
            return
        if not current.ours:
            raise ForeignDrainError(f"{host.name}: drained by someone else ({current.reason!r}); "
                                    "not removing the drained file")
        path = self.drained_file(host)
        result = self._runner_factory(host).run(["rm", "-f", "--", path])
        if result.rc != 0:
            raise SchedulerError(f"{host.name}: cannot remove {path}: {result.last_error_line()}")

    def running_workloads(self, host: HostLike) -> list[str]:
        return []  # without a scheduler there is nothing to ask; the drain is immediate
