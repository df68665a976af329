"""scripts/hw_compare.py: the agent's report against nvidia-smi's XML, in the layouts drivers use."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import hw_compare  # noqa: E402

UUID = "GPU-c5533cd4-5a60-059e-348d-b6d7466932e4"

# The layout of R555 (nvsmi_device_v12): sram/dram ECC, gpu_power_readings, current_power_limit.
NEW = f"""<?xml version="1.0" ?>
<nvidia_smi_log><driver_version>555.42.06</driver_version>
<gpu id="00000000:01:00.0"><product_name>NVIDIA L4</product_name><persistence_mode>Enabled</persistence_mode>
<serial>1654523003308</serial><uuid>{UUID}</uuid><minor_number>0</minor_number>
<pci><pci_bus_id>00000000:01:00.0</pci_bus_id><pci_gpu_link_info>
<pcie_gen><max_link_gen>4</max_link_gen><current_link_gen>1</current_link_gen></pcie_gen>
<link_widths><max_link_width>16x</max_link_width><current_link_width>16x</current_link_width></link_widths>
</pci_gpu_link_info><replay_counter>0</replay_counter></pci>
<fb_memory_usage><total>23034 MiB</total><reserved>434 MiB</reserved><used>1 MiB</used>
<free>22601 MiB</free></fb_memory_usage>
<utilization><gpu_util>2 %</gpu_util><memory_util>0 %</memory_util><encoder_util>0 %</encoder_util>
<decoder_util>0 %</decoder_util></utilization>
<ecc_errors><volatile><sram_correctable>1</sram_correctable><sram_uncorrectable_parity>0</sram_uncorrectable_parity>
<sram_uncorrectable_secded>0</sram_uncorrectable_secded><dram_correctable>2</dram_correctable>
<dram_uncorrectable>0</dram_uncorrectable></volatile>
<aggregate><sram_correctable>N/A</sram_correctable><dram_correctable>N/A</dram_correctable></aggregate></ecc_errors>
<remapped_rows><remapped_row_corr>0</remapped_row_corr><remapped_row_unc>0</remapped_row_unc>
<remapped_row_pending>No</remapped_row_pending><remapped_row_failure>No</remapped_row_failure></remapped_rows>
<temperature><gpu_temp>45 C</gpu_temp><memory_temp>N/A</memory_temp></temperature>
<gpu_power_readings><power_draw>27.22 W</power_draw>
<current_power_limit>72.00 W</current_power_limit></gpu_power_readings>
<clocks><sm_clock>2040 MHz</sm_clock><mem_clock>6250 MHz</mem_clock></clocks>
</gpu></nvidia_smi_log>"""

# The older layout (R470-R535 on pre-Hopper GPUs): single_bit/double_bit totals, power_readings.
OLD = """<nvidia_smi_log><driver_version>470.82.01</driver_version><gpu id="00000000:3B:00.0">
<product_name>Tesla V100-SXM2-32GB</product_name><uuid>GPU-0</uuid>
<ecc_errors><volatile><single_bit><device_memory>3</device_memory><total>3</total></single_bit>
<double_bit><total>1</total></double_bit></volatile></ecc_errors>
<power_readings><power_draw>55.10 W</power_draw>
<enforced_power_limit>300.00 W</enforced_power_limit></power_readings>
</gpu></nvidia_smi_log>"""


def _chip(**overrides: Any) -> dict[str, Any]:
    chip: dict[str, Any] = {
        "index": 0, "kind": "gpu", "model": "NVIDIA L4", "uuid": UUID, "pci_bus_id": "00000000:01:00.0",
        "temperature_c": 46, "memory_temperature_c": None, "utilization_pct": 0,
        "memory_utilization_pct": 0, "memory_total_bytes": 23034 << 20, "memory_used_bytes": 1 << 20,
        "power_w": 25.1, "power_limit_w": 72.0, "sm_clock_mhz": 2040, "mem_clock_mhz": 6250,
        "gpu": {"serial": "1654523003308", "pcie_link_gen": 1, "pcie_link_gen_max": 4, "pcie_link_width": 16,
                "pcie_link_width_max": 16, "pcie_replay_count": 0, "ecc_volatile_corrected": 3,
                "ecc_volatile_uncorrected": 0, "remapped_rows_correctable": 0,
                "remapped_rows_uncorrectable": 0, "row_remap_pending": False, "row_remap_failure": False,
                "persistence_mode": True, "encoder_utilization_pct": 0, "decoder_utilization_pct": 0},
    }
    gpu = overrides.pop("gpu", {})
    chip.update(overrides)
    chip["gpu"].update(gpu)
    return chip


def _verdicts(report: dict[str, Any], xml: str = NEW) -> dict[str, str]:
    return {r.field: r.verdict for r in hw_compare.compare(report, xml) if r.gpu == "0"}


def test_agreeing_report_has_no_disagreement() -> None:
    verdicts = _verdicts({"driver_version": "555.42.06", "chips": [_chip()]})
    assert "DISAGREE" not in verdicts.values()
    for same in ("uuid", "serial", "model", "pci bus id", "power limit W", "PCIe generation max",
                 "ECC volatile corrected", "persistence mode", "memory total MiB"):
        assert verdicts[same] == "same", same
    # Live readings a second apart: within tolerance, named as such.
    assert verdicts["temperature C"] == "close"
    assert verdicts["power W"] == "close"
    assert verdicts["memory temperature C"] == "-"  # neither side has it
    assert verdicts["ECC aggregate corrected"] == "agent only" or verdicts["ECC aggregate corrected"] == "-"


@pytest.mark.parametrize(("change", "field"), [
    ({"uuid": "GPU-other"}, "uuid"),
    ({"power_limit_w": 70.0}, "power limit W"),
    ({"gpu": {"ecc_volatile_corrected": 0}}, "ECC volatile corrected"),
    ({"gpu": {"pcie_link_width_max": 8}}, "PCIe width max"),
    ({"memory_total_bytes": 20000 << 20}, "memory total MiB"),
    ({"gpu": {"row_remap_pending": True}}, "row remap pending"),
])
def test_a_fixed_field_that_differs_is_a_disagreement(change: dict[str, Any], field: str) -> None:
    rows = hw_compare.compare({"chips": [_chip(**change)]}, NEW)
    assert any(r.field == field and r.verdict == "DISAGREE" for r in rows)


def test_memory_total_within_what_nvidia_smi_lists_as_reserved_is_close() -> None:
    verdicts = _verdicts({"chips": [_chip(memory_total_bytes=(23034 - 400) << 20)]})
    assert verdicts["memory total MiB"] == "close"


def test_live_reading_beyond_tolerance_differs_but_is_no_failure() -> None:
    verdicts = _verdicts({"chips": [_chip(temperature_c=80, utilization_pct=90)]})
    assert verdicts["temperature C"] == verdicts["utilisation %"] == "differs"


def test_gpu_missing_on_the_agents_side_is_named() -> None:
    rows = hw_compare.compare({"chips": []}, NEW)
    assert [(r.field, r.agent, r.smi, r.verdict) for r in rows if r.gpu != "host"] == [
        ("present", "no", "yes", "DISAGREE")]


def test_older_layout_is_read() -> None:
    chip = _chip(uuid="GPU-0", pci_bus_id="00000000:3B:00.0", model="Tesla V100-SXM2-32GB", power_w=55.0,
                 power_limit_w=300.0, gpu={"ecc_volatile_corrected": 3, "ecc_volatile_uncorrected": 1})
    verdicts = _verdicts({"driver_version": "470.82.01", "chips": [chip]}, OLD)
    assert verdicts["ECC volatile corrected"] == "same"
    assert verdicts["ECC volatile uncorrected"] == "same"
    assert verdicts["power limit W"] == "same"
    assert verdicts["power W"] == "close"
    assert verdicts["pci bus id"] == "same"  # from the <gpu id=...> attribute


def test_main_exit_codes_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml = tmp_path / "smi.xml"
    xml.write_text(NEW)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"driver_version": "555.42.06", "chips": [_chip()]}))
    bad.write_text(json.dumps({"driver_version": "550.0", "chips": [_chip()]}))
    assert hw_compare.main([str(good), str(xml)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["GPU", "FIELD", "FLEET-AGENT", "NVIDIA-SMI"]
    assert "0     uuid" in table and UUID in table
    assert hw_compare.main([str(bad), str(xml)]) == 1
    assert "driver version" in capsys.readouterr().out
    assert hw_compare.main([str(good), str(tmp_path / "missing.xml")]) == 2
    assert capsys.readouterr().err.startswith("hw_compare: ")
