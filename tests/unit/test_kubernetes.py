"""The Kubernetes adapter's decisions, with a fake CoreV1Api (the real client's model objects)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from fleetctl.schedulers.base import ForeignDrainError, SchedState, SchedulerError
from fleetctl.schedulers.kubernetes import REASON_ANNOTATION, KubernetesScheduler, is_evictable


@dataclass(frozen=True)
class FakeHost:
    name: str
    address: str = "127.0.0.1"
    vars: Mapping[str, Any] = field(default_factory=dict)


def pod(name: str, *, owner: str | None = "ReplicaSet", phase: str = "Running", mirror: bool = False,
        terminating: bool = False) -> client.V1Pod:
    refs = [client.V1OwnerReference(api_version="apps/v1", kind=owner, name="o", uid="u")] if owner else None
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace="ml", owner_references=refs,
                                     annotations={"kubernetes.io/config.mirror": "x"} if mirror else None,
                                     deletion_timestamp="2026-01-01T00:00:00Z" if terminating else None),
        status=client.V1PodStatus(phase=phase))


class FakeCore:
    def __init__(self, pods: list[client.V1Pod], *, unschedulable: bool = False,
                 annotations: dict[str, str] | None = None, ready: str = "True") -> None:
        self.node = client.V1Node(
            metadata=client.V1ObjectMeta(name="n1", annotations=annotations),
            spec=client.V1NodeSpec(unschedulable=unschedulable),
            status=client.V1NodeStatus(conditions=[client.V1NodeCondition(type="Ready", status=ready)]))
        self.pods = pods
        self.patches: list[dict[str, Any]] = []
        self.evictions: list[tuple[str, int | None]] = []
        self.refuse: dict[str, int] = {}  # pod -> HTTP status to answer

    def read_node(self, name: str) -> client.V1Node:
        if name != "n1":
            raise ApiException(status=404, reason="Not Found")
        return self.node

    def patch_node(self, name: str, body: dict[str, Any], field_manager: str | None = None) -> client.V1Node:
        """A merge patch; ``spec.unschedulable`` changes owner in managedFields as on a real server."""
        if field_manager == "fleetctl":
            self.patches.append(body)
        if "unschedulable" in body.get("spec", {}):
            self.node.spec.unschedulable = body["spec"]["unschedulable"]
            # the field's one owner is whoever set it last (every entry here owns only this field)
            entries: list[client.V1ManagedFieldsEntry] = []
            if body["spec"]["unschedulable"] is not None:
                entries.append(client.V1ManagedFieldsEntry(
                    manager=field_manager or "unknown", operation="Update", fields_type="FieldsV1",
                    fields_v1={"f:spec": {"f:unschedulable": {}}}))
            self.node.metadata.managed_fields = entries
        if "metadata" in body:
            merged = {**(self.node.metadata.annotations or {}), **body["metadata"]["annotations"]}
            self.node.metadata.annotations = {k: v for k, v in merged.items() if v}
        return self.node

    def list_pod_for_all_namespaces(self, field_selector: str) -> client.V1PodList:
        assert field_selector == "spec.nodeName=n1"
        return client.V1PodList(items=list(self.pods))

    def create_namespaced_pod_eviction(self, name: str, namespace: str, body: client.V1Eviction) -> None:
        self.evictions.append((name, body.delete_options.grace_period_seconds))
        if name in self.refuse:
            raise ApiException(status=self.refuse[name], reason="refused")


def sched(core: FakeCore, grace: int | None = 30) -> KubernetesScheduler:
    s = KubernetesScheduler(client.ApiClient(client.Configuration()), grace_period_s=grace)
    s.core = core
    return s


def test_what_a_drain_moves() -> None:
    assert is_evictable(pod("web"))
    assert is_evictable(pod("bare", owner=None))
    assert not is_evictable(pod("dcgm", owner="DaemonSet"))
    assert not is_evictable(pod("static", owner=None, mirror=True))
    assert not is_evictable(pod("done", phase="Succeeded"))
    assert not is_evictable(pod("crashed", phase="Failed"))


def test_drain_cordons_with_reason_and_evicts_with_grace() -> None:
    core = FakeCore([pod("a"), pod("b"), pod("ds", owner="DaemonSet"), pod("gone", terminating=True)])
    core.refuse = {"b": 429}
    s = sched(core, grace=45)
    s.drain(FakeHost("n1"), "fleetctl:al: x")
    assert core.patches == [{"spec": {"unschedulable": True},
                             "metadata": {"annotations": {REASON_ANNOTATION: "fleetctl:al: x"}}}]
    assert core.evictions == [("a", 45), ("b", 45)]  # b's 429 is not an error: retried next call
    st = s.state(FakeHost("n1"))
    assert st.state is SchedState.DRAINING and st.ours
    assert s.running_workloads(FakeHost("n1")) == ["pod ml/a", "pod ml/b", "pod ml/gone"]
    core.pods = [pod("ds", owner="DaemonSet")]
    assert s.state(FakeHost("n1")).state is SchedState.DRAINED
    s.drain(FakeHost("n1"), "fleetctl:al: x")
    assert len(core.patches) == 1  # cordoned already: no second patch


def test_eviction_errors_other_than_budget_fail_loudly() -> None:
    core = FakeCore([pod("a")])
    core.refuse = {"a": 403}
    with pytest.raises(SchedulerError, match="evict ml/a: HTTP 403"):
        sched(core).drain(FakeHost("n1"), "fleetctl:al: x")


def test_foreign_cordon_and_not_ready_node() -> None:
    core = FakeCore([], unschedulable=True)
    st = sched(core).state(FakeHost("n1"))
    assert st.foreign_drain and st.state is SchedState.DRAINED
    with pytest.raises(ForeignDrainError):
        sched(core).drain(FakeHost("n1"), "fleetctl:al: x")
    with pytest.raises(ForeignDrainError):
        sched(core).undrain(FakeHost("n1"))
    assert core.patches == []
    assert sched(FakeCore([], ready="Unknown")).state(FakeHost("n1")).state is SchedState.DOWN


def test_undrain_removes_cordon_and_annotation() -> None:
    core = FakeCore([], unschedulable=True, annotations={REASON_ANNOTATION: "fleetctl:al: x"})
    sched(core).undrain(FakeHost("n1"))
    assert core.patches == [{"spec": {"unschedulable": None},
                             "metadata": {"annotations": {REASON_ANNOTATION: None}}}]
    assert not core.node.spec.unschedulable


def test_node_name_variable_and_unknown_node() -> None:
    core = FakeCore([])
    assert sched(core).state(FakeHost("inv-name", vars={"fleet_kubernetes_node_name": "n1"})).available
    with pytest.raises(SchedulerError, match="Kubernetes has no node named 'inv-name'"):
        sched(core).state(FakeHost("inv-name"))


def test_a_cordon_by_someone_else_after_kubectl_uncordon_is_not_fleetctls() -> None:
    # kubectl uncordon keeps fleetctl's reason annotation; the field's owner tells the cordons apart
    core = FakeCore([])
    s = sched(core)
    s.drain(FakeHost("n1"), "fleetctl:al: gpu swap")
    assert s.state(FakeHost("n1")).ours
    core.patch_node("n1", {"spec": {"unschedulable": None}}, field_manager="kubectl-uncordon")
    assert core.node.metadata.annotations == {REASON_ANNOTATION: "fleetctl:al: gpu swap"}
    assert s.state(FakeHost("n1")).state is SchedState.ACTIVE
    core.patch_node("n1", {"spec": {"unschedulable": True}}, field_manager="kubectl-cordon")
    st = s.state(FakeHost("n1"))
    assert st.state is SchedState.DRAINED and st.foreign_drain and not st.ours
    assert st.reason is not None and st.reason.startswith("cordoned by kubectl-cordon")
    with pytest.raises(ForeignDrainError, match="cordoned by someone else"):
        s.undrain(FakeHost("n1"))
    with pytest.raises(ForeignDrainError, match="already cordoned by someone else"):
        s.drain(FakeHost("n1"), "fleetctl:al: again")
    assert len(core.patches) == 1 and core.node.spec.unschedulable  # left as it is


def test_a_cordon_by_an_earlier_fleetctl_stays_fleetctls_after_the_upgrade() -> None:
    # fleetctl before its own field manager patched as the client's default, "OpenAPI-Generator"
    core = FakeCore([], annotations={REASON_ANNOTATION: "fleetctl:al: x"})
    core.patch_node("n1", {"spec": {"unschedulable": True}}, field_manager="OpenAPI-Generator")
    assert sched(core).state(FakeHost("n1")).ours
    core.patch_node("n1", {"spec": {"unschedulable": True}}, field_manager="kubectl-cordon")
    assert not sched(core).state(FakeHost("n1")).ours


def test_without_managed_fields_the_annotation_still_decides() -> None:
    # a server (or an old object) that records no field ownership: fleetctl's annotation is trusted
    core = FakeCore([], unschedulable=True, annotations={REASON_ANNOTATION: "fleetctl:al: x"})
    assert sched(core).state(FakeHost("n1")).ours
