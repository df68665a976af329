"""``nvidia-smi -q -x`` (and ``--query-gpu=name,driver_version``) over the simulated host that the
``pynvml`` module beside it serves: the layout of nvidia-smi's XML (nvsmi_device_v12), the values
of the simulator, so the comparison in scripts/hw-validate.sh can be exercised without a GPU."""

import os
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pynvml as nv

MIB = 1 << 20


def gpu_xml(i: int) -> str:
    h = nv.nvmlDeviceGetHandleByIndex(i)
    mem = nv.nvmlDeviceGetMemoryInfo(h)
    util = nv.nvmlDeviceGetUtilizationRates(h)
    corr, unc = nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    rows = nv.nvmlDeviceGetRemappedRows(h)
    bus = nv.nvmlDeviceGetPciInfo(h).busId

    def ecc(kind: int, scope: int) -> int:
        return nv.nvmlDeviceGetTotalEccErrors(h, kind, scope)

    def scope(tag: str, s: int) -> str:
        return (f"<{tag}><sram_correctable>0</sram_correctable>"
                f"<sram_uncorrectable_parity>0</sram_uncorrectable_parity>"
                f"<sram_uncorrectable_secded>0</sram_uncorrectable_secded>"
                f"<dram_correctable>{ecc(corr, s)}</dram_correctable>"
                f"<dram_uncorrectable>{ecc(unc, s)}</dram_uncorrectable></{tag}>")

    yn = ("No", "Yes")
    return f"""  <gpu id="{bus}">
    <product_name>{escape(nv.nvmlDeviceGetName(h))}</product_name>
    <persistence_mode>{"Enabled" if nv.nvmlDeviceGetPersistenceMode(h) else "Disabled"}</persistence_mode>
    <serial>{nv.nvmlDeviceGetSerial(h)}</serial>
    <uuid>{nv.nvmlDeviceGetUUID(h)}</uuid>
    <minor_number>{i}</minor_number>
    <pci>
      <pci_bus_id>{bus}</pci_bus_id>
      <pci_gpu_link_info>
        <pcie_gen>
          <max_link_gen>{nv.nvmlDeviceGetMaxPcieLinkGeneration(h)}</max_link_gen>
          <current_link_gen>{nv.nvmlDeviceGetCurrPcieLinkGeneration(h)}</current_link_gen>
        </pcie_gen>
        <link_widths>
          <max_link_width>{nv.nvmlDeviceGetMaxPcieLinkWidth(h)}x</max_link_width>
          <current_link_width>{nv.nvmlDeviceGetCurrPcieLinkWidth(h)}x</current_link_width>
        </link_widths>
      </pci_gpu_link_info>
      <replay_counter>{nv.nvmlDeviceGetPcieReplayCounter(h)}</replay_counter>
    </pci>
    <fb_memory_usage>
      <total>{mem.total // MIB} MiB</total>
      <reserved>0 MiB</reserved>
      <used>{mem.used // MIB} MiB</used>
      <free>{(mem.total - mem.used) // MIB} MiB</free>
    </fb_memory_usage>
    <utilization>
      <gpu_util>{util.gpu} %</gpu_util>
      <memory_util>{util.memory} %</memory_util>
      <encoder_util>{nv.nvmlDeviceGetEncoderUtilization(h)[0]} %</encoder_util>
      <decoder_util>{nv.nvmlDeviceGetDecoderUtilization(h)[0]} %</decoder_util>
    </utilization>
    <ecc_errors>{scope("volatile", nv.NVML_VOLATILE_ECC)}{scope("aggregate", nv.NVML_AGGREGATE_ECC)}
    </ecc_errors>
    <remapped_rows>
      <remapped_row_corr>{rows[0]}</remapped_row_corr>
      <remapped_row_unc>{rows[1]}</remapped_row_unc>
      <remapped_row_pending>{yn[int(rows[2])]}</remapped_row_pending>
      <remapped_row_failure>{yn[int(rows[3])]}</remapped_row_failure>
    </remapped_rows>
    <temperature>
      <gpu_temp>{nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)} C</gpu_temp>
      <gpu_temp_max_threshold>{nv.nvmlDeviceGetTemperatureThreshold(h, 0)} C</gpu_temp_max_threshold>
      <gpu_temp_slow_threshold>{nv.nvmlDeviceGetTemperatureThreshold(h, 1)} C</gpu_temp_slow_threshold>
      <memory_temp>N/A</memory_temp>
    </temperature>
    <gpu_power_readings>
      <power_draw>{nv.nvmlDeviceGetPowerUsage(h) / 1000:.2f} W</power_draw>
      <current_power_limit>{nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000:.2f} W</current_power_limit>
    </gpu_power_readings>
    <clocks>
      <sm_clock>{nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)} MHz</sm_clock>
      <mem_clock>{nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)} MHz</mem_clock>
    </clocks>
  </gpu>
"""


def main() -> int:
    nv.nvmlInit()
    count = nv.nvmlDeviceGetCount()
    if "--query-gpu=name,driver_version" in sys.argv:
        for i in range(count):
            name = nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(i))
            print(f"{name}, {nv.nvmlSystemGetDriverVersion()}")
        return 0
    if sys.argv[1:] != ["-q", "-x"]:
        print("fake nvidia-smi: only -q -x and --query-gpu=name,driver_version", file=sys.stderr)
        return 2
    body = "".join(gpu_xml(i) for i in range(count))
    print(f"""<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
  <driver_version>{nv.nvmlSystemGetDriverVersion()}</driver_version>
  <attached_gpus>{count}</attached_gpus>
{body}</nvidia_smi_log>""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
