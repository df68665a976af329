"""The Kubernetes adapter over real HTTP, against a local stand-in for the few API endpoints it uses.

No API server can run in this environment, so :class:`StandInApi` implements just what fleetctl
calls, with the semantics that matter: ``GET/PATCH /api/v1/nodes/{name}`` (merge patch, null
deletes; ``metadata.managedFields`` names the field manager that set ``spec.unschedulable``
last: the ``fieldManager`` parameter, else the User-Agent's product, as the API server records
it), ``GET /api/v1/pods?fieldSelector=spec.nodeName=…`` and ``POST …/pods/{name}/eviction``
(201, or 429 while a "PodDisruptionBudget" refuses; an evicted pod terminates after its grace
period). The official ``kubernetes`` client talks to it exactly as it would to a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from fleetctl import drain as core
from fleetctl.schedulers.base import ForeignDrainError, SchedState, SchedulerError
from fleetctl.schedulers.kubernetes import REASON_ANNOTATION, KubernetesScheduler
from fleetctl.state import db
from fleetctl.state import hosts as hs

pytestmark = pytest.mark.integration


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386): null deletes a key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _set_owner(node: dict[str, Any], spec_field: str, manager: str | None) -> None:
    """The field now belongs to ``manager`` alone (an Update takes a changed field from its old
    owner); None: the field was removed, nobody owns it."""
    key = f"f:{spec_field}"
    entries = []
    for entry in node["metadata"].get("managedFields", []):
        entry["fieldsV1"].get("f:spec", {}).pop(key, None)
        if entry["fieldsV1"].get("f:spec") == {}:
            entry["fieldsV1"].pop("f:spec")
        if entry["fieldsV1"]:
            entries.append(entry)
    if manager is not None:
        entries.append({"manager": manager, "operation": "Update", "apiVersion": "v1",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {key: {}}}})
    node["metadata"]["managedFields"] = entries


@dataclass
class StandInApi:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pdb_refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # 429s before allowing
    evictions: list[tuple[str, str, int, int | None]] = field(default_factory=list)  # ns, name, status, grace
    patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # node, content type, body
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_node(self, name: str, *, unschedulable: bool = False, annotations: dict[str, str] | None = None,
                 ready: str = "True") -> None:
        node: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "annotations": dict(annotations or {}),
                         "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                                            "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }
        if unschedulable:
            node["spec"]["unschedulable"] = True
            _set_owner(node, "unschedulable", "kubectl-cordon")
        self.nodes[name] = node

    def add_pod(self, node: str, ns: str, name: str, *, owner: str | None = "ReplicaSet",
                phase: str = "Running", mirror: bool = False) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "annotations": {}}
        if owner:
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner",
                                        "uid": f"owner-{name}", "controller": True}]
        if mirror:
            meta["annotations"]["kubernetes.io/config.mirror"] = "abc"
        self.pods[(ns, name)] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                                 "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
                                 "status": {"phase": phase}}

    def reap(self) -> None:
        """Pods whose grace period has passed are gone."""
        now = time.time()
        for key, pod in list(self.pods.items()):
            if pod.get("_gone_at") is not None and pod["_gone_at"] <= now:
                del self.pods[key]


def _handler(api: StandInApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                              "reason": reason, "message": message})

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            doc: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return doc

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            with api.lock:
                api.reap()
                if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
                    node = api.nodes.get(parts[3])
                    if node is None:
                        return self._status(404, "NotFound", f'nodes "{parts[3]}" not found')
                    return self._send(200, node)
                if parts == ["api", "v1", "pods"]:
                    selector = parse_qs(url.query).get("fieldSelector", [""])[0]
                    node_name = selector.removeprefix("spec.nodeName=")
                    items = [{k: v for k, v in p.items() if not k.startswith("_")}
                             for p in api.pods.values() if p["spec"]["nodeName"] == node_name]
                    return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                                            "items": items})
            return self._status(404, "NotFound", self.path)

        def do_PATCH(self) -> None:
            parts = urlparse(self.path).path.strip("/").split("/")
            body = self._body()
            with api.lock:
                if parts[:3] == ["api", "v1", "nodes"] and parts[3] in api.nodes:
                    api.patches.append((parts[3], self.headers.get("Content-Type", ""), body))
                    node = api.nodes[parts[3]]
                    _merge(node, body)
                    if "unschedulable" in body.get("spec", {}):
                        manager = parse_qs(urlparse(self.path).query).get("fieldManager", [""])[0] \
                            or self.headers.get("User-Agent", "unknown").split("/")[0]
                        _set_owner(node, "unschedulable", manager if body["spec"]["unschedulable"] else None)
                    return self._send(200, node)
            return self._status(404, "NotFound", self.path)

        def do_POST(self) -> None:
            parts = urlparse(self.path).path.strip("/").split("/")
            body = self._body()
            # /api/v1/namespaces/{ns}/pods/{name}/eviction
            if len(parts) == 7 and parts[2] == "namespaces" and parts[4] == "pods" and parts[6] == "eviction":
                key = (parts[3], parts[5])
                grace = (body.get("deleteOptions") or {}).get("gracePeriodSeconds")
                with api.lock:
                    if key not in api.pods:
                        return self._status(404, "NotFound", f'pods "{key[1]}" not found')
                    if api.pdb_refusals.get(key, 0) > 0:
                        api.pdb_refusals[key] -= 1
                        api.evictions.append((*key, 429, grace))
                        return self._status(429, "TooManyRequests", "Cannot evict pod as it would "
                                            "violate the pod's disruption budget.")
                    api.evictions.append((*key, 201, grace))
                    pod = api.pods[key]
                    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                    pod["_gone_at"] = time.time() + min(grace if grace is not None else 1, 1)
                return self._send(201, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            return self._status(404, "NotFound", self.path)

    return Handler


@pytest.fixture()
def api_server() -> Iterator[tuple[StandInApi, str]]:
    api = StandInApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Host:
    name: str
    address: str = "127.0.0.1"
    vars: dict[str, Any] = field(default_factory=dict)


def _scheduler(url: str, grace: int | None = 5) -> KubernetesScheduler:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = url
    return KubernetesScheduler(client.ApiClient(cfg), grace_period_s=grace)


def _cluster(api: StandInApi) -> None:
    api.add_node("gpu-1")
    api.add_pod("gpu-1", "ml", "trainer-0")
    api.add_pod("gpu-1", "ml", "server-0")
    api.pdb_refusals[("ml", "server-0")] = 2  # the PodDisruptionBudget refuses twice
    api.add_pod("gpu-1", "kube-system", "dcgm-exporter-x", owner="DaemonSet")
    api.add_pod("gpu-1", "kube-system", "kube-proxy-gpu-1", owner=None, mirror=True)
    api.add_pod("gpu-1", "ml", "done-job", owner="Job", phase="Succeeded")
    api.add_node("gpu-2")


def test_drain_cordons_evicts_through_pdb_and_undrains(api_server: tuple[StandInApi, str],
                                                        tmp_path: Path) -> None:
    api, url = api_server
    _cluster(api)
    sched = _scheduler(url)
    host = Host("gpu-1")
    conn = db.connect(tmp_path / "s.db", schema=hs.SCHEMA)
    opts = core.DrainOptions(reason="firmware", actor="alice", timeout_s=60, poll_s=0.2)
    [out] = core.drain(conn, [host], [host, Host("gpu-2")], lambda h: sched, opts)
    assert out.ok and out.state == "drained", out.message

    node = api.nodes["gpu-1"]
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"][REASON_ANNOTATION] == "fleetctl:alice: firmware"
    evicted = [(ns, n, code) for ns, n, code, _ in api.evictions]
    assert evicted.count(("ml", "server-0", 429)) == 2  # retried after the budget refused
    assert ("ml", "server-0", 201) in evicted and ("ml", "trainer-0", 201) in evicted
    assert {n for _, n, _ in evicted} == {"trainer-0", "server-0"}  # DaemonSet/mirror/finished left alone
    assert all(grace == 5 for *_, grace in api.evictions)
    assert ("kube-system", "dcgm-exporter-x") in api.pods and ("kube-system", "kube-proxy-gpu-1") in api.pods

    [out] = core.undrain(conn, [host], lambda h: sched, None, actor="alice")
    assert out.ok
    assert "unschedulable" not in api.nodes["gpu-1"]["spec"]
    assert REASON_ANNOTATION not in api.nodes["gpu-1"]["metadata"]["annotations"]
    assert sched.state(host).state is SchedState.ACTIVE


def test_pdb_that_never_allows_times_out_to_drain_failed(api_server: tuple[StandInApi, str],
                                                         tmp_path: Path) -> None:
    api, url = api_server
    _cluster(api)
    api.pdb_refusals[("ml", "server-0")] = 10_000
    sched = _scheduler(url)
    conn = db.connect(tmp_path / "s.db", schema=hs.SCHEMA)
    opts = core.DrainOptions(reason="x", actor="a", timeout_s=1.5, poll_s=0.2)
    [out] = core.drain(conn, [Host("gpu-1")], [Host("gpu-1")], lambda h: sched, opts)
    assert not out.ok and out.state == "drain_failed"
    assert "pod ml/server-0" in out.message
    assert api.nodes["gpu-1"]["spec"]["unschedulable"] is True  # stays cordoned


def test_foreign_cordon_and_unknown_node_and_api_down(api_server: tuple[StandInApi, str]) -> None:
    api, url = api_server
    api.add_node("gpu-3", unschedulable=True)  # cordoned by someone with kubectl
    sched = _scheduler(url)
    with pytest.raises(ForeignDrainError, match="someone else"):
        sched.drain(Host("gpu-3"), "fleetctl:a: x")
    with pytest.raises(ForeignDrainError):
        sched.undrain(Host("gpu-3"))
    assert api.patches == []
    with pytest.raises(SchedulerError, match="Kubernetes has no node named 'nope'"):
        sched.state(Host("nope"))
    down = _scheduler("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(SchedulerError, match="Kubernetes API unreachable"):
        down.state(Host("gpu-1"))


def test_cli_drain_and_status_with_a_kubeconfig(api_server: tuple[StandInApi, str], tmp_path: Path) -> None:
    api, url = api_server
    _cluster(api)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "u"}}],
    }))
    inventory = tmp_path / "inv.ini"
    inventory.write_text(f"[k8s]\ngpu-1\ngpu-2\n[k8s:vars]\nfleet_scheduler=kubernetes\n"
                         f"fleet_kubeconfig={kubeconfig}\nfleet_kubernetes_grace_period_s=3\n")
    env = {**os.environ, "FLEETCTL_DB": str(tmp_path / "s.db"), "FLEETCTL_INVENTORY": str(inventory),
           "FLEETCTL_CACHE_DIR": str(tmp_path / "cache")}
    fleetctl = [str(Path(sys.executable).parent / "fleetctl")]
    done = subprocess.run([*fleetctl, "drain", "gpu-1", "--reason", "swap HBM", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"][0]["state"] == "drained"
    assert all(grace == 3 for *_, grace in api.evictions)
    st = subprocess.run([*fleetctl, "status", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    rows = {r["host"]: r for r in json.loads(st.stdout)["hosts"]}
    assert rows["gpu-1"]["scheduler"] == "kubernetes" and rows["gpu-1"]["scheduler_state"] == "drained"
    assert rows["gpu-1"]["reason"].startswith("fleetctl:") and rows["gpu-1"]["reason"].endswith(": swap HBM")
    assert rows["gpu-2"]["state"] == "active" and rows["gpu-2"]["scheduler_state"] == "active"


def _kubectl_patch(url: str, node: str, body: dict[str, Any], manager: str) -> None:
    """What ``kubectl cordon``/``uncordon`` send: a patch of spec.unschedulable alone."""
    import urllib.request

    request = urllib.request.Request(f"{url}/api/v1/nodes/{node}?fieldManager={manager}", method="PATCH",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/strategic-merge-patch+json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def test_a_cordon_by_someone_else_after_kubectl_uncordon_is_left_alone(
        api_server: tuple[StandInApi, str], tmp_path: Path) -> None:
    api, url = api_server
    api.add_node("gpu-1")
    sched = _scheduler(url)
    host = Host("gpu-1")
    conn = db.connect(tmp_path / "s.db", schema=hs.SCHEMA)
    opts = core.DrainOptions(reason="firmware", actor="alice", timeout_s=30, poll_s=0.2)
    [out] = core.drain(conn, [host], [host], lambda h: sched, opts)
    assert out.ok and sched.state(host).ours
    owners = [e["manager"] for e in api.nodes["gpu-1"]["metadata"]["managedFields"]
              if "f:unschedulable" in e["fieldsV1"].get("f:spec", {})]
    assert owners == ["fleetctl"]  # the client sent fleetctl's field manager

    _kubectl_patch(url, "gpu-1", {"spec": {"unschedulable": None}}, "kubectl-uncordon")
    assert api.nodes["gpu-1"]["metadata"]["annotations"][REASON_ANNOTATION] == "fleetctl:alice: firmware"
    _kubectl_patch(url, "gpu-1", {"spec": {"unschedulable": True}}, "kubectl-cordon")
    state = sched.state(host)
    assert state.state is SchedState.DRAINED and state.foreign_drain
    assert state.reason is not None and state.reason.startswith("cordoned by kubectl-cordon")
    patches = len(api.patches)
    [out] = core.undrain(conn, [host], lambda h: sched, None, actor="alice")
    assert not out.ok and "someone else" in (out.message or "")
    assert len(api.patches) == patches and api.nodes["gpu-1"]["spec"]["unschedulable"] is True
