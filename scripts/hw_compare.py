#!/usr/bin/env python3
"""Compare the agent's node report with ``nvidia-smi -q -x``, field by field, GPU by GPU.

Usage: hw_compare.py ONCE_JSON NVIDIA_SMI_XML
Prints a side-by-side table and exits 1 when a field that cannot change between two readings a
second apart (identity, limits, counters) disagrees; readings that move on their own
(temperature, power, utilisation, clocks, link speed at idle) are compared within a tolerance and
a difference there is shown but is not a failure. Part of scripts/hw-validate.sh; standard library
only, so it runs with any Python 3.11 beside the GPU.

nvidia-smi's XML layout (the nvsmi_device_v12 DTD and its predecessors) moved a few fields between
driver releases: power in ``power_readings`` or ``gpu_power_readings`` (``power_draw``, or
``average_power_draw``/``instant_power_draw`` from R560), the power limit as ``enforced_power_limit``
or ``current_power_limit``, ECC counts as ``single_bit``/``double_bit`` totals or as ``sram_*`` and
``dram_*`` (Hopper and newer). Each field below lists the paths it is found at, first match wins.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20


@dataclass(frozen=True)
class Field:
    name: str
    agent: Callable[[dict[str, Any]], Any]  # from a chip of the agent's report
    smi: Callable[[ET.Element], Any]  # from a <gpu> element of nvidia-smi's XML
    tolerance: float | None = None  # None: must be equal; else allowed absolute difference
    relative: bool = False  # tolerance is a fraction of nvidia-smi's value
    live: bool = False  # moves on its own between two readings: beyond tolerance it "differs"


@dataclass(frozen=True)
class Row:
    gpu: str
    field: str
    agent: Any
    smi: Any
    verdict: str  # "same", "close", "differs" (live reading), "DISAGREE", "agent only", "smi only", "-"


def text(gpu: ET.Element, *paths: str) -> str | None:
    """The first of ``paths`` that holds a value (not "N/A", not empty)."""
    for path in paths:
        node = gpu.find(path)
        if node is not None and node.text is not None:
            value = node.text.strip()
            if value and value not in ("N/A", "[N/A]", "Unknown Error", "[Unknown Error]"):
                return value
    return None


def number(gpu: ET.Element, *paths: str) -> float | None:
    """The number at the start of a value such as "45 C", "27.22 W", "16x", "1980 MHz"."""
    value = text(gpu, *paths)
    match = re.match(r"\s*(-?\d+(?:\.\d+)?)", value or "")
    return float(match.group(1)) if match else None


def yes_no(gpu: ET.Element, *paths: str) -> bool | None:
    value = text(gpu, *paths)
    if value is None:
        return None
    return value.lower() in ("yes", "enabled", "active")


def total(gpu: ET.Element, *groups: tuple[str, ...]) -> float | None:
    """The sum over the first group of paths of which any holds a number (newer layouts split a
    count in parts that the older one, and NVML, give as one)."""
    for paths in groups:
        values = [number(gpu, p) for p in paths]
        if any(v is not None for v in values):
            return sum(v for v in values if v is not None)
    return None


def _ecc(scope: str, kind: str) -> Callable[[ET.Element], Any]:
    if kind == "corrected":
        groups = ((f"ecc_errors/{scope}/sram_correctable", f"ecc_errors/{scope}/dram_correctable"),
                  (f"ecc_errors/{scope}/single_bit/total",))
    else:
        groups = ((f"ecc_errors/{scope}/sram_uncorrectable", f"ecc_errors/{scope}/sram_uncorrectable_parity",
                   f"ecc_errors/{scope}/sram_uncorrectable_secded", f"ecc_errors/{scope}/dram_uncorrectable"),
                  (f"ecc_errors/{scope}/double_bit/total",))
    return lambda g: total(g, *groups)


def _gpu(chip: dict[str, Any], key: str) -> Any:
    return (chip.get("gpu") or {}).get(key)


def _mib(value: Any) -> float | None:
    return None if value is None else round(value / MIB)


FIELDS: tuple[Field, ...] = (
    Field("uuid", lambda c: c.get("uuid"), lambda g: text(g, "uuid")),
    Field("serial", lambda c: _gpu(c, "serial"), lambda g: text(g, "serial")),
    Field("model", lambda c: c.get("model"), lambda g: text(g, "product_name")),
    Field("pci bus id", lambda c: (c.get("pci_bus_id") or "").upper() or None,
          lambda g: (text(g, "pci/pci_bus_id") or g.get("id") or "").upper() or None),
    Field("temperature C", lambda c: c.get("temperature_c"), lambda g: number(g, "temperature/gpu_temp"), 3,
          live=True),
    Field("memory temperature C", lambda c: c.get("memory_temperature_c"),
          lambda g: number(g, "temperature/memory_temp"), 3, live=True),
    Field("slowdown temperature C", lambda c: _gpu(c, "slowdown_temp_c"),
          lambda g: number(g, "temperature/gpu_temp_slow_threshold")),
    Field("shutdown temperature C", lambda c: _gpu(c, "shutdown_temp_c"),
          lambda g: number(g, "temperature/gpu_temp_max_threshold")),
    Field("utilisation %", lambda c: c.get("utilization_pct"),
          lambda g: number(g, "utilization/gpu_util"), 25, live=True),
    Field("memory utilisation %", lambda c: c.get("memory_utilization_pct"),
          lambda g: number(g, "utilization/memory_util"), 25, live=True),
    Field("encoder utilisation %", lambda c: _gpu(c, "encoder_utilization_pct"),
          lambda g: number(g, "utilization/encoder_util"), 25, live=True),
    Field("decoder utilisation %", lambda c: _gpu(c, "decoder_utilization_pct"),
          lambda g: number(g, "utilization/decoder_util"), 25, live=True),
    # NVML's total can count memory nvidia-smi lists as reserved; the tolerance is set per GPU below.
    Field("memory total MiB", lambda c: _mib(c.get("memory_total_bytes")),
          lambda g: number(g, "fb_memory_usage/total"), 0),
    Field("memory used MiB", lambda c: _mib(c.get("memory_used_bytes")),
          lambda g: number(g, "fb_memory_usage/used"), 0.05, relative=True, live=True),
    Field("power W", lambda c: c.get("power_w"),
          lambda g: number(g, "gpu_power_readings/power_draw", "gpu_power_readings/average_power_draw",
                           "gpu_power_readings/instant_power_draw", "power_readings/power_draw"),
          0.25, relative=True, live=True),
    Field("power limit W", lambda c: c.get("power_limit_w"),
          lambda g: number(g, "gpu_power_readings/enforced_power_limit",
                           "gpu_power_readings/current_power_limit", "power_readings/enforced_power_limit",
                           "power_readings/power_limit"), 0.5),
    Field("SM clock MHz", lambda c: c.get("sm_clock_mhz"), lambda g: number(g, "clocks/sm_clock"),
          0.25, relative=True, live=True),
    Field("memory clock MHz", lambda c: c.get("mem_clock_mhz"), lambda g: number(g, "clocks/mem_clock"),
          0.1, relative=True, live=True),
    Field("PCIe generation", lambda c: _gpu(c, "pcie_link_gen"),
          lambda g: number(g, "pci/pci_gpu_link_info/pcie_gen/current_link_gen"), 3, live=True),
    Field("PCIe generation max", lambda c: _gpu(c, "pcie_link_gen_max"),
          lambda g: number(g, "pci/pci_gpu_link_info/pcie_gen/max_link_gen")),
    Field("PCIe width", lambda c: _gpu(c, "pcie_link_width"),
          lambda g: number(g, "pci/pci_gpu_link_info/link_widths/current_link_width"), 15, live=True),
    Field("PCIe width max", lambda c: _gpu(c, "pcie_link_width_max"),
          lambda g: number(g, "pci/pci_gpu_link_info/link_widths/max_link_width")),
    Field("PCIe replays", lambda c: _gpu(c, "pcie_replay_count"), lambda g: number(g, "pci/replay_counter")),
    Field("ECC volatile corrected", lambda c: _gpu(c, "ecc_volatile_corrected"),
          _ecc("volatile", "corrected")),
    Field("ECC volatile uncorrected", lambda c: _gpu(c, "ecc_volatile_uncorrected"),
          _ecc("volatile", "uncorrected")),
    Field("ECC aggregate corrected", lambda c: _gpu(c, "ecc_aggregate_corrected"),
          _ecc("aggregate", "corrected")),
    Field("ECC aggregate uncorrected", lambda c: _gpu(c, "ecc_aggregate_uncorrected"),
          _ecc("aggregate", "uncorrected")),
    Field("remapped rows correctable", lambda c: _gpu(c, "remapped_rows_correctable"),
          lambda g: number(g, "remapped_rows/remapped_row_corr")),
    Field("remapped rows uncorrectable", lambda c: _gpu(c, "remapped_rows_uncorrectable"),
          lambda g: number(g, "remapped_rows/remapped_row_unc")),
    Field("row remap pending", lambda c: _gpu(c, "row_remap_pending"),
          lambda g: yes_no(g, "remapped_rows/remapped_row_pending")),
    Field("row remap failure", lambda c: _gpu(c, "row_remap_failure"),
          lambda g: yes_no(g, "remapped_rows/remapped_row_failure")),
    Field("persistence mode", lambda c: _gpu(c, "persistence_mode"), lambda g: yes_no(g, "persistence_mode")),
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def judge(f: Field, agent: Any, smi: Any, gpu: ET.Element | None = None) -> str:
    if agent is None and smi is None:
        return "-"
    if smi is None:
        return "agent only"
    if agent is None:
        return "smi only"
    if _same(agent, smi):
        return "same"
    if f.tolerance is None or not isinstance(agent, (int, float)) or not isinstance(smi, (int, float)):
        return "DISAGREE"
    allowed = f.tolerance * abs(float(smi)) if f.relative else f.tolerance
    if f.name == "memory total MiB" and gpu is not None:
        allowed = (number(gpu, "fb_memory_usage/reserved") or 0) + 1
    if abs(float(agent) - float(smi)) <= allowed:
        return "close"
    return "differs" if f.live else "DISAGREE"


def compare(report: dict[str, Any], xml_text: str) -> list[Row]:
    """One row per GPU and field, and a row for the driver version and for GPUs only one side has."""
    root = ET.fromstring(xml_text)  # noqa: S314 - nvidia-smi's output on this host, not outside input
    gpus = root.findall("gpu")
    by_uuid = {text(g, "uuid"): g for g in gpus}
    by_bus = {(text(g, "pci/pci_bus_id") or g.get("id") or "").upper(): g for g in gpus}
    rows = [Row("host", "driver version", report.get("driver_version"), text(root, "driver_version"),
                judge(Field("driver", str, str), report.get("driver_version"), text(root, "driver_version")))]
    seen: set[int] = set()
    for chip in report.get("chips") or []:
        if chip.get("kind") != "gpu":
            continue
        gpu = by_uuid.get(chip.get("uuid")) or by_bus.get((chip.get("pci_bus_id") or "").upper())
        label = f"{chip.get('index')}"
        if gpu is None:
            rows.append(Row(label, "present", "yes", "no", "DISAGREE"))
            continue
        seen.add(id(gpu))
        for f in FIELDS:
            a, s = f.agent(chip), f.smi(gpu)
            rows.append(Row(label, f.name, a, s, judge(f, a, s, gpu)))
    for gpu in gpus:
        if id(gpu) not in seen:
            label = text(gpu, "minor_number") or gpu.get("id") or "?"
            rows.append(Row(label, "present", "no", "yes", "DISAGREE"))
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(rows: list[Row]) -> str:
    header = ("GPU", "FIELD", "FLEET-AGENT", "NVIDIA-SMI", "")
    cells = [header] + [(r.gpu, r.field, _show(r.agent), _show(r.smi), r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in cells]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    lines.append("")
    lines.append("summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: hw_compare.py ONCE_JSON NVIDIA_SMI_XML", file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        xml_text = Path(argv[1]).read_text(encoding="utf-8")
        rows = compare(report, xml_text)
    except (OSError, ValueError, ET.ParseError) as exc:
        print(f"hw_compare: {exc}", file=sys.stderr)
        return 2
    print(render(rows))
    return 1 if any(r.verdict == "DISAGREE" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
