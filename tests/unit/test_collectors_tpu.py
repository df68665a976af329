"""TPU presence from a sysfs tree in a temporary directory; the collector over fake metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_agent.collectors.tpu import (
    METRIC_DUTY_CYCLE,
    METRIC_HBM_BW_UTIL,
    METRIC_HBM_TOTAL,
    METRIC_HBM_USAGE,
    MetricsUnavailable,
    SysfsTpuPresence,
    TpuCollector,
    TpuDevice,
)
from fleet_agent.sim import builtin_scenario, load_scenario, parse_scenario
from fleet_agent.sim.fake_tpu import FakeTpuChip, FakeTpuMetrics, FakeTpuPresence
from fleet_agent.sim.models import TpuModel
from fleet_agent.sim.specs import Load

GIB = 1024**3


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
    assert chips[0].duty_per_device


def test_only_tpu7x_reports_duty_per_device(tmp_path: Path) -> None:
    sysfs = tmp_path / "devices"
    pci_device(sysfs, "0000:00:04.0", "0x1ae0", "0x0027", "0x004f")  # v3: two devices, duty per chip
    pci_device(sysfs, "0000:00:05.0", "0x1ae0", "0x0062")  # v5p: one (megacore) device
    chips = SysfsTpuPresence(str(sysfs), str(tmp_path)).scan()
    assert [(c.model, c.cores, c.duty_per_device) for c in chips] == [
        ("TPU v3", 2, False), ("TPU v5p", 1, False)]


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
    """libtpu's replies for ``chips`` chips of ``cores`` devices each.

    ``duty`` is the duty-cycle reply as libtpu gives it: one reading per chip, or per device
    (TPU7x). Replies come in reverse device order: the service promises no order.
    """

    def __init__(self, cores: int = 1, chips: int = 2, up: bool = True,
                 duty: list[tuple[int, float]] | None = None,
                 hbm_util: list[tuple[int, float]] | None = None) -> None:
        self.cores, self.chips, self.up = cores, chips, up
        devices = chips * cores
        # One reading per chip, on the id of the chip's first device (what the simulation does).
        self.duty = duty if duty is not None else [(c * cores, 10.0 * (c + 1)) for c in range(chips)]
        self.hbm_util = hbm_util
        self.used = [(d, 1000.0 + d) for d in range(devices)]
        self.total = [(d, 8000.0) for d in range(devices)]
        self.calls: list[str] = []

    def get_metric(self, name: str) -> list[tuple[int, float]]:
        self.calls.append(name)
        if not self.up:
            raise MetricsUnavailable("connection refused")
        reply = {METRIC_DUTY_CYCLE: self.duty, METRIC_HBM_USAGE: self.used, METRIC_HBM_TOTAL: self.total,
                 METRIC_HBM_BW_UTIL: self.hbm_util}.get(name)
        if reply is None:
            raise MetricsUnavailable(f"{name}: NOT_FOUND")
        return list(reversed(reply))

    def close(self) -> None:
        pass


class Presence:
    def __init__(self, devices: list[TpuDevice]) -> None:
        self.devices = devices

    def scan(self) -> list[TpuDevice]:
        return self.devices


def v3(n: int) -> Presence:
    return Presence([TpuDevice(f"0000:00:{4 + i:02x}.0", "TPU v3", 2) for i in range(n)])


def tpu7x(n: int) -> Presence:
    return Presence([TpuDevice(f"0000:00:{4 + i:02x}.0", "TPU7x", 2, duty_per_device=True) for i in range(n)])


def test_collector_maps_runtime_devices_to_chips_and_sums_cores() -> None:
    client = CountingClient(cores=2, chips=2)
    col = TpuCollector(client, v3(2))
    chips = col.discover()
    assert [c.uuid for c in chips] == ["tpu-0000:00:04.0", "tpu-0000:00:05.0"]
    second = col.sample_chip(chips[1])
    assert second.tpu is not None and second.tpu.runtime_metrics_available
    # The second chip's reading carries id 2 (its first device): read by order, not taken for chip 2.
    assert second.tpu.duty_cycle_pct == 20.0 and second.utilization_pct == 20.0
    assert second.memory_used_bytes == 1002 + 1003 and second.memory_total_bytes == 16000
    assert second.tpu.tensorcore_utilization_pct is None  # not served over gRPC
    assert second.tpu.hbm_bandwidth_utilization_pct is None  # this libtpu does not serve it
    col.sample_chip(chips[0])
    assert len(client.calls) == 4  # one fetch (three metrics and the optional one) served both chips


def test_duty_cycle_per_device_is_averaged_over_the_chips_devices() -> None:
    # TPU7x: libtpu reports the duty cycle of each TensorCore (device); chip 1 is devices 2 and 3.
    client = CountingClient(cores=2, chips=2, duty=[(0, 10.0), (1, 30.0), (2, 50.0), (3, 90.0)])
    col = TpuCollector(client, tpu7x(2))
    first, second = (col.sample_chip(c) for c in col.discover())
    assert first.tpu is not None and second.tpu is not None
    assert first.tpu.duty_cycle_pct == 20.0 and first.utilization_pct == 20.0
    assert second.tpu.duty_cycle_pct == 70.0  # not device 1's 30: that is the first chip's core
    assert second.memory_used_bytes == 1002 + 1003


def test_hbm_bandwidth_utilisation_per_chip() -> None:
    util = [(0, 40.0), (1, 60.0), (2, 10.0), (3, 20.0)]
    col = TpuCollector(CountingClient(cores=2, chips=2, hbm_util=util), v3(2))
    reps = [col.sample_chip(c) for c in col.discover()]
    assert [r.tpu.hbm_bandwidth_utilization_pct for r in reps if r.tpu] == [50.0, 15.0]


def test_reply_that_does_not_fit_the_chips_is_not_mapped() -> None:
    # A workload holding one of two chips: two device readings for four devices present. Which
    # chip they belong to is not in the reply, so no chip gets them.
    client = CountingClient(cores=2, chips=1, duty=[(0, 55.0)])
    col = TpuCollector(client, v3(2))
    reps = [col.sample_chip(c) for c in col.discover()]
    assert all(r.tpu is not None and r.tpu.runtime_metrics_available for r in reps)
    assert [r.memory_used_bytes for r in reps] == [None, None]
    assert [r.utilization_pct for r in reps] == [None, None]


def test_service_not_answering_is_not_a_fault() -> None:
    col = TpuCollector(CountingClient(up=False), Presence([TpuDevice("0000:00:04.0", "TPU v5e", 1)]))
    rep = col.sample_chip(col.discover()[0])
    assert rep.error is None and rep.tpu is not None
    assert rep.tpu.runtime_metrics_available is False
    assert rep.memory_used_bytes is None and rep.utilization_pct is None


def test_fetch_is_repeated_after_reuse_window() -> None:
    now = [100.0]
    client = CountingClient()
    col = TpuCollector(client, Presence([TpuDevice("a", "TPU v5e", 1)]), reuse_s=1.0,
                       monotonic=lambda: now[0])
    chip = col.discover()[0]
    col.sample_chip(chip)
    now[0] += 2
    col.sample_chip(chip)
    assert len(client.calls) == 8


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
    # The chips left still get their own readings (libtpu numbers the devices it sees).
    assert (rep.tpu.duty_cycle_pct is not None) is available
    assert (rep.memory_used_bytes is not None) is available


def test_tpu_hang_blocks_the_metrics_call_until_released() -> None:
    import threading

    sc = parse_scenario({"groups": [{"name": "t", "count": 1, "kind": "tpu", "model": "v5e", "chips": 4}],
                         "faults": [{"kind": "hang", "group": "t", "hosts": [0], "chips": [2]}]})
    host = sc.host(0)
    col = host.collector()
    chips = col.discover()  # presence comes from PCI: it does not hang
    assert len(chips) == 4
    done = threading.Event()

    def sample() -> None:
        col.sample_chip(chips[0])
        done.set()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    assert not done.wait(0.3)
    host.release_hangs()
    assert done.wait(5)
    rep = col.sample_chip(chips[2])
    assert rep.tpu is not None and rep.tpu.runtime_metrics_available


def _sim_chips(model: TpuModel, n: int) -> tuple[FakeTpuPresence, FakeTpuMetrics]:
    chips = [FakeTpuChip(i, model, phase=0.4 * i, load=Load(), faults=()) for i in range(n)]
    return (FakeTpuPresence(chips, lambda: 1000.0, 0.0),
            FakeTpuMetrics(chips, lambda: 1000.0, 0.0, serving=True))


@pytest.mark.parametrize("model", [TpuModel("7x", "TPU7x", 192 * GIB, 0x0076, 2),
                                   TpuModel("v3", "TPU v3", 32 * GIB, 0x0027, 2)])
def test_simulated_multi_device_chips_through_the_real_collector(model: TpuModel) -> None:
    presence, fake = _sim_chips(model, 4)
    col = TpuCollector(fake, presence)
    chips = col.discover()
    reps = [col.sample_chip(c) for c in chips]
    duty = sorted(fake.get_metric(METRIC_DUTY_CYCLE))
    util = sorted(fake.get_metric(METRIC_HBM_BW_UTIL))
    if model.name == "TPU7x":  # per device: the chip is the mean of its two
        assert len(duty) == 8
        want = [(duty[2 * i][1] + duty[2 * i + 1][1]) / 2 for i in range(4)]
        assert want[1] != duty[1][1]  # chip 1's value is not device 1's (the first chip's core)
    else:  # per chip, on the id of the chip's first device
        assert [d for d, _ in duty] == [0, 2, 4, 6]
        want = [v for _, v in duty]
    assert [r.tpu.duty_cycle_pct for r in reps if r.tpu] == pytest.approx(want)
    assert [r.tpu.hbm_bandwidth_utilization_pct for r in reps if r.tpu] == pytest.approx(
        [(util[2 * i][1] + util[2 * i + 1][1]) / 2 for i in range(4)])
    assert {r.memory_total_bytes for r in reps} == {model.hbm_bytes}


def test_simulated_older_libtpu_without_hbm_bandwidth() -> None:
    model = TpuModel("v5e", "TPU v5e", 16 * GIB, 0x0063, 1)
    chips = [FakeTpuChip(i, model, phase=0.0, load=Load(), faults=()) for i in range(2)]
    fake = FakeTpuMetrics(chips, lambda: 10.0, 0.0, serving=True, hbm_bandwidth=False)
    col = TpuCollector(fake, FakeTpuPresence(chips, lambda: 10.0, 0.0))
    rep = col.sample_chip(col.discover()[1])
    assert rep.tpu is not None and rep.tpu.runtime_metrics_available
    assert rep.tpu.hbm_bandwidth_utilization_pct is None
    assert rep.tpu.duty_cycle_pct is not None and rep.memory_used_bytes is not None


def test_a_tpu_collector_on_a_host_without_tpus_reports_a_problem_naming_why(tmp_path: Path) -> None:
    # Explicitly configured (collectors: [tpu]) on a host with no TPU: zero chips and a healthy
    # collector would look like an empty, well host.
    import concurrent.futures as cf

    from fleet_agent.collectors.base import CollectorError
    from fleet_agent.health import HealthConfig, assess
    from fleet_agent.sampler import Sampler

    sys_root = tmp_path / "pci"
    pci_device(sys_root, "0000:00:05.0", "0x1ae0", "0x0042")  # a gVNIC: Google, not a TPU
    presence = SysfsTpuPresence(str(sys_root), str(tmp_path / "dev"))
    col = TpuCollector(CountingClient(), presence)
    with pytest.raises(CollectorError, match=r"no TPU chips found: no Google TPU .* under .*pci"
                                             r" and no .*dev/accel\* device node"):
        col.discover()
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        sampler = Sampler(hostname="tpu-1", collectors=[col], host=None, executor=pool,
                          assess=lambda report, now: assess(report, HealthConfig(), now))
        report = sampler.sample_once()
    [state] = [s for s in report.collectors if s.name == "tpu"]
    assert state.ok is False and state.error is not None and "no TPU chips found" in state.error
    assert report.chips == []
    # the chips coming back (a driver reload) ends the problem
    pci_device(sys_root, "0000:00:04.0", "0x1ae0", "0x0063")
    assert [c.model for c in col.discover()] == ["TPU v5e"]
