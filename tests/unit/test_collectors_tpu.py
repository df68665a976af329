"""TPU presence from a sysfs tree in a temporary directory; the collector over fake metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_agent.collectors.tpu import (
    METRIC_DUTY_CYCLE,
    METRIC_HBM_TOTAL,
    METRIC_HBM_USAGE,
    MetricsUnavailable,
    SysfsTpuPresence,
    TpuCollector,
    TpuDevice,
)
from fleet_agent.sim import builtin_scenario, load_scenario, parse_scenario


def pci_device(root: Path, addr: str, vendor: str, device: str, subsystem: str = "0x0000") -> None:
    d = root / addr
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "device").write_text(device + "\n")
    (d / "subsystem_device").write_text(subsystem + "\n")


def test_presence_lists_tpu_chips_and_skips_other_google_devices(tmp_path: Path) -> None:
    sysfs = tmp_path / "devices"
    for i in range(4):
        pci_device(sysfs, f"0000:00:{4 + i:02x}.0", "0x1ae0", "0x0063")
    pci_device(sysfs, "0000:00:03.0", "0x1ae0", "0x0042")  # gVNIC, also Google's vendor id
    pci_device(sysfs, "0000:3b:00.0", "0x10de", "0x2330")  # an NVIDIA GPU
    chips = SysfsTpuPresence(str(sysfs), str(tmp_path / "dev")).scan()
    assert [c.pci_address for c in chips] == ["0000:00:04.0", "0000:00:05.0", "0000:00:06.0", "0000:00:07.0"]
    assert {c.model for c in chips} == {"TPU v5e"}


def test_presence_models_from_device_and_subsystem_ids(tmp_path: Path) -> None:
    sysfs = tmp_path / "devices"
    pci_device(sysfs, "0000:00:04.0", "0x1ae0", "0x005e")
    pci_device(sysfs, "0000:00:05.0", "0x1ae0", "0x0027", "0x004f")
    pci_device(sysfs, "0000:00:06.0", "0x1ae0", "0x006f")
    pci_device(sysfs, "0000:00:07.0", "0x1ae0", "0x0062")
    chips = SysfsTpuPresence(str(sysfs), str(tmp_path)).scan()
    assert [(c.model, c.cores) for c in chips] == [
        ("TPU v4", 1), ("TPU v3", 2), ("TPU v6e", 1), ("TPU v5p", 1)]


def test_presence_groups_functions_of_one_chip(tmp_path: Path) -> None:
    sysfs = tmp_path / "devices"
    pci_device(sysfs, "0000:00:04.0", "0x1ae0", "0x0076")
    pci_device(sysfs, "0000:00:04.1", "0x1ae0", "0x0076")
    chips = SysfsTpuPresence(str(sysfs), str(tmp_path)).scan()
    assert len(chips) == 1 and chips[0].model == "TPU7x" and chips[0].cores == 2


def test_presence_falls_back_to_accel_nodes(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in (0, 1, 2, 10):
        (dev / f"accel{i}").write_text("")
    (dev / "accelerometer").write_text("")
    chips = SysfsTpuPresence(str(tmp_path / "no-sysfs"), str(dev)).scan()
    assert len(chips) == 4


def test_no_tpu_no_chips(tmp_path: Path) -> None:
    assert SysfsTpuPresence(str(tmp_path / "x"), str(tmp_path / "y")).scan() == []


class CountingClient:
    def __init__(self, cores: int = 1, chips: int = 2, up: bool = True) -> None:
        self.cores, self.chips, self.up = cores, chips, up
        self.calls: list[str] = []

    def get_metric(self, name: str) -> list[tuple[int, float]]:
        self.calls.append(name)
        if not self.up:
            raise MetricsUnavailable("connection refused")
        devices = self.chips * self.cores
        if name == METRIC_DUTY_CYCLE:
            return [(c, 10.0 * (c + 1)) for c in range(self.chips)]
        if name == METRIC_HBM_USAGE:
            return [(d, 1000 + d) for d in range(devices)]
        if name == METRIC_HBM_TOTAL:
            return [(d, 8000) for d in range(devices)]
        raise MetricsUnavailable(name)

    def close(self) -> None:
        pass


class Presence:
    def __init__(self, devices: list[TpuDevice]) -> None:
        self.devices = devices

    def scan(self) -> list[TpuDevice]:
        return self.devices


def test_collector_maps_runtime_devices_to_chips_and_sums_cores() -> None:
    client = CountingClient(cores=2, chips=2)
    col = TpuCollector(client, Presence([TpuDevice("0000:00:04.0", "TPU v3", 2),
                                         TpuDevice("0000:00:05.0", "TPU v3", 2)]))
    chips = col.discover()
    assert [c.uuid for c in chips] == ["tpu-0000:00:04.0", "tpu-0000:00:05.0"]
    second = col.sample_chip(chips[1])
    assert second.tpu is not None and second.tpu.runtime_metrics_available
    assert second.tpu.duty_cycle_pct == 20.0 and second.utilization_pct == 20.0
    assert second.memory_used_bytes == 1002 + 1003 and second.memory_total_bytes == 16000
    assert second.tpu.tensorcore_utilization_pct is None  # not served over gRPC
    col.sample_chip(chips[0])
    assert len(client.calls) == 3  # one fetch served both chips


def test_service_not_answering_is_not_a_fault() -> None:
    col = TpuCollector(CountingClient(up=False), Presence([TpuDevice("0000:00:04.0", "TPU v5e", 1)]))
    rep = col.sample_chip(col.discover()[0])
    assert rep.error is None and rep.tpu is not None
    assert rep.tpu.runtime_metrics_available is False
    assert rep.memory_used_bytes is None and rep.utilization_pct is None


def test_fetch_is_repeated_after_reuse_window() -> None:
    now = [100.0]
    client = CountingClient()
    col = TpuCollector(client, Presence([TpuDevice("a", "TPU v5e", 1)]), reuse_s=1.0, clock=lambda: now[0])
    chip = col.discover()[0]
    col.sample_chip(chip)
    now[0] += 2
    col.sample_chip(chip)
    assert len(client.calls) == 6


def test_simulated_tpu_host_through_the_real_collector() -> None:
    sc = load_scenario(builtin_scenario("demo"))
    host = next(h for h in sc.hosts() if h.kind == "tpu")
    col = host.collector()
    chips = col.discover()
    assert len(chips) == 8 and chips[0].model == "TPU v5e"
    rep = col.sample_chip(chips[3])
    assert rep.memory_total_bytes == 16 * 1024**3
    assert rep.memory_used_bytes is not None and 0 < rep.memory_used_bytes < rep.memory_total_bytes
    assert rep.tpu is not None and rep.tpu.duty_cycle_pct is not None


@pytest.mark.parametrize(("kind", "expect_chips", "available"), [
    ("metrics_unavailable", 4, False),
    ("chip_missing", 3, True),
])
def test_tpu_faults(kind: str, expect_chips: int, available: bool) -> None:
    fault = {"kind": kind, "group": "t", "hosts": [0]}
    if kind == "chip_missing":
        fault["chips"] = [1]
    sc = parse_scenario({"groups": [{"name": "t", "count": 1, "kind": "tpu", "model": "v4", "chips": 4}],
                         "faults": [fault]})
    col = sc.host(0).collector()
    chips = col.discover()
    assert len(chips) == expect_chips
    rep = col.sample_chip(chips[-1])
    assert rep.tpu is not None and rep.tpu.runtime_metrics_available is available


def test_tpu_hang_blocks_the_metrics_call_until_released() -> None:
    import threading

    sc = parse_scenario({"groups": [{"name": "t", "count": 1, "kind": "tpu", "model": "v5e", "chips": 4}],
                         "faults": [{"kind": "hang", "group": "t", "hosts": [0], "chips": [2]}]})
    host = sc.host(0)
    col = host.collector()
    chips = col.discover()  # presence comes from PCI: it does not hang
    assert len(chips) == 4
    done = threading.Event()
    thread = threading.Thread(target=lambda: (col.sample_chip(chips[0]), done.set()), daemon=True)
    thread.start()
    assert not done.wait(0.3)
    host.release_hangs()
    assert done.wait(5)
    rep = col.sample_chip(chips[2])
    assert rep.tpu is not None and rep.tpu.runtime_metrics_available
