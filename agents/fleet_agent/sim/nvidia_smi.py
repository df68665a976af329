"""An ``nvidia-smi`` stand-in for simulated hosts: the calls a GPU reset makes, answered from the
host's scenario through the fake NVML, in nvidia-smi's own output formats and exit codes.

    python -m fleet_agent.sim.nvidia_smi --scenario S --hosts N --host NAME --state-dir DIR \\
        [--] --query-gpu=index,pci.bus_id --format=csv,noheader
    ... --query-compute-apps=pid --format=csv,noheader -i 1     (no line: no compute process)
    ... -r -i 1                                                 (GPU 00000000:1B:00.0 was successfully reset.)

A reset is recorded under the sim fleet's state directory (``fleet_agent.sim.resets``); the fleet's
chips and the ``dcgmi`` stand-in honour it: a fault that a reset clears ends then (``FaultSpec``'s
``reset_clears``), the others stay. A simulated host runs no workload, so no compute process is
ever listed. The stand-in's own options come first (``--`` may end them); the rest is nvidia-smi's.

Exit codes are nvidia-smi's (its manual's RETURN VALUE): 0 success, 2 a bad argument, 6 no such
device, 9 driver not loaded, 12 NVML library not found, 15 GPU lost, 255 other errors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_agent.config import ConfigError
from fleet_agent.printable import printable

EXIT_OK, EXIT_ARGS, EXIT_NOT_FOUND, EXIT_DRIVER, EXIT_LIBRARY, EXIT_LOST, EXIT_OTHER = 0, 2, 6, 9, 12, 15, 255
_OWN = {"--scenario": "scenario", "--hosts": "hosts", "--host": "host", "--host-index": "host_index",
        "--state-dir": "state_dir"}
# The --query-gpu fields the stand-in answers (nvidia-smi --help-query-gpu names).
GPU_FIELDS = ("index", "uuid", "name", "pci.bus_id", "driver_version", "serial", "count")
APP_FIELDS = ("pid", "process_name", "used_memory", "gpu_uuid", "gpu_bus_id", "gpu_name")


class SmiError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Request:
    """What the nvidia-smi part of the command line asks."""

    query_gpu: list[str] | None = None
    query_apps: list[str] | None = None
    reset: bool = False
    ids: list[str] | None = None
    header: bool = True
    units: bool = True
    extra: list[str] = field(default_factory=list)


def split_argv(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The stand-in's own options (first, each with its value) and nvidia-smi's arguments."""
    own: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i] in _OWN:
        if i + 1 >= len(argv):
            raise SmiError(f"{argv[i]}: a value is missing", EXIT_ARGS)
        own[_OWN[argv[i]]] = argv[i + 1]
        i += 2
    if i < len(argv) and argv[i] == "--":
        i += 1
    return own, list(argv[i:])


def parse_request(args: Sequence[str]) -> Request:
    req = Request()
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name == "--query-gpu" and eq:
            req.query_gpu = [f.strip() for f in value.split(",") if f.strip()]
        elif name == "--query-compute-apps" and eq:
            req.query_apps = [f.strip() for f in value.split(",") if f.strip()]
        elif name == "--format" and eq:
            parts = {p.strip() for p in value.split(",")}
            if "csv" not in parts or not parts <= {"csv", "noheader", "nounits"}:
                raise SmiError(f'"{printable(value)}" is not a valid format (csv, noheader, nounits)',
                               EXIT_ARGS)
            req.header, req.units = "noheader" not in parts, "nounits" not in parts
        elif arg in ("-r", "--gpu-reset"):
            req.reset = True
        elif arg in ("-i", "--id"):
            value = next(it, "")
            req.ids = [v.strip() for v in value.split(",") if v.strip()]
            if not req.ids:
                raise SmiError("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.",
                               EXIT_ARGS)
        elif name == "--id" and eq:
            req.ids = [v.strip() for v in value.split(",") if v.strip()]
        else:
            req.extra.append(arg)
    asked = [req.query_gpu is not None, req.query_apps is not None, req.reset]
    if req.extra or sum(asked) != 1 or (req.reset and not req.ids):
        # The stand-in answers only the calls playbooks/remediate/reset_gpu.yml makes.
        raise SmiError("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help. "
                       "(the stand-in answers --query-gpu, --query-compute-apps and -r -i)", EXIT_ARGS)
    return req


class Smi:
    """nvidia-smi over one simulated host's fake NVML."""

    def __init__(self, host: Any, now: float, record: Any) -> None:
        self.host = host
        self.nvml = host.nvml
        self.now = now  # seconds on the scenario's clock
        self.record = record  # (host name, chip, at) -> None; None: resets cannot be recorded
        self.out: list[str] = []

    def run(self, req: Request) -> int:
        err = self._init()
        if err is not None:
            raise err
        try:
            count = self.nvml.nvmlDeviceGetCount()
            chips = self._select(req.ids, count)
            if req.reset:
                return self._reset(chips)
            if req.query_apps is not None:
                return self._table(req, req.query_apps, APP_FIELDS, [])
            assert req.query_gpu is not None
            rows = [[self._gpu_field(i, f, count) for f in req.query_gpu] for i in chips]
            return self._table(req, req.query_gpu, GPU_FIELDS, rows)
        finally:
            self.nvml.nvmlShutdown()

    def _init(self) -> SmiError | None:
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            # The lines nvidia-smi prints when NVML cannot start, by the error it got.
            if exc.value == 12:
                return SmiError("NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. "
                                "Please make sure that the NVIDIA Display Driver is properly installed and "
                                "present in your system.", EXIT_LIBRARY)
            if exc.value == 18:
                return SmiError("Failed to initialize NVML: Driver/library version mismatch", 18)
            return SmiError("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                            "Make sure that the latest NVIDIA driver is installed and running.", EXIT_DRIVER)
        return None

    def _select(self, ids: list[str] | None, count: int) -> list[int]:
        if ids is None:
            return list(range(count))
        out = []
        for want in ids:
            found = next((i for i in range(count) if want in self._names(i)), None)
            if found is None:
                raise SmiError("No devices were found", EXIT_NOT_FOUND)
            out.append(found)
        return out

    def _names(self, i: int) -> set[str]:
        """What -i accepts for chip ``i``: its index, UUID and PCI bus id."""
        names = {str(i)}
        gpus = self.nvml.present_gpus()
        if i < len(gpus):
            names |= {gpus[i].uuid, f"00000000:{gpus[i].bus:02X}:00.0", f"0000:{gpus[i].bus:02X}:00.0"}
        return names

    def _handle(self, i: int) -> Any:
        try:
            return self.nvml.nvmlDeviceGetHandleByIndex(i)
        except self.nvml.NVMLError as exc:
            bus = self._bus(i)
            if exc.value == 15:
                raise SmiError(f"Unable to determine the device handle for GPU{bus}: GPU is lost.  "
                               "Reboot the system to recover this GPU", EXIT_LOST) from None
            raise SmiError(f"Unable to determine the device handle for GPU{bus}: {exc}", EXIT_OTHER) from None

    def _bus(self, i: int) -> str:
        gpus = self.nvml.present_gpus()
        return f"00000000:{gpus[i].bus:02X}:00.0" if i < len(gpus) else f"{i}"

    def _gpu_field(self, i: int, name: str, count: int) -> str:
        if name == "count":
            return str(count)
        if name == "driver_version":
            return str(self.nvml.nvmlSystemGetDriverVersion())
        h = self._handle(i)
        if name == "index":
            return str(i)
        if name == "uuid":
            return str(self.nvml.nvmlDeviceGetUUID(h))
        if name == "name":
            return str(self.nvml.nvmlDeviceGetName(h))
        if name == "serial":
            return str(self.nvml.nvmlDeviceGetSerial(h))
        return str(self.nvml.nvmlDeviceGetPciInfo_v3(h).busId)  # pci.bus_id

    def _table(self, req: Request, fields: list[str], known: tuple[str, ...], rows: list[list[str]]) -> int:
        for f in fields:
            if f not in known:
                raise SmiError(f'Field "{printable(f)}" is not a valid field to query.', EXIT_ARGS)
        if req.header:
            self.out.append(", ".join(fields))
        self.out += [", ".join(r) for r in rows]
        return EXIT_OK

    def _reset(self, chips: list[int]) -> int:
        if self.record is None:
            raise SmiError("the nvidia-smi stand-in records a reset under the sim fleet's state directory: "
                           "give --state-dir", EXIT_ARGS)
        for i in chips:
            h = self._handle(i)
            bus = str(self.nvml.nvmlDeviceGetPciInfo_v3(h).busId)
            # -i counts the GPUs enumerated now; the chip's own index is what its faults go by (they
            # differ once a GPU is missing)
            self.record(self.host.name, h.index, self.now)
            self.out.append(f"GPU {bus} was successfully reset.")
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    from fleet_agent.sim.lookup import resolve_scenario, standin_host
    from fleet_agent.sim.resets import SimStateError, record_reset

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        own, rest = split_argv(args)
        req = parse_request(rest)
        if "scenario" not in own or ("host" in own) == ("host_index" in own):
            raise SmiError("the nvidia-smi stand-in needs --scenario S and --host NAME or --host-index I "
                           "first", EXIT_ARGS)
        try:
            hosts = int(own["hosts"]) if "hosts" in own else None
            index = int(own["host_index"]) if "host_index" in own else None
        except ValueError:
            raise SmiError("--hosts and --host-index take integers", EXIT_ARGS) from None
        try:
            host, scen = standin_host(str(resolve_scenario(own["scenario"])), hosts=hosts,
                                      name=own.get("host"), index=index, state_dir=own.get("state_dir"))
        except ConfigError as exc:
            raise SmiError(f"fleet-agent sim nvidia-smi: {exc}", EXIT_ARGS) from None
        if host.kind != "gpu":
            raise SmiError("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                           "Make sure that the latest NVIDIA driver is installed and running.", EXIT_DRIVER)
        state = own.get("state_dir")

        def record(name: str, chip: int, at: float) -> None:
            assert state is not None
            try:
                record_reset(Path(state), name, chip, at)
            except (OSError, SimStateError) as exc:
                raise SmiError(f"fleet-agent sim nvidia-smi: cannot record the reset: {exc}",
                               EXIT_OTHER) from None

        smi = Smi(host, scen.clock() - scen.start, record if state is not None else None)
        try:
            code = smi.run(req)
        finally:
            for line in smi.out:
                print(line)
        return code
    except SmiError as exc:
        # nvidia-smi prints its errors on stdout.
        print(printable(str(exc)))
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
