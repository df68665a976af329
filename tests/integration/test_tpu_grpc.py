"""The real TPU metrics client against a real gRPC server speaking libtpu's runtime metrics protocol.

The server is the servicer tpu-info's generated stubs define, on 127.0.0.1, with the local
credentials libtpu's service uses; the collector reads it through GrpcRuntimeMetricsClient.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleet_agent.collectors.tpu import (
    METRIC_DUTY_CYCLE,
    METRIC_HBM_BW_UTIL,
    METRIC_HBM_TOTAL,
    METRIC_HBM_USAGE,
    GrpcRuntimeMetricsClient,
    SysfsTpuPresence,
    TpuCollector,
)
from tpu_info.proto import tpu_metric_service_pb2 as pb
from tpu_info.proto import tpu_metric_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

GIB = 1024**3


def free_port(lo: int = 18400, hi: int = 18499) -> int:
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18400-18499")


Reply = dict[str, list[tuple[int, tuple[str, Any]]]]

V5E: Reply = {  # four v5e chips (one device each), as libtpu reports them while a workload runs
    METRIC_HBM_TOTAL: [(i, ("as_int", 16 * GIB)) for i in range(4)],
    METRIC_HBM_USAGE: [(i, ("as_int", (i + 1) * GIB)) for i in range(4)],
    METRIC_DUTY_CYCLE: [(i, ("as_double", 25.0 * i + 0.5)) for i in range(4)],
    METRIC_HBM_BW_UTIL: [(i, ("as_double", 10.0 * i)) for i in range(4)],
}
TPU7X: Reply = {  # two TPU7x chips: two devices each, duty cycle per device too
    METRIC_HBM_TOTAL: [(d, ("as_int", 96 * GIB)) for d in range(4)],
    METRIC_HBM_USAGE: [(d, ("as_int", (d + 1) * GIB)) for d in range(4)],
    METRIC_DUTY_CYCLE: [(0, ("as_double", 10.0)), (1, ("as_double", 30.0)), (2, ("as_double", 60.0)),
                        (3, ("as_double", 100.0))],
}  # and no HBM bandwidth metric: an older libtpu


class Servicer(pb_grpc.RuntimeMetricServiceServicer):  # type: ignore[misc]
    """libtpu's runtime metrics service, answering ``values``."""

    def __init__(self, values: Reply) -> None:
        self.values = values
        self.requests: list[str] = []

    def GetRuntimeMetric(self, request: Any, context: Any) -> Any:
        self.requests.append(request.metric_name)
        values = self.values
        if request.metric_name not in values:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown metric {request.metric_name}")
        metric = pb.TPUMetric(name=request.metric_name)
        for device, (kind, value) in reversed(values[request.metric_name]):  # order is not promised
            m = metric.metrics.add()
            m.attribute.key = "device-id"
            m.attribute.value.int_attr = device
            setattr(m.gauge, kind, value)
        return pb.MetricResponse(metric=metric)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Servicer]]:
    port = free_port()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Servicer(getattr(request, "param", V5E))
    pb_grpc.add_RuntimeMetricServiceServicer_to_server(servicer, srv)
    creds = grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    srv.add_secure_port(f"127.0.0.1:{port}", creds)
    srv.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        srv.stop(grace=None)


def v5e_sysfs(root: Path) -> SysfsTpuPresence:
    for i in range(4):
        d = root / "devices" / f"0000:00:{4 + i:02x}.0"
        d.mkdir(parents=True)
        (d / "vendor").write_text("0x1ae0\n")
        (d / "device").write_text("0x0063\n")
        (d / "subsystem_device").write_text("0x0000\n")
    return SysfsTpuPresence(str(root / "devices"), str(root / "dev"))


def test_collector_reads_the_runtime_service_over_grpc(server: tuple[str, Servicer], tmp_path: Path) -> None:
    address, servicer = server
    col = TpuCollector(GrpcRuntimeMetricsClient(address, timeout_s=5), v5e_sysfs(tmp_path))
    try:
        chips = col.discover()
        assert [c.model for c in chips] == ["TPU v5e"] * 4
        reports = [col.sample_chip(c) for c in chips]
    finally:
        col.close()
    assert all(r.tpu is not None and r.tpu.runtime_metrics_available for r in reports)
    assert [r.memory_used_bytes for r in reports] == [GIB, 2 * GIB, 3 * GIB, 4 * GIB]
    assert {r.memory_total_bytes for r in reports} == {16 * GIB}
    assert [r.tpu.duty_cycle_pct for r in reports if r.tpu] == [0.5, 25.5, 50.5, 75.5]
    assert [r.tpu.hbm_bandwidth_utilization_pct for r in reports if r.tpu] == [0.0, 10.0, 20.0, 30.0]
    assert sorted(servicer.requests) == sorted([METRIC_DUTY_CYCLE, METRIC_HBM_USAGE, METRIC_HBM_TOTAL,
                                                METRIC_HBM_BW_UTIL])


def tpu7x_sysfs(root: Path) -> SysfsTpuPresence:
    for chip in range(2):
        for fn in range(2):  # a TPU7x chip shows two PCI functions
            d = root / "devices" / f"0000:00:{4 + chip:02x}.{fn}"
            d.mkdir(parents=True)
            (d / "vendor").write_text("0x1ae0\n")
            (d / "device").write_text("0x0076\n")
            (d / "subsystem_device").write_text("0x0000\n")
    return SysfsTpuPresence(str(root / "devices"), str(root / "dev"))


@pytest.mark.parametrize("server", [TPU7X], indirect=True)
def test_two_device_chips_over_grpc(server: tuple[str, Servicer], tmp_path: Path) -> None:
    address, servicer = server
    col = TpuCollector(GrpcRuntimeMetricsClient(address, timeout_s=5), tpu7x_sysfs(tmp_path))
    try:
        reports = [col.sample_chip(c) for c in col.discover()]
    finally:
        col.close()
    assert [r.model for r in reports] == ["TPU7x"] * 2
    # Each chip: its two devices' duty cycles averaged, HBM summed.
    assert [r.tpu.duty_cycle_pct for r in reports if r.tpu] == [20.0, 80.0]
    assert [r.memory_used_bytes for r in reports] == [3 * GIB, 7 * GIB]
    assert [r.memory_total_bytes for r in reports] == [192 * GIB] * 2
    # This libtpu answers NOT_FOUND for the HBM bandwidth metric: the rest of the round stands.
    assert all(r.tpu is not None and r.tpu.runtime_metrics_available for r in reports)
    assert [r.tpu.hbm_bandwidth_utilization_pct for r in reports if r.tpu] == [None, None]
    assert METRIC_HBM_BW_UTIL in servicer.requests


def test_unknown_metric_is_reported_unavailable(server: tuple[str, Servicer]) -> None:
    from fleet_agent.collectors.tpu import MetricsUnavailable

    client = GrpcRuntimeMetricsClient(server[0], timeout_s=5)
    try:
        with pytest.raises(MetricsUnavailable, match="NOT_FOUND"):
            client.get_metric("tpu.runtime.no.such.metric")
    finally:
        client.close()


def test_no_service_listening_means_metrics_unavailable_not_a_fault(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the state of a TPU host with no workload
    col = TpuCollector(GrpcRuntimeMetricsClient(f"127.0.0.1:{port}", timeout_s=2), v5e_sysfs(tmp_path))
    try:
        rep = col.sample_chip(col.discover()[0])
    finally:
        col.close()
    assert rep.error is None and rep.tpu is not None
    assert rep.tpu.runtime_metrics_available is False
    assert rep.memory_used_bytes is None
