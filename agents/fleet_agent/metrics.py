"""Prometheus exposition of the latest node report: exactly the names in docs/metrics.md.

A custom prometheus_client collector reads one :class:`NodeReport`; each agent has its own
registry, rendered once per sample (never per scrape). A value that is ``None`` (NotSupported,
stale) yields no series: a missing series is honest, a made-up zero is not.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet_agent.health.xid_codes import XID_TABLE
from fleet_agent.schema import ChipReport, NodeReport, Status

# The classic text format is what generate_latest writes; say so, whatever the library's default.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

CHIP_LABELS = ["chip", "kind", "model", "uuid"]
DCGM_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
THROTTLE_REASONS = ("hw_slowdown", "hw_thermal", "hw_power_brake", "sw_power_cap", "sw_thermal")
_MIB = 1024 * 1024

# (name, help, ChipReport attribute, scale) for the plain per-chip gauges.
_CHIP_GAUGES: list[tuple[str, str, str, float]] = [
    ("fleet_chip_temperature_celsius", "Chip core temperature.", "temperature_c", 1.0),
    ("fleet_chip_memory_temperature_celsius", "Chip memory (HBM) temperature.", "memory_temperature_c", 1.0),
    ("fleet_chip_utilization_ratio", "Chip busy share 0..1 (GPU utilisation, TPU duty cycle).",
     "utilization_pct", 0.01),
    ("fleet_chip_memory_used_bytes", "Device memory used.", "memory_used_bytes", 1.0),
    ("fleet_chip_memory_total_bytes", "Device memory total.", "memory_total_bytes", 1.0),
    ("fleet_chip_power_watts", "Power draw.", "power_w", 1.0),
    ("fleet_chip_power_limit_watts", "Enforced power limit.", "power_limit_w", 1.0),
    ("fleet_chip_sm_clock_hertz", "SM (core) clock.", "sm_clock_mhz", 1e6),
    ("fleet_chip_memory_clock_hertz", "Memory clock.", "mem_clock_mhz", 1e6),
]

# (name, help, GpuDetails attribute) for 0/1 and count gauges of NVIDIA detail.
_GPU_GAUGES: list[tuple[str, str, str]] = [
    ("fleet_chip_row_remap_pending", "1 when a row remap is pending (needs a reset).", "row_remap_pending"),
    ("fleet_chip_row_remap_failure", "1 when row remapping failed.", "row_remap_failure"),
    ("fleet_chip_retired_pages_pending", "1 when retired pages are pending.", "retired_pages_pending"),
    ("fleet_chip_pcie_link_generation", "Current PCIe link generation.", "pcie_link_gen"),
    ("fleet_chip_pcie_link_generation_max", "Maximum PCIe link generation.", "pcie_link_gen_max"),
    ("fleet_chip_pcie_link_width", "Current PCIe link width.", "pcie_link_width"),
    ("fleet_chip_pcie_link_width_max", "Maximum PCIe link width.", "pcie_link_width_max"),
    ("fleet_chip_nvlink_links_up", "NVLink links up.", "nvlink_links_up"),
    ("fleet_chip_nvlink_links_present", "NVLink links present.", "nvlink_links_total"),
]

# The DCGM-compatible series, as current dcgm-exporter writes them (etc/default-counters.csv and
# dcp-metrics-included.csv give each field's type): (DCGM field, type, help, source, scale), source
# "chip.<attr>" or "gpu.<attr>". Counters keep dcgm-exporter's exact names (no "_total" added),
# which prometheus_client cannot write: these families are rendered by _dcgm_text.
_DCGM: list[tuple[str, str, str, str, float]] = [
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "chip.sm_clock_mhz", 1.0),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", "chip.mem_clock_mhz", 1.0),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "chip.memory_temperature_c", 1.0),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "chip.temperature_c", 1.0),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "chip.power_w", 1.0),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
     "Total energy consumption since the driver loaded (in mJ).", "gpu.energy_mj", 1.0),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", "chip.power_limit_w", 1.0),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.",
     "gpu.pcie_replay_count", 1.0),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "chip.utilization_pct", 1.0),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", "chip.memory_utilization_pct", 1.0),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", "gpu.encoder_utilization_pct", 1.0),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", "gpu.decoder_utilization_pct", 1.0),
    # dcgm-exporter's profiling fields (dcp-metrics-included.csv), ratios 0..1; from NVML's GPM here.
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.",
     "gpu.graphics_active_pct", 0.01),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active.",
     "gpu.tensor_active_pct", 0.01),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors.",
     "gpu.ecc_volatile_corrected", 1.0),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors.",
     "gpu.ecc_volatile_uncorrected", 1.0),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter", "Total number of single-bit persistent ECC errors.",
     "gpu.ecc_aggregate_corrected", 1.0),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter", "Total number of double-bit persistent ECC errors.",
     "gpu.ecc_aggregate_uncorrected", 1.0),
    # NVML says whether pages are pending, not how many: 0 or 1 under dcgm-exporter's counter.
    ("DCGM_FI_DEV_RETIRED_PENDING", "counter", "Total number of pages pending retirement.",
     "gpu.retired_pages_pending", 1.0),
    ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "counter",
     "Total number of NVLink flow-control CRC errors.", "gpu.nvlink_crc_flit_errors", 1.0),
    ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "counter", "Total number of NVLink data CRC errors.",
     "gpu.nvlink_crc_data_errors", 1.0),
    ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "counter", "Total number of NVLink retries.",
     "gpu.nvlink_replay_errors", 1.0),
    ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "counter", "Total number of NVLink recovery errors.",
     "gpu.nvlink_recovery_errors", 1.0),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for uncorrectable errors",
     "gpu.remapped_rows_uncorrectable", 1.0),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors",
     "gpu.remapped_rows_correctable", 1.0),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed",
     "gpu.row_remap_failure", 1.0),
    ("DCGM_FI_DEV_ROW_REMAP_PENDING", "gauge", "Whether remapping of rows is pending",
     "gpu.row_remap_pending", 1.0),
]


def _num(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _chip_labels(chip: ChipReport) -> list[str]:
    return [str(chip.index), chip.kind, chip.model, chip.uuid]


def _dcgm_labels(chip: ChipReport, r: NodeReport) -> list[tuple[str, str]]:
    labels = list(zip(DCGM_LABELS, (str(chip.index), chip.uuid, chip.pci_bus_id, f"nvidia{chip.index}",
                                    chip.model, r.host), strict=True))
    if r.driver_version:  # dcgm-exporter leaves a blank label field out
        labels.append(("DCGM_FI_DRIVER_VERSION", r.driver_version))
    return labels


class ReportCollector(Collector):
    """Yields the metric families of ``self.report`` (nothing before the first sample)."""

    def __init__(self) -> None:
        self.report: NodeReport | None = None

    def collect(self) -> Iterator[Metric]:
        report = self.report
        if report is None:
            return
        clean = _node_clean(report)
        # A family without samples (no chip supports it) is left out entirely.
        families = [fam for each in (_node_families(report), _rollup_families(report, clean),
                                     _chip_families(report), _health_families(report))
                    for fam in each if fam.samples]
        yield from families
        if not clean:
            yield _fault_family(report, families)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def _node_families(r: NodeReport) -> Iterator[Metric]:
    info = _gauge("fleet_agent_info", "fleet-agent build and host; always 1.", ["version", "hostname"])
    info.add_metric([r.agent_version, r.host], 1)
    yield info
    status = _gauge("fleet_node_status", "One-hot node health status.", ["status"])
    for s in Status:
        status.add_metric([s.value], 1.0 if r.status is s else 0.0)
    yield status
    yield GaugeMetricFamily("fleet_node_drained", "1 when the host is drained.", value=1 if r.drained else 0)
    if r.chips_expected is not None:
        yield GaugeMetricFamily("fleet_node_chips_expected", "Chips expected on this host (config).",
                                value=r.chips_expected)
    yield GaugeMetricFamily("fleet_node_chips_present", "Chips discovered on this host.", value=len(r.chips))
    yield GaugeMetricFamily("fleet_sample_timestamp_seconds", "Unix time of the latest completed sample.",
                            value=r.sampled_at)
    if r.sample_duration_s is not None:
        yield GaugeMetricFamily("fleet_sample_duration_seconds", "Duration of the latest sample.",
                                value=r.sample_duration_s)
    up = _gauge("fleet_collector_up", "1 when the collector's last run succeeded.", ["collector"])
    for c in r.collectors:
        up.add_metric([c.name], 1.0 if c.ok else 0.0)
    yield up
    h = r.host_metrics
    for name, doc, value in (
        ("fleet_host_cpu_utilization_ratio", "Host CPU utilisation 0..1.",
         None if h.cpu_pct is None else h.cpu_pct / 100.0),
        ("fleet_host_memory_used_bytes", "Host memory used.", h.memory_used_bytes),
        ("fleet_host_memory_total_bytes", "Host memory total.", h.memory_total_bytes),
        ("fleet_host_load1", "Host 1-minute load average.", h.load1),
        ("fleet_host_uptime_seconds", "Host uptime.", h.uptime_s),
    ):
        v = _num(value)
        if v is not None:
            yield GaugeMetricFamily(name, doc, value=v)


# (name, help, ChipReport attribute, scale, how) for the per-host rollups of the per-chip gauges.
_ROLLUPS: list[tuple[str, str, str, float, str]] = [
    ("fleet_node_chip_temperature_max_celsius", "Hottest chip core temperature on this host.",
     "temperature_c", 1.0, "max"),
    ("fleet_node_chip_utilization_mean_ratio", "Mean chip busy share 0..1 over the chips that report one.",
     "utilization_pct", 0.01, "mean"),
    ("fleet_node_chip_memory_used_bytes", "Device memory used, summed over the host's chips.",
     "memory_used_bytes", 1.0, "sum"),
    ("fleet_node_chip_memory_total_bytes", "Device memory total, summed over the host's chips.",
     "memory_total_bytes", 1.0, "sum"),
    ("fleet_node_chip_power_watts", "Power draw, summed over the host's chips.", "power_w", 1.0, "sum"),
]


def _rollup_families(r: NodeReport, clean: bool) -> Iterator[Metric]:
    """Per-host rollups of the per-chip series this same exposition carries (docs/metrics.md), and the
    agent's verdict ``clean`` (:func:`_node_clean`).

    Prometheus pays per series a query selects: a recording rule that folds eight chips' series into
    one per host selects all of them every evaluation (most of the fleetctl-report rules' cost at
    100,000 hosts). The agent already holds its chips, so it folds them once per sample, over exactly
    the values it exports per chip, and the rules select one series per host. No reading, no series;
    a reading that is not a number (NaN, an infinity) leaves the rollup out, as it would have made
    the folded figure NaN.
    """
    healthy = sum(1 for chip in r.chips if _chip_ok(chip))
    yield GaugeMetricFamily("fleet_node_chips_healthy", "Chips whose status is healthy and reading fresh.",
                            value=healthy)
    # The verdict the clean record needs, in one series: the rules (version 6) select it instead of
    # the five gauges it is made of, a third of the series per host for the group's costliest rule.
    verdict = _gauge("fleet_node_clean", "1 when nothing on this host needs a look (docs/metrics.md).",
                     ["chips_expected"])
    verdict.add_metric(["unset" if r.chips_expected is None else "agent"], 1.0 if clean else 0.0)
    yield verdict
    for name, doc, attr, scale, how in _ROLLUPS:
        values = [v * scale for v in (_num(getattr(chip, attr)) for chip in r.chips) if v is not None]
        if values and all(math.isfinite(v) for v in values):
            total = sum(values)
            value = max(values) if how == "max" else total / len(values) if how == "mean" else total
            yield GaugeMetricFamily(name, doc, value=value)
    models = _gauge("fleet_node_chip_models", "Chips on this host per kind, vendor and model.",
                    ["kind", "vendor", "model"])
    counts = Counter((chip.kind, chip.vendor, chip.model) for chip in r.chips)
    for (kind, vendor, model), n in sorted(counts.items()):
        models.add_metric([kind, vendor, model], n)
    yield models


def _chip_families(r: NodeReport) -> Iterator[Metric]:
    info = _gauge("fleet_chip_info", "Chip identity; always 1.", [*CHIP_LABELS, "vendor", "pci_bus_id"])
    status = _gauge("fleet_chip_status", "One-hot chip health status.", [*CHIP_LABELS, "status"])
    # The same status in one series per chip (the one-hot's four stay for dashboards and alerts):
    # fleetctl's per-chip read of a faulty host selects a quarter of the series, and max() of it is
    # the worst chip.
    rank = _gauge("fleet_chip_status_rank",
                  "Chip health status ordered best to worst: 0 healthy, 1 degraded, 2 unknown, 3 unhealthy.",
                  CHIP_LABELS)
    stale = _gauge("fleet_chip_stale", "1 when the chip's reading is stale (a hung or failing call).",
                   CHIP_LABELS)
    for chip in r.chips:
        labels = _chip_labels(chip)
        info.add_metric([*labels, chip.vendor, chip.pci_bus_id], 1)
        for s in Status:
            status.add_metric([*labels, s.value], 1.0 if chip.status is s else 0.0)
        rank.add_metric(labels, chip.status.rank)
        stale.add_metric(labels, 1.0 if chip.stale else 0.0)
    yield from (info, status, rank, stale)

    for name, doc, attr, scale in _CHIP_GAUGES:
        fam = _gauge(name, doc, CHIP_LABELS)
        for chip in r.chips:
            v = _num(getattr(chip, attr))
            if v is not None:
                fam.add_metric(_chip_labels(chip), v * scale)
        yield fam

    duty = _gauge("fleet_chip_duty_cycle_ratio", "TPU duty cycle 0..1.", CHIP_LABELS)
    hbm_bw = _gauge("fleet_chip_hbm_bandwidth_utilization_ratio",
                    "TPU HBM bandwidth in use 0..1 (libtpu's runtime HBM utilisation).", CHIP_LABELS)
    for chip in r.chips:
        t = chip.tpu
        if t is None:
            continue
        if t.duty_cycle_pct is not None:
            duty.add_metric(_chip_labels(chip), t.duty_cycle_pct / 100.0)
        if t.hbm_bandwidth_utilization_pct is not None:
            hbm_bw.add_metric(_chip_labels(chip), t.hbm_bandwidth_utilization_pct / 100.0)
    yield from (duty, hbm_bw)

    gpus = [c for c in r.chips if c.gpu is not None]
    ecc = _gauge("fleet_chip_ecc_errors", "ECC error counts as NVML reports them.",
                 [*CHIP_LABELS, "type", "counter"])
    rows = _gauge("fleet_chip_remapped_rows", "Remapped rows.", [*CHIP_LABELS, "type"])
    throttle = _gauge("fleet_chip_throttle_active", "1 while a clock throttle reason is active.",
                      [*CHIP_LABELS, "reason"])
    replay = CounterMetricFamily("fleet_chip_pcie_replay", "PCIe replay counter.", labels=CHIP_LABELS)
    xid_window = _gauge("fleet_chip_xid_errors_window",
                        "XID events of this code (code:qualifier where the driver's message gave one) that "
                        "still count: inside the window, or until the reset or reboot that clears them.",
                        [*CHIP_LABELS, "xid"])
    xid_total = CounterMetricFamily("fleet_chip_xid_errors", "XID events since the host booted.",
                                    labels=CHIP_LABELS)
    nvlink_errors = CounterMetricFamily("fleet_chip_nvlink_errors",
                                        "NVLink errors summed over the chip's links, by type.",
                                        labels=[*CHIP_LABELS, "type"])
    energy = CounterMetricFamily("fleet_chip_energy_joules", "Energy used since the driver loaded.",
                                 labels=CHIP_LABELS)
    engines = [(_gauge("fleet_chip_encoder_utilization_ratio", "Video encoder (NVENC) busy share 0..1.",
                       CHIP_LABELS), "encoder_utilization_pct"),
               (_gauge("fleet_chip_decoder_utilization_ratio", "Video decoder (NVDEC) busy share 0..1.",
                       CHIP_LABELS), "decoder_utilization_pct")]
    simple = [(_gauge(name, doc, CHIP_LABELS), attr) for name, doc, attr in _GPU_GAUGES]
    for chip in gpus:
        g = chip.gpu
        assert g is not None
        labels = _chip_labels(chip)
        for typ, counter, value in (
            ("corrected", "volatile", g.ecc_volatile_corrected),
            ("uncorrected", "volatile", g.ecc_volatile_uncorrected),
            ("corrected", "aggregate", g.ecc_aggregate_corrected),
            ("uncorrected", "aggregate", g.ecc_aggregate_uncorrected),
        ):
            if value is not None:
                ecc.add_metric([*labels, typ, counter], value)
        for typ, value in (("correctable", g.remapped_rows_correctable),
                           ("uncorrectable", g.remapped_rows_uncorrectable)):
            if value is not None:
                rows.add_metric([*labels, typ], value)
        if not chip.stale and chip.error is None:
            active = set(g.throttle_reasons)
            for reason in THROTTLE_REASONS:
                throttle.add_metric([*labels, reason], 1.0 if reason in active else 0.0)
        if g.pcie_replay_count is not None:
            replay.add_metric(labels, g.pcie_replay_count)
        # The label is the key as the XID source gives it: "48", or "154:node_reboot" where the
        # driver's message qualified the code (the alert rules match whole keys).
        for key, count in sorted(g.xid_counts.items(), key=lambda kv: _xid_order(kv[0])):
            xid_window.add_metric([*labels, key], count)
        if chip.error is None:
            xid_total.add_metric(labels, g.xid_total)
        for fam, attr in simple:
            v = _num(getattr(g, attr))
            if v is not None:
                fam.add_metric(labels, v)
        for typ, errors in (("crc_flit", g.nvlink_crc_flit_errors), ("crc_data", g.nvlink_crc_data_errors),
                            ("replay", g.nvlink_replay_errors), ("recovery", g.nvlink_recovery_errors)):
            if errors is not None:
                nvlink_errors.add_metric([*labels, typ], errors)
        if g.energy_mj is not None:
            energy.add_metric(labels, g.energy_mj / 1000.0)
        for fam, attr in engines:
            v = _num(getattr(g, attr))
            if v is not None:
                fam.add_metric(labels, v / 100.0)
    yield from (ecc, rows, throttle, replay, xid_window, xid_total, nvlink_errors, energy)
    yield from (fam for fam, _ in engines)
    yield from (fam for fam, _ in simple)


def _dcgm_text(r: NodeReport) -> str:
    """The DCGM-compatible families in the classic text format (no "_total" added to counters)."""
    gpus = [c for c in r.chips if c.kind == "gpu" and c.vendor == "nvidia"]
    out: list[str] = []
    for name, typ, doc, rows in _dcgm_series(r, gpus):
        if not rows:
            continue  # as for the fleet_* families: no samples, no family
        help_text = doc.replace(BACKSLASH, BACKSLASH * 2).replace(NEWLINE, ESCAPED_NEWLINE)
        out.append(f"# HELP {name} {help_text}\n")
        out.append(f"# TYPE {name} {typ}\n")
        for labels, value in rows:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {_value_text(value)}\n")
    return "".join(out)


_Rows = list[tuple[list[tuple[str, str]], float]]


def _dcgm_series(r: NodeReport, gpus: list[ChipReport]) -> Iterator[tuple[str, str, str, _Rows]]:
    for name, typ, doc, source, scale in _DCGM:
        where, attr = source.split(".", 1)
        rows: _Rows = []
        for chip in gpus:
            obj = chip if where == "chip" else chip.gpu
            v = None if obj is None else _num(getattr(obj, attr))
            if v is not None:
                rows.append((_dcgm_labels(chip, r), v * scale))
        yield name, typ, doc, rows
    used: _Rows = []
    free: _Rows = []
    xid: _Rows = []
    for chip in gpus:
        labels = _dcgm_labels(chip, r)
        if chip.memory_used_bytes is not None:
            used.append((labels, chip.memory_used_bytes / _MIB))
            if chip.memory_total_bytes is not None:
                free.append((labels, max(0, chip.memory_total_bytes - chip.memory_used_bytes) / _MIB))
        code = _last_xid(chip)
        if code is not None:
            xid.append(([*labels, ("err_code", str(code)), ("err_msg", _xid_text(code))], code))
    yield "DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", free
    yield "DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", used
    yield "DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", xid


def _last_xid(chip: ChipReport) -> int | None:
    """The last XID's code; 0 (dcgm-exporter's "No Error") for a chip that answered and had none."""
    g = chip.gpu
    if g is None:
        return None
    if g.last_xid is not None:
        return g.last_xid
    return 0 if chip.error is None and not chip.stale else None


def _xid_text(code: int) -> str:
    if code == 0:
        return "No Error"
    info = XID_TABLE.get(code)
    return "Unknown Error" if info is None else info.meaning


BACKSLASH, NEWLINE, ESCAPED_NEWLINE = "\\", "\n", "\\n"


def _value_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace(BACKSLASH, BACKSLASH * 2).replace(NEWLINE, ESCAPED_NEWLINE).replace('"', '\\"')


def _health_families(r: NodeReport) -> Iterator[Metric]:
    # The action is a label because it depends on more than the check (a row remap: reset or RMA),
    # and `fleetctl remediate --source prometheus` acts on it.
    fam = _gauge("fleet_health_check_failing", "1 per failing health check on a chip (chip=\"node\" for "
                 "node-level checks), with the action it calls for.",
                 [*CHIP_LABELS, "check", "severity", "action"])
    seen: set[tuple[str, ...]] = set()
    rows: list[list[str]] = [["node", "", "", "", p.check, p.severity.value, p.action.value]
                             for p in r.problems]
    for chip in r.chips:
        rows.extend([*_chip_labels(chip), p.check, p.severity.value, p.action.value] for p in chip.problems)
    for labels in rows:
        key = tuple(labels)
        if key not in seen:  # one series per (chip, check, severity, action) even if raised twice
            seen.add(key)
            fam.add_metric(labels, 1)
    yield fam


# The series about a host that is not clean, again under one name (issue 20): `fleetctl health
# --source prometheus` needs them for the hosts whose summary is not clean and selects them by this name
# alone, so the query costs what the faults are, not the fleet (Prometheus pays per series selected;
# naming hosts in a regex makes it resolve and merge each host's every series). `metric` is the name of
# the series copied; its own labels follow.
FAULT_DETAIL = "fleet_fault_detail"
_FAULT_LABELS = ["metric", "status", "version", *CHIP_LABELS, "check", "severity", "action"]
# Copied whole: the node's own series (its status where 1), its failing checks.
_FAULT_NODE = frozenset({"fleet_agent_info", "fleet_node_drained", "fleet_node_chips_expected",
                         "fleet_node_chips_present", "fleet_sample_timestamp_seconds",
                         "fleet_node_chips_healthy", *(name for name, *_ in _ROLLUPS),
                         "fleet_health_check_failing"})
# Copied for the chips listed (not healthy, or with a failing check) only.
_FAULT_CHIP = frozenset({"fleet_chip_temperature_celsius", "fleet_chip_utilization_ratio",
                         "fleet_chip_memory_used_bytes", "fleet_chip_memory_total_bytes",
                         "fleet_chip_power_watts", "fleet_chip_stale"})


def _chip_ok(chip: ChipReport) -> bool:
    """Counted in fleet_node_chips_healthy: healthy, its reading fresh."""
    return chip.status is Status.HEALTHY and not chip.stale


def _node_clean(r: NodeReport) -> bool:
    """``fleet_node_clean``, which fleetctl-report.rules.yml's clean record reads: healthy, every chip
    healthy with a fresh reading, as many chips as expected (if a count is set), not drained."""
    return (r.status is Status.HEALTHY and not r.drained
            and (r.chips_expected is None or r.chips_expected == len(r.chips))
            and all(map(_chip_ok, r.chips)))


def _fault_family(r: NodeReport, families: list[Metric]) -> Metric:
    """The series fleetctl reads of a host that is not clean, copied from ``families`` (so the values
    are the exported ones): its node status, agent info, node gauges and rollups, failing checks, its
    chips' rank above healthy, and the readings of the chips that are not healthy or fail a check."""
    listed = {str(c.index) for c in r.chips if c.status is not Status.HEALTHY or c.problems}
    fam = _gauge(FAULT_DETAIL, "For a host that is not clean only: the series fleetctl reads about its "
                 "faults, each under its own name in `metric` (docs/metrics.md).", _FAULT_LABELS)
    for each in families:
        for s in each.samples:
            name, value = s.name, s.value
            if (name in _FAULT_NODE or (name == "fleet_node_status" and value == 1)
                    or (name == "fleet_chip_status_rank" and value > 0)
                    or (name in _FAULT_CHIP and s.labels.get("chip") in listed)):
                fam.add_metric([name, *(s.labels.get(label, "") for label in _FAULT_LABELS[1:])], value)
    return fam


class MetricsRenderer:
    """One agent's registry; :meth:`render` turns a report into exposition bytes."""

    def __init__(self) -> None:
        self._collector = ReportCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)

    def render(self, report: NodeReport) -> bytes:
        self._collector.report = report
        return generate_latest(self.registry) + _dcgm_text(report).encode()


def render_metrics(report: NodeReport) -> bytes:
    """Exposition text for one report (a fresh registry: for ``once`` and tests)."""
    return MetricsRenderer().render(report)


def _xid_order(key: str) -> tuple[int, str]:
    code = key.partition(":")[0]
    return (int(code) if code.isascii() and code.isdigit() else -1, key)
