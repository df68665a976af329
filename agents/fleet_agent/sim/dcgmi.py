"""A ``dcgmi`` stand-in for simulated hosts: ``diag -r <level> -j`` answered from the host's scenario.

The answer is DCGM's own JSON layout (4.x by default, ``--layout 3`` for 2.x/3.x), its DCGM_FR_*
codes, severities, categories and message texts, and dcgmi's exit status, so the parser and the
burn-in orchestration that read it are the production ones. Like DCGM, the stand-in reads the chips
through NVML, here the simulation's fake NVML: a hung chip hangs it, a lost chip fails its tests, a
missing driver stops it before any test (docs/burn-in.md has the fault-to-test table)::

    python -m fleet_agent.sim.dcgmi --scenario demo --host h100-0007 diag -r 2 -j
    python -m fleet_agent.sim.dcgmi --config /etc/fleet-agent/config.yaml diag -r 1 -j

A host is found as the simulated fleet's agents find theirs: the ``simulation:`` section of an agent
config (``--config``), or a scenario with a host index or name (``--hosts`` as ``sim-fleet --hosts``).
Fault times (``at``) count from the stand-in's start, as for ``fleet-agent once``; ``--elapsed S``
answers as if the scenario had started S seconds ago. With ``--state-dir`` (the sim fleet's, which its
inventory names) they count from the fleet's start and the GPU resets the ``nvidia-smi`` stand-in
recorded apply: the stand-in sees what the fleet's agents see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_agent.config import ConfigError
from fleet_agent.printable import printable

# dcgmi exits with DCGM's (negative) return code as an unsigned byte: DCGM_ST_NVVS_ERROR (-30) is 226
# (a maintainer in NVIDIA/DCGM#158), DCGM_ST_NVVS_ISOLATE_ERROR (-51) 205, DCGM_ST_NVML_NOT_LOADED
# (-56) 200, DCGM_ST_NVML_ERROR (-8) 248.
EXIT_FAIL = -30 & 0xFF
EXIT_ISOLATE = -51 & 0xFF
EXIT_NVML_NOT_LOADED = -56 & 0xFF
EXIT_NVML_ERROR = -8 & 0xFF
EXIT_USAGE = 2

# Tests per run level (DCGM 4.x plugin names), in the order dcgmi prints them, and their categories.
LEVEL_TESTS = {
    1: ("software",),
    2: ("software", "pcie", "memory"),
    3: ("software", "pcie", "memory", "diagnostic", "targeted_stress", "targeted_power"),
    4: ("software", "pcie", "memory", "diagnostic", "pulse_test", "targeted_stress", "targeted_power",
        "memory_bandwidth", "memtest"),
}
CATEGORY = {"software": "Deployment", "pcie": "Integration", "memory": "Hardware", "diagnostic": "Hardware",
            "pulse_test": "Hardware", "targeted_stress": "Stress", "targeted_power": "Stress",
            "memory_bandwidth": "Stress", "memtest": "Stress"}
_CATEGORY_ORDER = ("Deployment", "Integration", "Hardware", "Stress")
# DCGM 2.x/3.x display names of the same tests; "software" was nine deployment checks then.
NAME_3X = {"pcie": "PCIe", "memory": "GPU Memory", "diagnostic": "Diagnostic", "pulse_test": "Pulse Test",
           "targeted_stress": "Targeted Stress", "targeted_power": "Targeted Power",
           "memory_bandwidth": "Memory Bandwidth", "memtest": "Memtest"}
DEPLOYMENT_3X = ("Denylist", "NVML Library", "CUDA Main Library", "Permissions and OS Blocks",
                 "Persistence Mode", "Environment Variables", "Page Retirement/Row Remap",
                 "Graphics Processes", "Inforom")

# DCGM_FR_* code -> (severity, category), from DCGM's dcgm_errors.c. Severities: 1 monitor,
# 2 isolate, 4 triage, 5 config, 6 reset; categories: 5 software XID, 8 software other,
# 9 thermal, 10 memory, 11 NVLink, 13 PCIe.
FR_VOLATILE_DBE, FR_PENDING_PAGE_RETIREMENTS, FR_THERMAL, FR_NVLINK_DOWN = 4, 6, 10, 14
FR_PCIE_GENERATION, FR_PCIE_WIDTH, FR_API_FAIL_GPU = 45, 46, 65
FR_ROW_REMAP_FAILURE, FR_PENDING_ROW_REMAP, FR_XID = 80, 85, 101
ERROR_META = {
    FR_VOLATILE_DBE: (2, 10), FR_PENDING_PAGE_RETIREMENTS: (6, 10), FR_THERMAL: (1, 9),
    FR_NVLINK_DOWN: (4, 11), FR_PCIE_GENERATION: (4, 13), FR_PCIE_WIDTH: (5, 13), FR_API_FAIL_GPU: (4, 8),
    FR_ROW_REMAP_FAILURE: (2, 10), FR_PENDING_ROW_REMAP: (6, 10), FR_XID: (4, 5),
}
SEVERITY_ISOLATE = 2


@dataclass(frozen=True)
class DiagError:
    """One DCGM_FR_* finding on one GPU (message texts are DCGM's dcgm_errors.h formats)."""

    gpu: int
    code: int
    message: str

    def entry(self, text_key: str = "warning") -> dict[str, Any]:
        severity, category = ERROR_META[self.code]
        return {"error_category": category, "error_id": self.code, "error_severity": severity,
                text_key: self.message}


@dataclass
class DiagRun:
    """What the stand-in found: per test, per GPU, the errors (none: a pass)."""

    level: int
    dcgm_version: str
    driver_version: str
    gpus: list[int]
    device_id: str
    errors: dict[str, list[DiagError]] = field(default_factory=dict)

    @property
    def tests(self) -> tuple[str, ...]:
        return LEVEL_TESTS[self.level]

    def failed(self, test: str, gpu: int) -> list[DiagError]:
        return [e for e in self.errors.get(test, []) if e.gpu == gpu]

    def exit_code(self) -> int:
        found = [e for t in self.tests for e in self.errors.get(t, [])]
        if not found:
            return 0
        isolate = any(ERROR_META[e.code][0] == SEVERITY_ISOLATE for e in found)
        return EXIT_ISOLATE if isolate else EXIT_FAIL


class EngineError(Exception):
    """The embedded host engine could not start (dcgmi prints one line and exits with ``code``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _nvml_call(fn: Callable[..., Any], *args: Any) -> tuple[Any, Exception | None]:
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - the fake raises pynvml's NVMLError_* classes
        return None, exc


def probe(nvml: Any, level: int, *, dcgm_version: str, xids: Callable[[Any], list[int]],
          only: Sequence[int] | None = None) -> DiagRun:
    """Read every GPU through ``nvml`` (pynvml's API) and decide what each test of ``level`` finds.

    ``xids(handle)``: the XID codes the chip raised so far (the diagnostic watches for them).
    """
    _, err = _nvml_call(nvml.nvmlInit)
    if err is not None:
        name = type(err).__name__
        if name in ("NVMLError_LibraryNotFound",):
            raise EngineError("Cannot perform the requested operation because NVML doesn't exist on this "
                              "system.", EXIT_NVML_NOT_LOADED)
        raise EngineError("NVML error", EXIT_NVML_ERROR)
    try:
        driver = str(nvml.nvmlSystemGetDriverVersion())
        count = int(nvml.nvmlDeviceGetCount())
        gpus = [i for i in range(count) if only is None or i in only]
        run = DiagRun(level=level, dcgm_version=dcgm_version, driver_version=driver, gpus=gpus, device_id="")
        for gpu in gpus:
            _probe_gpu(nvml, run, gpu, xids)
        return run
    finally:
        _nvml_call(nvml.nvmlShutdown)


def _add(run: DiagRun, tests: Sequence[str], error: DiagError) -> None:
    for test in tests:
        if test in run.tests:
            run.errors.setdefault(test, []).append(error)


def _probe_gpu(nvml: Any, run: DiagRun, gpu: int, xids: Callable[[Any], list[int]]) -> None:
    handle, err = _nvml_call(nvml.nvmlDeviceGetHandleByIndex, gpu)
    if err is not None:
        # A GPU DCGM lists but cannot reach fails every test it would run.
        lost = DiagError(gpu, FR_API_FAIL_GPU,
                         f"API call nvmlDeviceGetHandleByIndex failed for GPU {gpu}: '{err}'")
        _add(run, run.tests, lost)
        return
    if not run.device_id:
        pci_id = int(getattr(getattr(handle, "model", None), "pci_device_id", 0))
        run.device_id = f"{pci_id >> 16:04x}" if pci_id else ""
    dbe, _ = _nvml_call(nvml.nvmlDeviceGetTotalEccErrors, handle, 1, 0)  # uncorrected, volatile
    if dbe:
        _add(run, ("memory", "memtest"), DiagError(
            gpu, FR_VOLATILE_DBE, f"Detected {dbe} volatile double-bit ECC error(s) in GPU {gpu}."))
    rows, _ = _nvml_call(nvml.nvmlDeviceGetRemappedRows, handle)
    if rows is not None and rows[3]:
        _add(run, ("software", "memory", "memtest"), DiagError(
            gpu, FR_ROW_REMAP_FAILURE,
            f"GPU {gpu} had uncorrectable memory errors and row remapping failed."))
    elif rows is not None and rows[2]:
        _add(run, ("software", "memory"), DiagError(
            gpu, FR_PENDING_ROW_REMAP, f"GPU {gpu} had memory errors and row remappings are pending"))
    pages, _ = _nvml_call(nvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    if pages:
        _add(run, ("software", "memory"), DiagError(
            gpu, FR_PENDING_PAGE_RETIREMENTS, f"A pending retired page has been detected in GPU {gpu}."))
    for code in xids(handle):
        _add(run, ("memory", "diagnostic"), DiagError(gpu, FR_XID, f"Detected XID {code} for GPU {gpu}"))
    reasons, _ = _nvml_call(nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
    if reasons and reasons & (0x20 | 0x40):  # SW or HW thermal slowdown: the stress tests see it
        _add(run, ("targeted_stress", "targeted_power", "pulse_test"), DiagError(
            gpu, FR_THERMAL, f"Detected clock throttling due to thermal violation in GPU {gpu}."))
    _probe_links(nvml, run, gpu, handle)


def _probe_links(nvml: Any, run: DiagRun, gpu: int, handle: Any) -> None:
    cur_gen, _ = _nvml_call(nvml.nvmlDeviceGetCurrPcieLinkGeneration, handle)
    max_gen, _ = _nvml_call(nvml.nvmlDeviceGetMaxPcieLinkGeneration, handle)
    if isinstance(cur_gen, int) and isinstance(max_gen, int) and cur_gen < max_gen:
        _add(run, ("pcie",), DiagError(
            gpu, FR_PCIE_GENERATION, f"GPU {gpu} is running at PCI link generation {cur_gen}, which is below "
            f"the minimum allowed link generation of {max_gen} (parameter 'min_pci_generation')"))
    cur_w, _ = _nvml_call(nvml.nvmlDeviceGetCurrPcieLinkWidth, handle)
    max_w, _ = _nvml_call(nvml.nvmlDeviceGetMaxPcieLinkWidth, handle)
    if isinstance(cur_w, int) and isinstance(max_w, int) and cur_w < max_w:
        _add(run, ("pcie",), DiagError(
            gpu, FR_PCIE_WIDTH, f"GPU {gpu} is running at PCI link width {cur_w}X, which is below the "
            f"minimum allowed link generation of {max_w} (parameter 'min_pci_width')"))
    links = int(getattr(getattr(handle, "model", None), "nvlinks", 0))
    for link in range(links):
        state, _ = _nvml_call(nvml.nvmlDeviceGetNvLinkState, handle, link)
        if state == 0:
            _add(run, ("pcie",), DiagError(gpu, FR_NVLINK_DOWN,
                                           f"GPU {gpu}'s NvLink link {link} is currently down"))


def _status(errors: list[DiagError]) -> str:
    return "Fail" if errors else "Pass"


def render_4x(run: DiagRun) -> dict[str, Any]:
    """The document DCGM 4.x's ``dcgmi diag -j`` prints (dcgmi/Diag.cpp HelperJsonBuildOutput)."""
    categories: list[dict[str, Any]] = []
    for cat in _CATEGORY_ORDER:
        tests = []
        for test in (t for t in run.tests if CATEGORY[t] == cat):
            results = []
            for gpu in run.gpus:
                errs = run.failed(test, gpu)
                entry: dict[str, Any] = {"entity_group": "GPU", "entity_group_id": 1, "entity_id": gpu,
                                         "status": _status(errs)}
                if errs:
                    entry["warnings"] = [e.entry() for e in errs]
                results.append(entry)
            all_errs = [e for g in run.gpus for e in run.failed(test, g)]
            tests.append({"name": test, "results": results, "test_summary": {"status": _status(all_errs)}})
        if tests:
            categories.append({"category": cat, "tests": tests})
    doc: dict[str, Any] = {"DCGM Diagnostic": {"test_categories": categories}}
    if run.gpus:
        doc["entity_groups"] = [{"entities": [{"device_id": run.device_id, "entity_id": g} for g in run.gpus],
                                 "entity_group": "GPU", "entity_group_id": 1}]
    doc["metadata"] = {"Driver Version Detected": run.driver_version, "version": run.dcgm_version}
    return doc


def render_3x(run: DiagRun) -> dict[str, Any]:
    """The document DCGM 3.x's ``dcgmi diag -j`` prints: deployment checks, then per-GPU tests."""
    software = run.errors.get("software", [])
    # The page-retirement check reports memory findings, the NVML check an unreachable GPU.
    by_check = {"NVML Library": [e for e in software if e.code == FR_API_FAIL_GPU],
                "Page Retirement/Row Remap": [e for e in software if e.code != FR_API_FAIL_GPU]}
    deployment = []
    for check in DEPLOYMENT_3X:
        errs = by_check.get(check, [])
        result: dict[str, Any] = {"status": _status(errs)}
        if errs:
            result["gpu_ids"] = errs[-1].gpu  # dcgmi keeps the last error's GPU here, as a number
            result["warnings"] = [e.entry("warnings") for e in errs]  # sic: dcgmi's key for these
        deployment.append({"name": check, "results": [result]})
    categories: list[dict[str, Any]] = [{"category": "Deployment", "tests": deployment}]
    for cat in _CATEGORY_ORDER[1:]:
        tests = []
        for test in (t for t in run.tests if CATEGORY[t] == cat):
            results = []
            for gpu in run.gpus:
                errs = run.failed(test, gpu)
                entry: dict[str, Any] = {"gpu_ids": str(gpu), "status": _status(errs)}
                if errs:
                    entry["warnings"] = [e.entry() for e in errs]
                results.append(entry)
            tests.append({"name": NAME_3X[test], "results": results})
        if tests:
            categories.append({"category": cat, "tests": tests})
    return {"DCGM GPU Diagnostic": {"test_categories": categories},
            "Driver Version Detected": run.driver_version,
            "GPU Device IDs": [run.device_id for _ in run.gpus], "version": run.dcgm_version}


LEVEL_NAMES = {"1": 1, "quick": 1, "short": 1, "2": 2, "medium": 2, "3": 3, "long": 3, "4": 4, "xlong": 4}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fleet_agent.sim.dcgmi",
                                description="dcgmi stand-in for simulated hosts (answers 'diag').")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE",
                       help="an agent config whose simulation: section names the host")
    where.add_argument("--scenario", metavar="FILE", help="scenario file, or a shipped scenario's name")
    p.add_argument("--host", metavar="NAME", help="the host's name in the scenario (with --scenario)")
    p.add_argument("--host-index", type=int, metavar="I", help="the host's index (with --scenario)")
    p.add_argument("--hosts", type=int, metavar="N", help="fleet size, as sim-fleet --hosts")
    p.add_argument("--state-dir", metavar="DIR",
                   help="the sim fleet's state directory: its clock and the recorded GPU resets")
    p.add_argument("--elapsed", type=float, default=0.0, metavar="S",
                   help="answer as if the scenario had started S seconds ago (default 0)")
    p.add_argument("--layout", choices=("3", "4"), default="4", help="DCGM JSON layout (default 4)")
    p.add_argument("--dcgm-version", metavar="V",
                   help="version to report (default 4.2.3, or 3.3.8 for layout 3)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    diag = sub.add_parser("diag", help="run the diagnostic")
    diag.add_argument("-r", "--run", required=True, metavar="LEVEL")
    diag.add_argument("-j", "--json", action="store_true")
    diag.add_argument("-i", "--entity-id", metavar="GPUS", help="comma-separated GPU indices")
    diag.add_argument("--host", dest="engine_host", metavar="ADDR", help="ignored: the stand-in is embedded")
    return p


def _find_host(args: argparse.Namespace) -> Any:
    from fleet_agent.sim.lookup import load_scenario_or_fail, resolve_scenario, standin_host

    if args.config and args.state_dir:
        raise ConfigError("--state-dir: only with --scenario")
    if args.scenario and args.state_dir:
        if (args.host is None) == (args.host_index is None):
            raise ConfigError("--scenario: give the host as --host NAME or --host-index I")
        return standin_host(str(resolve_scenario(args.scenario)), hosts=args.hosts, name=args.host,
                            index=args.host_index, state_dir=args.state_dir, elapsed=args.elapsed)

    if args.config:
        from fleet_agent.config import load_config

        cfg = load_config(args.config)
        if cfg.simulation is None:
            raise ConfigError(f"{args.config}: no simulation: section (a real host has a real dcgmi)")
        path, index, name = cfg.simulation.scenario, cfg.simulation.host_index, None
    else:
        if (args.host is None) == (args.host_index is None):
            raise ConfigError("--scenario: give the host as --host NAME or --host-index I")
        path, index, name = str(resolve_scenario(args.scenario)), args.host_index, args.host
    if args.hosts is not None and args.hosts < 1:
        raise ConfigError("--hosts: must be at least 1")
    offset = [0.0]
    scen = load_scenario_or_fail(path, hosts=args.hosts)
    scen = _shift(scen, offset)
    if name is not None:
        found = next((h for h in scen.hosts() if h.name == name), None)
        if found is None:
            raise ConfigError(f"--host: {name!r} is not a host of {path} ({len(scen)} hosts)")
        host = found
    else:
        if not 0 <= index < len(scen):
            raise ConfigError(f"host index {index} is outside the scenario's {len(scen)} hosts")
        host = scen.host(index)
    offset[0] = args.elapsed  # the clock jumps once the scenario has started: faults up to `elapsed` are on
    return host, scen


def _shift(scen: Any, offset: list[float]) -> Any:
    from fleet_agent.sim.scenario import Scenario

    return Scenario(path=scen.path, seed=scen.seed, groups=scen.groups, counts=scen.counts,
                    faults=scen.faults, clock=lambda: time.monotonic() + offset[0])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = LEVEL_NAMES.get(str(args.run).strip().lower())
    if level is None:
        print(f"Error: the dcgmi stand-in runs levels 1-4 (or quick, short, medium, long, xlong), "
              f"not {printable(str(args.run))!r}", file=sys.stderr)
        return EXIT_USAGE
    if not args.json:
        print("Error: the dcgmi stand-in answers only with JSON (-j)", file=sys.stderr)
        return EXIT_USAGE
    only = None
    if args.entity_id:
        try:
            only = [int(p) for p in args.entity_id.split(",") if p.strip()]
        except ValueError:
            print(f"Error: Gpu list '{printable(args.entity_id)}' must be a comma-separated list of numbers",
                  file=sys.stderr)
            return EXIT_USAGE
    try:
        host, scen = _find_host(args)
    except ConfigError as exc:
        print(f"fleet-agent sim-dcgmi: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    version = args.dcgm_version or ("3.3.8" if args.layout == "3" else "4.2.3")

    def xids(handle: Any) -> list[int]:
        # The XIDs of the faults still on: one a reset ended is history to a new diagnostic run.
        seen: Callable[[float], list[int]] | None = getattr(handle, "xids_seen", None)
        return seen(scen.clock() - scen.start) if seen is not None else []

    try:
        run = probe(host.nvml, level, dcgm_version=version, xids=xids, only=only)
    except EngineError as exc:
        # As dcgmi does when its embedded host engine cannot start: one line on stdout, even with -j.
        print(f"Error: Unable to start an embedded host engine. {exc}.")
        return exc.code
    doc = render_3x(run) if args.layout == "3" else render_4x(run)
    print(json.dumps(doc, indent=3))
    return run.exit_code()


if __name__ == "__main__":
    sys.exit(main())
