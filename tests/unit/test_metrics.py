"""fleet_agent.metrics: the names and labels of docs/metrics.md, units, and no series for None."""

from __future__ import annotations

import re
from pathlib import Path

from fleet_agent.metrics import render_metrics
from fleet_agent.schema import (
    Action,
    ChipReport,
    CollectorState,
    GpuDetails,
    HostMetrics,
    NodeReport,
    Problem,
    Severity,
    Status,
    TpuDetails,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
MIB = 1024 * 1024


def _gpu(index: int = 0, **over: object) -> ChipReport:
    chip = ChipReport(
        index=index, kind="gpu", vendor="nvidia", model="NVIDIA H100 80GB HBM3", uuid=f"GPU-{index}",
        pci_bus_id=f"00000000:{index + 0x18:02X}:00.0", status=Status.DEGRADED, sampled_at=1.0,
        temperature_c=61.0, memory_temperature_c=70.0, utilization_pct=50.0, memory_utilization_pct=20.0,
        memory_used_bytes=1024 * MIB, memory_total_bytes=81559 * MIB, power_w=350.5, power_limit_w=700.0,
        sm_clock_mhz=1980, mem_clock_mhz=2619,
        gpu=GpuDetails(
            ecc_volatile_corrected=3, ecc_volatile_uncorrected=0, ecc_aggregate_corrected=10,
            ecc_aggregate_uncorrected=1, remapped_rows_correctable=2, remapped_rows_uncorrectable=0,
            row_remap_pending=True, row_remap_failure=False, retired_pages_pending=False,
            throttle_reasons=["hw_thermal"], pcie_link_gen=4, pcie_link_gen_max=5, pcie_link_width=16,
            pcie_link_width_max=16, pcie_replay_count=7, nvlink_links_up=17, nvlink_links_total=18,
            persistence_mode=True, xid_counts={"79": 1, "13": 2}, xid_total=3, last_xid=79,
        ),
        problems=[Problem("row_remap", Severity.WARNING, "pending", Action.RESET_CHIP),
                  Problem("row_remap", Severity.WARNING, "pending again", Action.RESET_CHIP)],
    )
    for k, v in over.items():
        setattr(chip, k, v)
    return chip


def _tpu() -> ChipReport:
    return ChipReport(index=0, kind="tpu", vendor="google", model="TPU v5e", uuid="tpu-0",
                      pci_bus_id="0000:00:04.0", status=Status.HEALTHY, utilization_pct=80.0,
                      memory_used_bytes=5, memory_total_bytes=16,
                      tpu=TpuDetails(duty_cycle_pct=90.0, tensorcore_utilization_pct=80.0,
                                     hbm_bandwidth_utilization_pct=45.0, runtime_metrics_available=True))


def _report(chips: list[ChipReport]) -> NodeReport:
    return NodeReport(
        host="gpu-01", agent_version="0.1.0", sampled_at=1700000000.0, interval_s=5.0,
        status=Status.DEGRADED, chips_expected=8, chips=chips,
        host_metrics=HostMetrics(cpu_pct=25.0, memory_used_bytes=1, memory_total_bytes=2, load1=0.3,
                                 uptime_s=100.0),
        problems=[Problem("chip_count", Severity.CRITICAL, "7 of 8", Action.REBOOT)],
        collectors=[CollectorState("nvml", True), CollectorState("host", False, "boom")],
        drained=True, sample_duration_s=0.01,
    )


def _samples(text: bytes) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _one(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return float(found[0].value)


def _documented_names() -> set[str]:
    text = DOCS.read_text()
    names = set(re.findall(r"`((?:fleet|DCGM_FI)_[A-Za-z0-9_]+)`", text))
    # DCGM_FI_DRIVER_VERSION is a label of the DCGM series (as in dcgm-exporter), not a series.
    return {n for n in names if not n.endswith("_")} - {"DCGM_FI_DRIVER_VERSION"}


def _family_names(text: bytes) -> set[str]:
    """The series names as written (prometheus_client's parser would add "_total" to DCGM counters)."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_]*)[{ ]", text.decode(), re.M)}


def _types(text: bytes) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text.decode(), re.M))


def _raw(text: bytes, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each line of series ``name``, read as Prometheus reads the text."""
    out = []
    for m in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text.decode(), re.M):
        labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\\\]|\\\\.)*)"', m.group(1)))
        out.append((labels, float(m.group(2))))
    return out


def test_every_documented_name_is_exported_and_nothing_else() -> None:
    text = render_metrics(_dcgm_report())  # every field set: every name shows
    assert _family_names(text) == _documented_names()


def test_values_units_and_labels() -> None:
    s = _samples(render_metrics(_report([_gpu(0), _tpu()])))
    chip = {"chip": "0", "kind": "gpu", "model": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0"}
    assert _one(s, "fleet_chip_utilization_ratio", **chip) == 0.5
    assert _one(s, "fleet_chip_sm_clock_hertz", **chip) == 1980e6
    assert _one(s, "fleet_chip_status", status="degraded", **chip) == 1
    assert _one(s, "fleet_chip_status", status="healthy", **chip) == 0
    assert _one(s, "fleet_chip_status_rank", **chip) == 1  # degraded, one series
    assert _one(s, "fleet_chip_ecc_errors", type="uncorrected", counter="aggregate", **chip) == 1
    assert _one(s, "fleet_chip_throttle_active", reason="hw_thermal", **chip) == 1
    assert _one(s, "fleet_chip_throttle_active", reason="sw_power_cap", **chip) == 0
    assert _one(s, "fleet_chip_xid_errors_window", xid="79", **chip) == 1
    assert _one(s, "fleet_chip_xid_errors_total", **chip) == 3
    assert _one(s, "fleet_chip_pcie_replay_total", **chip) == 7
    assert _one(s, "fleet_chip_duty_cycle_ratio", kind="tpu") == 0.9
    assert _one(s, "fleet_chip_hbm_bandwidth_utilization_ratio", kind="tpu") == 0.45
    assert [x.labels["kind"] for x in s["fleet_chip_hbm_bandwidth_utilization_ratio"]] == ["tpu"]
    dcgm = {"gpu": "0", "UUID": "GPU-0", "pci_bus_id": "00000000:18:00.0", "device": "nvidia0",
            "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "gpu-01"}
    assert _one(s, "DCGM_FI_DEV_FB_USED", **dcgm) == 1024
    assert _one(s, "DCGM_FI_DEV_FB_FREE", **dcgm) == 81559 - 1024
    assert _one(s, "DCGM_FI_DEV_GPU_UTIL", **dcgm) == 50
    assert _one(s, "DCGM_FI_DEV_XID_ERRORS", **dcgm) == 79
    assert _one(s, "DCGM_FI_DEV_ROW_REMAP_PENDING", **dcgm) == 1
    assert all(x.labels["gpu"] == "0" for x in s["DCGM_FI_DEV_GPU_TEMP"])  # TPUs are not DCGM
    assert _one(s, "fleet_node_status", status="degraded") == 1
    assert _one(s, "fleet_node_drained") == 1
    assert _one(s, "fleet_node_chips_present") == 2
    assert _one(s, "fleet_collector_up", collector="host") == 0
    assert _one(s, "fleet_host_cpu_utilization_ratio") == 0.25
    assert _one(s, "fleet_agent_info", hostname="gpu-01", version="0.1.0") == 1
    # Two problems of one check and severity on one chip: one series, not a duplicate.
    assert _one(s, "fleet_health_check_failing", check="row_remap", severity="warning", action="reset_chip",
                **chip) == 1
    assert _one(s, "fleet_health_check_failing", chip="node", check="chip_count", severity="critical",
                action="reboot") == 1


def test_health_check_failing_carries_the_action_one_series_per_action() -> None:
    # One check, two actions (a pending row remap: reset; a failed one: RMA): both series, each
    # with its action, so a reader of the metrics acts as a reader of the report does.
    chip = _gpu(0, problems=[Problem("row_remap", Severity.CRITICAL, "failed", Action.RMA),
                             Problem("row_remap", Severity.CRITICAL, "pending", Action.RESET_CHIP)])
    s = _samples(render_metrics(_report([chip])))
    failing = [x for x in s["fleet_health_check_failing"] if x.labels["chip"] == "0"]
    assert sorted(x.labels["action"] for x in failing) == ["reset_chip", "rma"]
    assert {x.labels["check"] for x in failing} == {"row_remap"}
    assert all(x.value == 1 for x in failing)


def test_none_yields_no_series() -> None:
    chip = _gpu(0, temperature_c=None, power_w=None)
    assert chip.gpu is not None
    chip.gpu.ecc_volatile_corrected = None
    chip.gpu.last_xid = None
    s = _samples(render_metrics(_report([chip])))
    assert "fleet_chip_temperature_celsius" not in s
    assert "DCGM_FI_DEV_GPU_TEMP" not in s and "DCGM_FI_DEV_POWER_USAGE" not in s
    assert "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL" not in s
    assert not [x for x in s["fleet_chip_ecc_errors"] if x.labels["type"] == "corrected"
                and x.labels["counter"] == "volatile"]


def test_tpu_without_hbm_bandwidth_has_no_such_series() -> None:
    older = _tpu()  # an older libtpu: no HBM bandwidth metric
    assert older.tpu is not None
    older.tpu.hbm_bandwidth_utilization_pct = None
    s = _samples(render_metrics(_report([_gpu(0), older])))
    assert "fleet_chip_hbm_bandwidth_utilization_ratio" not in s
    assert _one(s, "fleet_chip_duty_cycle_ratio", kind="tpu") == 0.9


def test_stale_chip_keeps_identity_and_status_only() -> None:
    stale = ChipReport(index=1, kind="gpu", vendor="nvidia", model="NVIDIA H100 80GB HBM3", uuid="GPU-1",
                       pci_bus_id="00000000:2A:00.0", status=Status.UNKNOWN, stale=True,
                       error="NVML call timed out after 2.0s")
    s = _samples(render_metrics(_report([_gpu(0), stale])))
    chip1 = {"chip": "1", "uuid": "GPU-1"}
    assert _one(s, "fleet_chip_stale", **chip1) == 1
    assert _one(s, "fleet_chip_status", status="unknown", **chip1) == 1
    assert _one(s, "fleet_chip_status_rank", **chip1) == 2  # unknown sorts before unhealthy
    assert not [x for x in s["fleet_chip_temperature_celsius"] if x.labels["chip"] == "1"]
    assert not [x for x in s["DCGM_FI_DEV_GPU_TEMP"] if x.labels["gpu"] == "1"]


DCGM_COUNTERS = {
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    "DCGM_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
}
DCGM_IDENTITY = {"gpu": "0", "UUID": "GPU-0", "pci_bus_id": "00000000:18:00.0", "device": "nvidia0",
                 "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "gpu-01",
                 "DCGM_FI_DRIVER_VERSION": "550.54.15"}


def _full_gpu() -> ChipReport:
    chip = _gpu(0)
    assert chip.gpu is not None
    g = chip.gpu
    g.nvlink_crc_flit_errors, g.nvlink_crc_data_errors = 5, 1
    g.nvlink_replay_errors, g.nvlink_recovery_errors = 12, 3
    g.energy_mj, g.encoder_utilization_pct, g.decoder_utilization_pct = 123_456_789, 0.0, 8.0
    g.graphics_active_pct, g.tensor_active_pct = 82.0, 51.5
    return chip


def _dcgm_report() -> NodeReport:
    report = _report([_full_gpu(), _tpu()])
    report.driver_version = "550.54.15"
    return report


def test_dcgm_counters_are_counters_under_dcgm_exporters_exact_names() -> None:
    text = render_metrics(_dcgm_report())
    types = _types(text)
    dcgm = {name: typ for name, typ in types.items() if name.startswith("DCGM_FI_")}
    assert {name for name, typ in dcgm.items() if typ == "counter"} == DCGM_COUNTERS
    assert dcgm["DCGM_FI_DEV_XID_ERRORS"] == "gauge" and dcgm["DCGM_FI_DEV_ROW_REMAP_FAILURE"] == "gauge"
    assert dcgm["DCGM_FI_DEV_ENC_UTIL"] == dcgm["DCGM_FI_DEV_DEC_UTIL"] == "gauge"
    assert dcgm["DCGM_FI_PROF_GR_ENGINE_ACTIVE"] == dcgm["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"] == "gauge"
    s = _samples(text)
    assert [round(x.value, 6) for x in s["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]] == [0.82]  # a ratio
    assert [round(x.value, 6) for x in s["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"]] == [0.515]
    names = _family_names(text)
    assert DCGM_COUNTERS <= names  # the sample lines carry the name as dcgm-exporter writes it ...
    assert not {n for n in names if n.startswith("DCGM_FI_") and n.endswith("_total")}  # ... no suffix
    assert _raw(text, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == [(DCGM_IDENTITY, 7.0)]
    assert _raw(text, "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL") == [(DCGM_IDENTITY, 1.0)]


def test_dcgm_labels_are_the_current_releases() -> None:
    text = render_metrics(_dcgm_report())
    for name in (n for n in _family_names(text) if n.startswith("DCGM_FI_")):
        for labels, _ in _raw(text, name):
            extra = {"err_code", "err_msg"} if name == "DCGM_FI_DEV_XID_ERRORS" else set()
            assert set(labels) == set(DCGM_IDENTITY) | extra, name
            assert {k: labels[k] for k in DCGM_IDENTITY} == DCGM_IDENTITY, name
    # Without a driver version the label is left out, as dcgm-exporter leaves a blank field out.
    bare = render_metrics(_report([_gpu(0)]))
    (labels, _), = _raw(bare, "DCGM_FI_DEV_GPU_TEMP")
    assert "DCGM_FI_DRIVER_VERSION" not in labels and labels["Hostname"] == "gpu-01"


def test_dcgm_xid_errors_reads_zero_without_an_xid_and_the_last_code_with_one() -> None:
    text = render_metrics(_dcgm_report())
    assert _raw(text, "DCGM_FI_DEV_XID_ERRORS") == [
        ({**DCGM_IDENTITY, "err_code": "79", "err_msg": "GPU has fallen off the bus"}, 79.0)]
    clean = _full_gpu()
    assert clean.gpu is not None
    clean.gpu.last_xid, clean.gpu.xid_counts, clean.gpu.xid_total = None, {}, 0
    report = _dcgm_report()
    report.chips = [clean]
    assert _raw(render_metrics(report), "DCGM_FI_DEV_XID_ERRORS") == [
        ({**DCGM_IDENTITY, "err_code": "0", "err_msg": "No Error"}, 0.0)]
    # A chip whose every reading failed cannot say "no XID": no series rather than a made-up 0.
    clean.error = "NVML: every reading failed (Unknown Error)"
    assert _raw(render_metrics(report), "DCGM_FI_DEV_XID_ERRORS") == []


def test_nvlink_errors_energy_and_video_engines() -> None:
    text = render_metrics(_dcgm_report())
    for name, value in (("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", 5.0),
                        ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", 1.0),
                        ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", 12.0),
                        ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", 3.0),
                        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 123_456_789.0),
                        ("DCGM_FI_DEV_ENC_UTIL", 0.0), ("DCGM_FI_DEV_DEC_UTIL", 8.0)):
        assert _raw(text, name) == [(DCGM_IDENTITY, value)], name
    s = _samples(text)
    chip = {"chip": "0", "kind": "gpu", "uuid": "GPU-0"}
    assert _one(s, "fleet_chip_nvlink_errors_total", type="replay", **chip) == 12
    assert _one(s, "fleet_chip_nvlink_errors_total", type="crc_flit", **chip) == 5
    assert _one(s, "fleet_chip_energy_joules_total", **chip) == 123_456.789
    assert _one(s, "fleet_chip_decoder_utilization_ratio", **chip) == 0.08
    assert _types(text)["fleet_chip_energy_joules_total"] == "counter"
    # NotSupported (None) is no series, under both names.
    bare = render_metrics(_report([_gpu(0)]))
    assert "NVLINK_CRC" not in bare.decode() and "ENERGY" not in bare.decode()
    assert b"fleet_chip_nvlink_errors" not in bare and b"fleet_chip_encoder" not in bare


def test_node_rollups_equal_their_chips_series() -> None:
    # What the fleetctl-report rules used to fold per chip, the agent folds: the same figures.
    chips = [_gpu(0, status=Status.HEALTHY), _gpu(1, temperature_c=77.0, power_w=400.0, utilization_pct=10.0),
             _gpu(2, status=Status.HEALTHY, stale=True, temperature_c=None, utilization_pct=None,
                  memory_used_bytes=None, power_w=None), _tpu()]
    text = render_metrics(_report(chips))
    s = _samples(text)
    per_chip = {name: [x.value for x in s[name]] for name in (
        "fleet_chip_temperature_celsius", "fleet_chip_utilization_ratio", "fleet_chip_memory_used_bytes",
        "fleet_chip_memory_total_bytes", "fleet_chip_power_watts")}
    hottest = max(per_chip["fleet_chip_temperature_celsius"])
    assert _one(s, "fleet_node_chip_temperature_max_celsius") == hottest == 77
    utils = per_chip["fleet_chip_utilization_ratio"]
    assert len(utils) == 3  # the stale chip has no reading and weighs nothing in the mean
    assert _one(s, "fleet_node_chip_utilization_mean_ratio") == sum(utils) / 3
    for rollup, name in (("fleet_node_chip_memory_used_bytes", "fleet_chip_memory_used_bytes"),
                         ("fleet_node_chip_memory_total_bytes", "fleet_chip_memory_total_bytes"),
                         ("fleet_node_chip_power_watts", "fleet_chip_power_watts")):
        assert _one(s, rollup) == sum(per_chip[name])
    # healthy and fresh, as the one-hot status and the stale gauge say: chip 0 and the TPU
    healthy = {x.labels["chip"] + x.labels["kind"] for x in s["fleet_chip_status"]
               if x.labels["status"] == "healthy" and x.value == 1}
    stale = {x.labels["chip"] + x.labels["kind"] for x in s["fleet_chip_stale"] if x.value == 1}
    assert _one(s, "fleet_node_chips_healthy") == len(healthy - stale) == 2
    assert _one(s, "fleet_node_chip_models", kind="gpu", vendor="nvidia", model="NVIDIA H100 80GB HBM3") == 3
    assert _one(s, "fleet_node_chip_models", kind="tpu", vendor="google", model="TPU v5e") == 1
    assert "model=" not in next(line for line in text.decode().splitlines()
                                if line.startswith("fleet_node_chip_temperature_max_celsius "))


def test_no_readings_no_rollup_series_but_a_healthy_count() -> None:
    s = _samples(render_metrics(_report([_gpu(0, temperature_c=None, power_w=float("nan")),
                                         _gpu(1, temperature_c=None, utilization_pct=float("inf"))])))
    assert "fleet_node_chip_temperature_max_celsius" not in s
    # A chip's NaN or infinite reading would make the folded figure NaN: no rollup, not a partial sum.
    assert "fleet_node_chip_power_watts" not in s and "fleet_node_chip_utilization_mean_ratio" not in s
    assert _one(s, "fleet_node_chip_memory_used_bytes") == 2 * 1024 * MIB
    assert _one(s, "fleet_node_chips_healthy") == 0  # the one chip is degraded
    empty = _samples(render_metrics(_report([])))
    assert _one(empty, "fleet_node_chips_healthy") == 0
    assert "fleet_node_chip_models" not in empty and "fleet_node_chip_utilization_mean_ratio" not in empty


def _healthy_gpu(index: int) -> ChipReport:
    return _gpu(index, status=Status.HEALTHY, problems=[])


def _clean_report(**over: object) -> NodeReport:
    r = _report([_healthy_gpu(0), _healthy_gpu(1)])
    r.status, r.drained, r.chips_expected, r.problems = Status.HEALTHY, False, 2, []
    for k, v in over.items():
        setattr(r, k, v)
    return r


def test_a_clean_host_exports_no_fault_detail_and_any_doubt_does() -> None:
    # ... and its verdict in fleet_node_clean, which the fleetctl-report rules (version 6) read.
    for expected, label in ((2, "agent"), (None, "unset")):
        s = _samples(render_metrics(_clean_report(chips_expected=expected)))
        assert "fleet_fault_detail" not in s
        assert [(x.labels, x.value) for x in s["fleet_node_clean"]] == [({"chips_expected": label}, 1.0)]
    stale = _healthy_gpu(1)
    stale.stale = True
    for doubt in ({"status": Status.DEGRADED}, {"drained": True}, {"chips_expected": 3},
                  {"chips_expected": 1}, {"chips": [_healthy_gpu(0), _gpu(1)]},
                  {"chips": [_healthy_gpu(0), stale]}):
        s = _samples(render_metrics(_clean_report(**doubt)))
        assert "fleet_fault_detail" in s, doubt
        assert [x.value for x in s["fleet_node_clean"]] == [0.0], doubt


def test_the_fault_detail_copies_exactly_the_series_fleetctl_reads_of_a_faulty_host() -> None:
    # Chip 1 not healthy (and failing a check), chip 2 healthy but failing a check, chip 0 healthy.
    checked = _healthy_gpu(2)
    checked.problems = [Problem("thermal_margin", Severity.INFO, "warm", Action.NONE)]
    s = _samples(render_metrics(_report([_healthy_gpu(0), _gpu(1), checked])))
    copied = [(x.labels.pop("metric"), {k: v for k, v in x.labels.items() if v}, x.value)
              for x in s["fleet_fault_detail"]]
    # (fleet_agent_info's hostname is not copied: the scrape's host label names the host.)
    originals = {(name, tuple(sorted((k, v) for k, v in x.labels.items() if v and k != "hostname")), x.value)
                 for name, xs in s.items() for x in xs}
    # Each copy is an exported series with the same labels (an empty label is none) and value ...
    assert all((name, tuple(sorted(labels.items())), v) in originals for name, labels, v in copied)
    by_name: dict[str, list[dict[str, str]]] = {}
    for name, labels, _v in copied:
        by_name.setdefault(name, []).append(labels)
    # ... and these are the ones: the node's status that is 1, its chips' rank above 0, the
    # readings of the chips listed (1 and 2), every failing check, the node's gauges and rollups.
    assert [x["status"] for x in by_name["fleet_node_status"]] == ["degraded"]
    assert [x["chip"] for x in by_name["fleet_chip_status_rank"]] == ["1"]
    for reading in ("fleet_chip_temperature_celsius", "fleet_chip_power_watts", "fleet_chip_stale",
                    "fleet_chip_memory_used_bytes", "fleet_chip_memory_total_bytes",
                    "fleet_chip_utilization_ratio"):
        assert sorted(x["chip"] for x in by_name[reading]) == ["1", "2"], reading
    assert sorted((x["chip"], x["check"]) for x in by_name["fleet_health_check_failing"]) == [
        ("1", "row_remap"), ("2", "thermal_margin"), ("node", "chip_count")]
    assert set(by_name) == {
        "fleet_node_status", "fleet_chip_status_rank", "fleet_health_check_failing", "fleet_agent_info",
        "fleet_node_drained", "fleet_node_chips_expected", "fleet_node_chips_present",
        "fleet_sample_timestamp_seconds", "fleet_node_chips_healthy",
        "fleet_node_chip_temperature_max_celsius",
        "fleet_node_chip_utilization_mean_ratio", "fleet_node_chip_memory_used_bytes",
        "fleet_node_chip_memory_total_bytes", "fleet_node_chip_power_watts",
        "fleet_chip_temperature_celsius", "fleet_chip_power_watts", "fleet_chip_stale",
        "fleet_chip_memory_used_bytes", "fleet_chip_memory_total_bytes", "fleet_chip_utilization_ratio"}
