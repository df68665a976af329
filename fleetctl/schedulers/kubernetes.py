"""Kubernetes through the official client: cordon, evict through the Eviction API, uncordon.

Evictions (policy/v1) rather than deletes, so PodDisruptionBudgets hold: a 429 means the budget
refuses for now, and the pod is tried again on the next ``drain`` call (the drain loop calls it
with backoff until its timeout). DaemonSet pods and mirror (static) pods stay: evicting them is
pointless (the DaemonSet controller or kubelet puts them straight back). The drain reason sits in
a node annotation, so a cordon that fleetctl did not make is recognised and left alone.

``kubectl uncordon`` leaves that annotation behind, so it alone cannot tell fleetctl's cordon from
a later one by someone else. fleetctl patches under its own field manager, and the API server
records in ``metadata.managedFields`` which manager set ``spec.unschedulable`` last: a cordon whose
field another manager owns is foreign, whatever annotation remains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetctl.schedulers.base import ForeignDrainError, HostLike, NodeState, SchedState, SchedulerError

REASON_ANNOTATION = "fleetctl.io/drain-reason"
FIELD_MANAGER = "fleetctl"  # the name the API server records for fleetctl's patches
# The Python client's default manager, under which fleetctl before FIELD_MANAGER patched: a node
# such a fleetctl cordoned (its annotation present) stays fleetctl's across the upgrade. A script
# of one's own on the same client that cordons after a `kubectl uncordon` reads as fleetctl's too,
# as every cordon with the annotation did before managedFields were consulted.
_EARLIER_FLEETCTL_MANAGER = "OpenAPI-Generator"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_DONE_PHASES = {"Succeeded", "Failed"}


MISSING_CLIENT = ("the Kubernetes scheduler needs the kubernetes client, an optional part of fleetctl: "
                  "pip install 'fleetctl[kubernetes]'")


def _require_client() -> None:
    """Fail in one line, naming the extra, when the optional client is not installed."""
    try:
        import kubernetes  # noqa: F401 - heavy, imported only when a Kubernetes host is touched
    except ImportError:
        raise SchedulerError(MISSING_CLIENT) from None


def _client_errors() -> tuple[type[BaseException], ...]:
    """What the client raises when the API answers with an error or cannot be reached."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    return (ApiException, urllib3.exceptions.HTTPError, OSError)


def _api_error(exc: BaseException, what: str) -> SchedulerError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or str(exc).splitlines()[0][:200]
    if status:
        return SchedulerError(f"Kubernetes API: {what}: HTTP {status} {reason}")
    return SchedulerError(f"Kubernetes API unreachable: {what}: {reason}")


def unschedulable_owners(node: Any) -> list[str]:
    """The field managers that own ``spec.unschedulable`` (from managedFields); empty when the
    server records none (no field tracking, or cleared), and the annotation alone then decides."""
    owners: list[str] = []
    for entry in node.metadata.managed_fields or []:
        fields = entry.fields_v1 if isinstance(entry.fields_v1, Mapping) else {}
        spec = fields.get("f:spec")
        if isinstance(spec, Mapping) and "f:unschedulable" in spec and entry.manager:
            owners.append(str(entry.manager))
    return owners


def is_evictable(pod: Any) -> bool:
    """A pod that a drain must move: not finished, not a mirror pod, not owned by a DaemonSet."""
    if pod.status is not None and pod.status.phase in _DONE_PHASES:
        return False
    annotations: Mapping[str, str] = pod.metadata.annotations or {}
    if MIRROR_ANNOTATION in annotations:
        return False
    return not any(ref.kind == "DaemonSet" for ref in (pod.metadata.owner_references or []))


class KubernetesScheduler:
    kind = "kubernetes"

    def __init__(self, api_client: Any, *, grace_period_s: int | None = None) -> None:
        _require_client()
        from kubernetes import client  # heavy import, only when a Kubernetes host is touched

        self._client = client
        self.core = client.CoreV1Api(api_client)
        self.grace_period_s = grace_period_s

    @classmethod
    def from_kubeconfig(cls, config_file: str | None, context: str | None,
                        grace_period_s: int | None = None) -> KubernetesScheduler:
        _require_client()
        from kubernetes import config

        try:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=config_file, context=context)
        except Exception as exc:  # noqa: BLE001 - the client raises several kinds for a bad kubeconfig
            raise SchedulerError(f"Kubernetes: cannot load kubeconfig {config_file or '~/.kube/config'}"
                                 f"{f' context {context}' if context else ''}: {exc}") from None
        return cls(api_client, grace_period_s=grace_period_s)

    @staticmethod
    def node_name(host: HostLike) -> str:
        return str(host.vars.get("fleet_kubernetes_node_name") or host.name)

    def _node(self, host: HostLike) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_node(self.node_name(host))
        except ApiException as exc:
            if exc.status == 404:
                raise SchedulerError(f"{host.name}: Kubernetes has no node named "
                                     f"{self.node_name(host)!r}") from None
            raise _api_error(exc, f"read node {self.node_name(host)}") from None
        except _client_errors() as exc:
            raise _api_error(exc, f"read node {self.node_name(host)}") from None

    def _pods(self, host: HostLike) -> list[Any]:
        try:
            selector = f"spec.nodeName={self.node_name(host)}"
            pods = self.core.list_pod_for_all_namespaces(field_selector=selector)
        except _client_errors() as exc:
            raise _api_error(exc, f"list pods on {self.node_name(host)}") from None
        return [p for p in pods.items if is_evictable(p)]

    def state(self, host: HostLike) -> NodeState:
        node = self._node(host)
        annotations: Mapping[str, str] = node.metadata.annotations or {}
        reason = annotations.get(REASON_ANNOTATION)
        if node.spec is not None and node.spec.unschedulable:
            owners = unschedulable_owners(node)
            if reason is not None and owners and not {FIELD_MANAGER, _EARLIER_FLEETCTL_MANAGER} & set(owners):
                # fleetctl's cordon was lifted (kubectl uncordon keeps the annotation) and the node
                # cordoned again by someone else: theirs, not fleetctl's.
                reason = f"cordoned by {', '.join(owners)} (a stale fleetctl reason remains: {reason!r})"
            pods = self._pods(host)
            state = SchedState.DRAINING if pods else SchedState.DRAINED
            return NodeState(state, reason or "cordoned (no fleetctl reason)",
                             f"unschedulable, {len(pods)} pods to move")
        ready = next((c.status for c in (node.status.conditions or []) if c.type == "Ready"), None) \
            if node.status is not None else None
        if ready != "True":
            return NodeState(SchedState.DOWN, None, f"Ready={ready}")
        return NodeState(SchedState.ACTIVE, None, "schedulable")

    def drain(self, host: HostLike, reason: str) -> None:
        from kubernetes.client.exceptions import ApiException

        current = self.state(host)
        if current.foreign_drain:
            raise ForeignDrainError(f"{host.name}: already cordoned by someone else ({current.reason!r}); "
                                    "left as it is")
        name = self.node_name(host)
        if current.state not in (SchedState.DRAINING, SchedState.DRAINED):
            body = {"spec": {"unschedulable": True}, "metadata": {"annotations": {REASON_ANNOTATION: reason}}}
            try:
                self.core.patch_node(name, body, field_manager=FIELD_MANAGER)
            except _client_errors() as exc:
                raise _api_error(exc, f"cordon {name}") from None
        for pod in self._pods(host):
            if pod.metadata.deletion_timestamp is not None:
                continue  # already terminating within its grace period
            eviction = self._client.V1Eviction(
                metadata=self._client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
                delete_options=self._client.V1DeleteOptions(grace_period_seconds=self.grace_period_s),
            )
            try:
                self.core.create_namespaced_pod_eviction(pod.metadata.name, pod.metadata.namespace, eviction)
            except ApiException as exc:
                if exc.status in (404, 429):
                    continue  # gone already / a PodDisruptionBudget says not now: retried next call
                raise _api_error(exc, f"evict {pod.metadata.namespace}/{pod.metadata.name}") from None
            except _client_errors() as exc:
                raise _api_error(exc, f"evict {pod.metadata.namespace}/{pod.metadata.name}") from None

    def undrain(self, host: HostLike) -> None:
        current = self.state(host)
        if current.state not in (SchedState.DRAINING, SchedState.DRAINED):
            return
        if not current.ours:
            raise ForeignDrainError(f"{host.name}: cordoned by someone else ({current.reason!r}); "
                                    "not uncordoning it")
        body = {"spec": {"unschedulable": None}, "metadata": {"annotations": {REASON_ANNOTATION: None}}}
        try:
            self.core.patch_node(self.node_name(host), body, field_manager=FIELD_MANAGER)
        except _client_errors() as exc:
            raise _api_error(exc, f"uncordon {self.node_name(host)}") from None

    def running_workloads(self, host: HostLike) -> list[str]:
        return [f"pod {p.metadata.namespace}/{p.metadata.name}" for p in self._pods(host)]
