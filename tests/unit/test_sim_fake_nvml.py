"""The fake pynvml: faithful to the real module's names, deterministic, slowly varying values."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import pynvml
import pytest
from fleet_agent.sim import parse_scenario
from fleet_agent.sim.fake_nvml import FakeNvml, NVMLError

DOC: dict[str, Any] = {
    "seed": 1,
    "groups": [{"name": "g", "count": 2, "kind": "gpu", "model": "H100-SXM5-80GB", "chips": 8,
                "load": {"base_pct": 50, "amplitude_pct": 40, "period_s": 600}}],
    "faults": [{"kind": "xid", "group": "g", "hosts": [0], "chips": [1], "code": 94, "at": 10,
                "count": 2, "interval_s": 5}],
}


class Clock:
    def __init__(self, t: float = 500.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def started(clock: Clock, seed: int = 1, host: int = 0) -> FakeNvml:
    nv: FakeNvml = parse_scenario({**DOC, "seed": seed}, clock=clock).host(host).nvml
    nv.nvmlInit()
    return nv


def test_error_classes_match_pynvml() -> None:
    nv = started(Clock())
    names = [n for n in dir(nv) if n.startswith("NVMLError_")]
    assert len(names) > 15
    for name in names:
        real, fake = getattr(pynvml, name), getattr(nv, name)
        assert real().value == fake().value, name
        assert str(real()) == str(fake()), name
    lost = NVMLError(15)
    assert type(lost).__name__ == "NVMLError_GpuIsLost" and isinstance(lost, nv.NVMLError)
    assert lost.value == pynvml.NVML_ERROR_GPU_IS_LOST


def test_functions_and_constants_match_pynvml() -> None:
    nv = started(Clock())
    functions = [n for n in dir(FakeNvml) if n.startswith("nvml") and callable(getattr(FakeNvml, n))]
    assert len(functions) > 30
    for name in functions:
        real = list(inspect.signature(getattr(pynvml, name)).parameters)
        fake = list(inspect.signature(getattr(nv, name)).parameters)
        assert fake == real, name
    constants = [n for n in dir(FakeNvml)
                 if n.startswith(("NVML_", "nvml")) and not callable(getattr(FakeNvml, n))]
    for name in constants:
        assert getattr(nv, name) == getattr(pynvml, name), name


@pytest.mark.parametrize(("fault", "error_class", "code"), [
    ("driver_missing", "NVMLError_LibraryNotFound", pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
    ("driver_not_loaded", "NVMLError_DriverNotLoaded", pynvml.NVML_ERROR_DRIVER_NOT_LOADED),
    ("driver_mismatch", "NVMLError_LibRmVersionMismatch", pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH),
])
def test_a_broken_driver_fails_init_as_pynvml_does(fault: str, error_class: str, code: int) -> None:
    clock = Clock()
    doc = {**DOC, "faults": [{"kind": fault, "group": "g", "hosts": [0], "at": 100}]}
    nv: FakeNvml = parse_scenario(doc, clock=clock).host(0).nvml
    nv.nvmlInit()  # before the fault's time the driver works
    nv.nvmlShutdown()
    clock.t += 100
    with pytest.raises(NVMLError) as failed:
        nv.nvmlInit()
    assert type(failed.value).__name__ == error_class
    assert failed.value.value == code and hasattr(pynvml, error_class)
    assert str(failed.value) == pynvml.NVMLError._errcode_to_string[failed.value.value]
    # The other host of the group keeps its driver.
    parse_scenario(doc, clock=clock).host(1).nvml.nvmlInit()


def test_calls_before_init_raise_uninitialized() -> None:
    nv = parse_scenario(DOC).host(0).nvml
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlDeviceGetCount()
    nv.nvmlInit()
    nv.nvmlShutdown()
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlDeviceGetHandleByIndex(0)


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a, b, c = started(Clock()), started(Clock()), started(Clock(), seed=2)
    def view(nv: FakeNvml) -> list[Any]:
        hs = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
        return [(nv.nvmlDeviceGetUUID(h), nv.nvmlDeviceGetTemperature(h, 0),
                 nv.nvmlDeviceGetUtilizationRates(h).gpu) for h in hs]
    assert view(a) == view(b)
    assert view(a) != view(c)
    other_host = started(Clock(), host=1)
    assert {u for u, _, _ in view(a)}.isdisjoint({u for u, _, _ in view(other_host)})


def test_values_vary_slowly_with_time() -> None:
    clock = Clock()
    nv = started(clock)
    h = nv.nvmlDeviceGetHandleByIndex(0)
    seen = []
    for _ in range(120):  # ten minutes in 5 s steps
        u = nv.nvmlDeviceGetUtilizationRates(h).gpu
        seen.append((u, nv.nvmlDeviceGetTemperature(h, 0), nv.nvmlDeviceGetPowerUsage(h)))
        clock.t += 5
    utils = [s[0] for s in seen]
    assert max(utils) - min(utils) > 30  # it moves over a period ...
    assert max(abs(x - y) for x, y in itertools.pairwise(utils)) <= 8  # ... but not in jumps
    for u, temp, mw in seen:
        assert 0 <= u <= 100 and 25 <= temp <= 75 and 72_000 <= mw <= 700_000


def test_xid_events_arrive_when_due() -> None:
    clock = Clock()
    nv = started(clock)
    es = nv.nvmlEventSetCreate()
    h1 = nv.nvmlDeviceGetHandleByIndex(1)
    for i in range(8):
        nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(i), nv.nvmlEventTypeXidCriticalError, es)
    with pytest.raises(nv.NVMLError_Timeout):
        nv.nvmlEventSetWait_v2(es, 0)  # the first XID is due 10 s after the start
    clock.t += 12
    data = nv.nvmlEventSetWait_v2(es, 0)
    assert (data.device, data.eventType, data.eventData) == (h1, nv.nvmlEventTypeXidCriticalError, 94)
    with pytest.raises(nv.NVMLError_Timeout):
        nv.nvmlEventSetWait_v2(es, 0)
    clock.t += 5
    assert nv.nvmlEventSetWait_v2(es, 0).eventData == 94
    nv.nvmlEventSetFree(es)
    with pytest.raises(nv.NVMLError):
        nv.nvmlEventSetWait_v2(es, 0)


def test_field_values_have_pynvml_shape() -> None:
    nv = started(Clock())
    h = nv.nvmlDeviceGetHandleByIndex(0)
    ids = [pynvml.NVML_FI_DEV_MEMORY_TEMP, pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT,
           (pynvml.NVML_FI_DEV_ECC_CURRENT, 0)]
    mem_temp, links, other = nv.nvmlDeviceGetFieldValues(h, ids)
    assert mem_temp.nvmlReturn == pynvml.NVML_SUCCESS
    assert mem_temp.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    assert links.value.uiVal == 18
    assert other.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


@pytest.mark.parametrize(("driver", "cuda"), [
    ("535.183.06", 12020), ("550.54.15", 12040), ("570.124.06", 12080), ("470.256.02", 11040),
    ("580.65.06", 13000),
])
def test_the_cuda_version_follows_the_drivers_branch(driver: str, cuda: int) -> None:
    groups = [{**DOC["groups"][0], "driver_version": driver}]
    nv = parse_scenario({**DOC, "groups": groups}).host(0).nvml
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlSystemGetCudaDriverVersion_v2()
    nv.nvmlInit()
    assert nv.nvmlSystemGetDriverVersion() == driver
    assert nv.nvmlSystemGetCudaDriverVersion_v2() == nv.nvmlSystemGetCudaDriverVersion() == cuda


def test_an_unknown_driver_branch_has_no_cuda_version() -> None:
    nv = parse_scenario({**DOC, "groups": [{**DOC["groups"][0], "driver_version": "999.1"}]}).host(0).nvml
    nv.nvmlInit()
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlSystemGetCudaDriverVersion_v2()
