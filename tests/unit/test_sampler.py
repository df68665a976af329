"""fleet_agent.sampler over a fake collector: deadlines, hung calls not re-issued, recovery,
failed discover, drained file. Health is judged by the real ``assess``."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_agent.collectors.base import ChipIdentity, CollectorError
from fleet_agent.health import HealthConfig, assess
from fleet_agent.sampler import Sampler
from fleet_agent.schema import ChipReport, HostMetrics, NodeReport, Status

TIMEOUT = 1.0  # generous: the healthy chips must answer within it on a busy machine


class FakeCollector:
    """Behind ChipCollector: ``hang`` holds calls for a chip until released, ``fail`` raises."""

    name = "nvml"

    def __init__(self, n: int = 2) -> None:
        self.chips = [ChipIdentity(i, "gpu", "nvidia", "NVIDIA H100 80GB HBM3", f"GPU-{i}",
                                   f"0000:{i:02x}:00.0") for i in range(n)]
        self.calls: dict[int, int] = {}
        self.hang: dict[int, threading.Event] = {}
        self.fail: dict[int, str] = {}
        self.discover_error: str | None = None
        self.discover_hang: threading.Event | None = None
        self.lock = threading.Lock()

    def discover(self) -> list[ChipIdentity]:
        if self.discover_hang is not None:
            self.discover_hang.wait(10)
        if self.discover_error:
            raise CollectorError(self.discover_error)
        return list(self.chips)

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        with self.lock:
            self.calls[chip.index] = self.calls.get(chip.index, 0) + 1
        if chip.index in self.hang:
            self.hang[chip.index].wait(10)
        if chip.index in self.fail:
            raise CollectorError(self.fail[chip.index])
        return ChipReport(index=chip.index, kind=chip.kind, vendor=chip.vendor, model=chip.model,
                          uuid=chip.uuid, pci_bus_id=chip.pci_bus_id, temperature_c=40.0,
                          utilization_pct=10.0)

    def driver_version(self) -> str | None:
        return "550.54.15"

    def close(self) -> None:
        pass


class FakeHost:
    def collect(self) -> HostMetrics:
        return HostMetrics(cpu_pct=12.5, load1=0.5)


@pytest.fixture
def pool() -> Iterator[cf.ThreadPoolExecutor]:
    ex = cf.ThreadPoolExecutor(max_workers=8)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


def _sampler(collector: FakeCollector, pool: cf.Executor, **kw: object) -> Sampler:
    def judge(report: NodeReport, now: float) -> NodeReport:
        return assess(report, HealthConfig(), now)

    return Sampler(hostname="node-1", collectors=[collector], host=FakeHost(), assess=judge,
                   executor=pool, timeout_s=TIMEOUT, interval_s=1.0, **kw)  # type: ignore[arg-type]


def test_healthy_sample(pool: cf.ThreadPoolExecutor) -> None:
    report = _sampler(FakeCollector(), pool, expected_chips=2).sample_once()
    assert report.host == "node-1" and report.status is Status.HEALTHY
    assert [c.index for c in report.chips] == [0, 1]
    assert all(c.status is Status.HEALTHY and not c.stale and c.sampled_at for c in report.chips)
    assert report.host_metrics.cpu_pct == 12.5
    assert {s.name: s.ok for s in report.collectors} == {"nvml": True, "host": True}
    assert report.driver_version == "550.54.15"
    assert report.sample_duration_s is not None


def test_hung_chip_is_stale_unknown_not_reissued_then_recovers(pool: cf.ThreadPoolExecutor) -> None:
    fake = FakeCollector()
    release = threading.Event()
    fake.hang[1] = release
    sampler = _sampler(fake, pool)

    first = sampler.sample_once()
    # sample_once came back while the call is still blocked: the deadline, not the call, ended it.
    assert not release.is_set()
    hung = first.chips[1]
    assert hung.status is Status.UNKNOWN and hung.stale
    assert hung.error == "NVML call timed out after 1.0s"
    assert first.chips[0].status is Status.HEALTHY
    assert first.status is Status.UNKNOWN

    second = sampler.sample_once()
    assert second.chips[1].stale and second.chips[1].error == "NVML call timed out after 1.0s"
    assert fake.calls[1] == 1, "a hung call must not be issued again while it runs"
    assert fake.calls[0] == 2
    assert ("nvml", "GPU-1", 1) in sampler.guard.in_flight()

    release.set()
    del fake.hang[1]
    for _ in range(50):  # wait for the worker thread to finish the late call
        if ("nvml", "GPU-1", 1) not in sampler.guard.in_flight():
            break
        threading.Event().wait(0.02)
    third = sampler.sample_once()
    assert fake.calls[1] == 2
    assert not third.chips[1].stale and third.chips[1].status is Status.HEALTHY
    assert third.status is Status.HEALTHY


def test_chip_call_error_is_reported_per_chip(pool: cf.ThreadPoolExecutor) -> None:
    fake = FakeCollector()
    fake.fail[0] = "NVML: GPU is lost"
    report = _sampler(fake, pool).sample_once()
    lost = report.chips[0]
    assert lost.error == "NVML: GPU is lost" and not lost.stale
    assert lost.status is Status.UNHEALTHY  # gpu_lost is critical
    assert report.chips[1].status is Status.HEALTHY


def test_failed_discover_makes_node_unknown_with_the_error(pool: cf.ThreadPoolExecutor) -> None:
    fake = FakeCollector()
    fake.discover_error = "NVML: Unknown Error"
    report = _sampler(fake, pool).sample_once()
    assert report.chips == []
    assert report.status is Status.UNKNOWN
    nvml = next(s for s in report.collectors if s.name == "nvml")
    assert not nvml.ok and nvml.error == "NVML: Unknown Error"


def test_hung_discover_keeps_known_chips_as_stale(pool: cf.ThreadPoolExecutor) -> None:
    fake = FakeCollector()
    sampler = _sampler(fake, pool)
    sampler.sample_once()
    release = threading.Event()
    fake.discover_hang = release
    report = sampler.sample_once()
    release.set()
    assert [c.index for c in report.chips] == [0, 1]
    assert all(c.stale and c.status is Status.UNKNOWN for c in report.chips)
    assert report.chips[0].sampled_at is not None  # the time of the last good reading
    assert report.status is Status.UNKNOWN


def test_exception_that_is_not_a_collector_error_is_named(pool: cf.ThreadPoolExecutor) -> None:
    fake = FakeCollector()
    fake.sample_chip = lambda chip: (_ for _ in ()).throw(KeyError("boom"))  # type: ignore[method-assign]
    report = _sampler(fake, pool).sample_once()
    assert report.chips[0].error == "NVML: KeyError: 'boom'"


def test_drained_file(tmp_path: Path, pool: cf.ThreadPoolExecutor) -> None:
    drained = tmp_path / "drained"
    sampler = _sampler(FakeCollector(), pool, drained_file=str(drained))
    assert sampler.sample_once().drained is False
    drained.write_text("maintenance: replacing GPU 3\n")
    report = sampler.sample_once()
    assert report.drained is True and report.drained_reason == "maintenance: replacing GPU 3"


class SteppingClock:
    """A wall clock that an NTP correction or a resumed VM steps by ``step`` seconds."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += seconds


def test_a_wall_clock_step_during_a_sample_changes_no_verdict(pool: cf.ThreadPoolExecutor) -> None:
    wall = SteppingClock()

    class Stamping(FakeCollector):
        """A collector that stamps its readings with its own wall clock (as nvml and tpu do)."""

        def discover(self) -> list[ChipIdentity]:
            wall.step(-3600.0)  # the clock is corrected back an hour after the sample began
            return super().discover()

        def sample_chip(self, chip: ChipIdentity) -> ChipReport:
            report = super().sample_chip(chip)
            report.sampled_at = wall()
            return report

    report = _sampler(Stamping(), pool, clock=wall).sample_once()
    assert [c.status for c in report.chips] == [Status.HEALTHY, Status.HEALTHY], report.chips[0].problems
    assert report.status is Status.HEALTHY
    assert all(0.0 <= (c.sampled_at or 0.0) - report.sampled_at < TIMEOUT for c in report.chips)


def test_a_stale_chips_age_is_counted_on_the_monotonic_clock(pool: cf.ThreadPoolExecutor) -> None:
    wall = SteppingClock()
    fake = FakeCollector()
    sampler = _sampler(fake, pool, clock=wall)
    sampler.sample_once()
    wall.step(3600.0)  # a VM resumed: an hour passed by the wall clock, not on the monotonic one
    release = threading.Event()
    fake.discover_hang = release
    report = sampler.sample_once()
    release.set()
    assert all(c.stale and c.status is Status.UNKNOWN for c in report.chips)
    for c in report.chips:
        assert c.sampled_at is not None and 0.0 < report.sampled_at - c.sampled_at < 10.0
        assert "1h" not in c.problems[0].message and "3600" not in c.problems[0].message


class CudaCollector(FakeCollector):
    """A collector that also answers the CUDA version; ``cuda_hang`` holds that call until set."""

    def __init__(self, cuda: str | None = "12.4") -> None:
        super().__init__()
        self.cuda = cuda
        self.cuda_calls = 0
        self.cuda_hang: threading.Event | None = None

    def cuda_driver_version(self) -> str | None:
        self.cuda_calls += 1
        if self.cuda_hang is not None:
            self.cuda_hang.wait(10)
        return self.cuda


def test_the_cuda_version_is_asked_with_the_driver_and_kept(pool: cf.ThreadPoolExecutor) -> None:
    fake = CudaCollector()
    sampler = _sampler(fake, pool)
    reports = [sampler.sample_once() for _ in range(3)]
    assert [(r.driver_version, r.cuda_driver_version) for r in reports] == [("550.54.15", "12.4")] * 3
    assert fake.cuda_calls == 1  # read once, like the driver's version


def test_a_collector_without_the_cuda_call_still_gives_the_driver(pool: cf.ThreadPoolExecutor) -> None:
    report = _sampler(FakeCollector(), pool).sample_once()  # a collector written before the call
    assert (report.driver_version, report.cuda_driver_version) == ("550.54.15", None)


def test_no_cuda_version_is_asked_again_at_the_next_sample(pool: cf.ThreadPoolExecutor) -> None:
    fake = CudaCollector(cuda=None)
    sampler = _sampler(fake, pool)
    sampler.sample_once()
    fake.cuda = "12.2"  # e.g. the library answered later
    assert sampler.sample_once().cuda_driver_version == "12.2" and fake.cuda_calls == 2


def test_a_hung_cuda_call_costs_the_driver_probes_deadline_once(pool: cf.ThreadPoolExecutor) -> None:
    fake = CudaCollector()
    release = threading.Event()
    fake.cuda_hang = release
    sampler = _sampler(fake, pool)
    try:
        first = sampler.sample_once()
        # the probe waited its half second for the CUDA call, not longer, and the rest stands
        assert first.sample_duration_s is not None and first.sample_duration_s < 0.5 + TIMEOUT
        assert (first.driver_version, first.cuda_driver_version) == ("550.54.15", None)
        assert first.status is Status.HEALTHY
        second = sampler.sample_once()  # still hung: not asked again beside the call in flight
        assert second.cuda_driver_version is None and fake.cuda_calls == 1
    finally:
        release.set()
    pause = threading.Event()  # never set: a wait that only times out
    for _ in range(50):  # the released call's thread finishes; the next sample asks again
        if sampler.sample_once().cuda_driver_version == "12.4":
            break
        pause.wait(0.05)
    else:
        pytest.fail("the CUDA version was not read after the hung call ended")
    assert fake.cuda_calls == 2
