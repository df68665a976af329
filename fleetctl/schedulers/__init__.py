"""Cluster scheduler adapters behind one interface (:mod:`fleetctl.schedulers.base`).

Which one a host uses is an inventory variable, usually set per group:

- ``fleet_scheduler: slurm`` — ``fleet_slurm_node_name`` (default: the inventory name) and
  ``fleet_slurm_controller`` (an inventory host to run scontrol/squeue on over SSH; default: here);
- ``fleet_scheduler: kubernetes`` — ``fleet_kubernetes_node_name``, ``fleet_kubeconfig``,
  ``fleet_kubernetes_context``, ``fleet_kubernetes_grace_period_s``;
- ``fleet_scheduler: none`` (the default) — ``fleet_agent_drained_file`` on the host itself.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetctl.schedulers.base import (
    ForeignDrainError,
    HostLike,
    NodeState,
    SchedState,
    Scheduler,
    SchedulerConfigError,
    SchedulerError,
    is_fleetctl_reason,
    tag_reason,
)
from fleetctl.schedulers.transport import LocalRunner, runner_for

KINDS = ("slurm", "kubernetes", "none")

__all__ = [
    "KINDS",
    "ForeignDrainError",
    "NodeState",
    "SchedState",
    "Scheduler",
    "SchedulerConfigError",
    "SchedulerError",
    "SchedulerFactory",
    "is_fleetctl_reason",
    "tag_reason",
]


class SchedulerFactory:
    """Picks (and caches) the scheduler adapter for each host from its inventory variables.

    ``resolve`` looks an inventory host up by name (for ``fleet_slurm_controller``).
    """

    def __init__(self, resolve: Callable[[str], HostLike | None]) -> None:
        self._resolve = resolve
        self._cache: dict[tuple[str, ...], Scheduler] = {}

    def kind(self, host: HostLike) -> str:
        kind = str(host.vars.get("fleet_scheduler", "none")).strip().lower()
        if kind not in KINDS:
            raise SchedulerConfigError(
                f"{host.name}: fleet_scheduler={kind!r} is not one of {', '.join(KINDS)}")
        return kind

    def __call__(self, host: HostLike) -> Scheduler:
        kind = self.kind(host)
        if kind == "slurm":
            controller = host.vars.get("fleet_slurm_controller")
            key: tuple[str, ...] = ("slurm", str(controller or ""))
            if key not in self._cache:
                self._cache[key] = self._slurm(host, str(controller) if controller else None)
        elif kind == "kubernetes":
            config_file = host.vars.get("fleet_kubeconfig")
            context = host.vars.get("fleet_kubernetes_context")
            grace = host.vars.get("fleet_kubernetes_grace_period_s")
            key = ("kubernetes", str(config_file or ""), str(context or ""), str(grace))
            if key not in self._cache:
                from fleetctl.schedulers.kubernetes import KubernetesScheduler

                try:
                    grace_s = int(grace) if grace is not None else None
                except (TypeError, ValueError):
                    raise SchedulerConfigError(f"{host.name}: fleet_kubernetes_grace_period_s={grace!r} "
                                               "is not a whole number of seconds") from None
                self._cache[key] = KubernetesScheduler.from_kubeconfig(
                    str(config_file) if config_file else None, str(context) if context else None, grace_s)
        else:
            key = ("none",)
            if key not in self._cache:
                from fleetctl.schedulers.none import NoneScheduler

                self._cache[key] = NoneScheduler()
        return self._cache[key]

    def _slurm(self, host: HostLike, controller: str | None) -> Scheduler:
        from fleetctl.schedulers.slurm import SlurmScheduler

        if controller is None:
            return SlurmScheduler(LocalRunner())
        target = self._resolve(controller)
        if target is None:
            raise SchedulerConfigError(f"{host.name}: fleet_slurm_controller={controller!r} is not a host "
                                       "in the inventory")
        return SlurmScheduler(runner_for(target))
