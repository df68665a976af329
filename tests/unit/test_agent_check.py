"""``fleet-agent check``: exit codes and output over simulated hosts, the sample's own deadline, and the
Slurm drain/resume decisions (scontrol replaced by a recorder; tests/integration/
test_slurm_healthcheck.py runs it under a real slurmd)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from fleet_agent import check, cli
from fleet_agent.collectors.base import ChipCollector
from fleet_agent.config import AgentConfig
from fleet_agent.daemon import XidEvents
from fleet_agent.schema import (
    Action,
    ChipReport,
    CollectorState,
    HostMetrics,
    NodeReport,
    Problem,
    Severity,
    Status,
)

AGENT = str(Path(sys.executable).with_name("fleet-agent"))

HOST = """\
seed: 4
groups:
  - {name: gpu, count: 1, kind: gpu, model: H100-SXM5-80GB, chips: 2,
     load: {base_pct: 40, amplitude_pct: 0, period_s: 600, memory_used_pct: 40}}
"""


def scenario(tmp_path: Path, faults: str = "[]") -> str:
    path = tmp_path / "host.yaml"
    path.write_text(HOST + f"faults: {faults}\n")
    return str(path)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


# --- exit codes and lines ------------------------------------------------------------------------


def test_a_healthy_host_exits_0_and_prints_nothing(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run_main(["check", "--scenario", scenario(tmp_path)], capsys)
    assert (code, lines, err) == (0, [], "")


def test_a_lost_gpu_exits_1_with_the_problem_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, "[{kind: gpu_lost, group: gpu, hosts: [0], chips: [1]}]")
    code, lines, _ = run_main(["check", "--scenario", path], capsys)
    assert code == 1
    assert lines[0].startswith("gpu1 critical gpu_lost: GPU fell off the bus")
    assert lines[0].endswith("(action: reboot)")
    assert not any(line.startswith("gpu0 ") for line in lines)


def test_degraded_exits_0_but_still_lists_its_warnings(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, "[{kind: pcie_downgrade, group: gpu, hosts: [0], chips: [0],"
                              " gen: 3, width: 8}]")
    code, lines, _ = run_main(["check", "--scenario", path], capsys)
    assert code == 0
    assert [line.split(":")[0] for line in lines] == ["gpu0 warning pcie_link"]


def test_critical_lines_come_before_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, "[{kind: nvlink_down, group: gpu, hosts: [0], chips: [0], links: [1]},"
                              " {kind: row_remap_failure, group: gpu, hosts: [0], chips: [1]}]")
    code, lines, _ = run_main(["check", "--scenario", path], capsys)
    assert code == 1
    assert [line.split(" ")[1] for line in lines] == ["critical", "warning"]
    assert lines[0].startswith("gpu1 critical row_remap:") and lines[1].startswith("gpu0 warning nvlink:")


def test_a_host_without_the_nvidia_driver_exits_1_and_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The real collector and nvidia-ml-py's own loader, made to find no libnvidia-ml.so.1 whatever this
    # machine has; `collectors: auto` picks NVML because the PCI bus shows an NVIDIA GPU.
    import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from fleet_agent.collectors import factory

    def no_library(name: str, *a: object, **k: object) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(pynvml, "CDLL", no_library)
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(factory, "nvidia_pci_gpus", lambda *a: ["0000:18:00.0"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\nexpected_chips: 8\nxid: {{kernel_log: false}}\n")
    code, lines, _ = run_main(["check", "--config", str(cfg)], capsys)
    assert code == 1
    assert lines[0].startswith("node critical driver: NVML library not found: the NVIDIA driver is not "
                               "installed")
    assert lines[0].endswith("(NVML: NVML Shared Library Not Found) (action: update_software)")
    assert not any("collector nvml failed" in line for line in lines)


def test_an_agent_without_its_nvml_bindings_exits_2_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The agent is blind, the GPUs may be fine: could not tell (a bad agent package on every host
    # must not drain them all), even though the chips the config expects are not seen.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"collectors: [nvml, host]\nexpected_chips: 8\nstate_dir: {tmp_path / 'state'}\n")
    code, lines, _ = run_main(["check", "--config", str(cfg)], capsys)
    assert code == 2
    assert lines[0].startswith("node critical chip_count: 0 of 8 expected chips present")
    assert lines[1].startswith("node warning driver: NVML bindings not installed")
    assert lines[1].endswith("(action: update_software)")


@pytest.mark.parametrize(("fault", "first", "action"), [
    ("driver_missing", "node critical driver: NVML library not found", "update_software"),
    ("driver_not_loaded", "node critical driver: NVIDIA driver not loaded", "reboot"),
    ("driver_mismatch", "node critical driver: NVIDIA driver/library version mismatch", "reboot"),
])
def test_a_broken_driver_exits_1_with_the_driver_first(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       fault: str, first: str, action: str) -> None:
    # The simulated host expects its 2 GPUs: the driver is why none is seen, so it comes first.
    path = scenario(tmp_path, f"[{{kind: {fault}, group: gpu, hosts: [0]}}]")
    code, lines, _ = run_main(["check", "--scenario", path], capsys)
    assert code == 1
    assert lines[0].startswith(first) and lines[0].endswith(f"(action: {action})")
    assert lines[1].startswith("node critical chip_count: 0 of 2 expected chips present")
    assert len(lines) == 2


def test_a_hung_call_exits_2_within_its_deadline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, "[{kind: hang, group: gpu, hosts: [0], chips: [0], seconds: 600}]")
    t0 = time.monotonic()
    code, lines, _ = run_main(["check", "--scenario", path, "--timeout", "0.3"], capsys)
    assert time.monotonic() - t0 < 2.0
    assert code == 2
    assert any(line.startswith("gpu0 warning stale: no fresh reading (NVML call timed out after 0.3s)")
               for line in lines)


def test_a_config_error_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("interval_s: -1\n")
    code, lines, err = run_main(["check", "--config", str(bad)], capsys)
    assert code == 2 and lines == []
    assert err.strip() == f"fleet-agent: {bad}: interval_s: expected a positive number"
    code, _, err = run_main(["check", "--timeout", "0"], capsys)
    assert code == 2 and "--timeout" in err


def test_a_crash_of_the_check_itself_exits_2_not_1(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # 1 would read as "unhealthy" to whoever runs it (and --slurm would drain on it).
    def broken(*_: object, **__: object) -> check.CheckResult:
        raise RuntimeError("a bug")

    monkeypatch.setattr(check, "run_check", broken)
    code, lines, err = run_main(["check", "--slurm", "--node-name", "n1", "--scenario", "healthy"], capsys)
    assert (code, lines, err) == (2, [], "fleet-agent check: RuntimeError: a bug\n")


def test_an_unknown_chip_without_a_problem_still_gets_a_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # The stale check disabled: exit 2 must still come with a reason.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("health: {disabled_checks: [stale, collector]}\n")
    path = scenario(tmp_path, "[{kind: hang, group: gpu, hosts: [0], chips: [1], seconds: 600}]")
    code, lines, _ = run_main(["check", "--config", str(cfg), "--scenario", path, "--timeout", "0.3"], capsys)
    assert code == 2
    assert lines == ["gpu1 warning reading: NVML call timed out after 0.3s (action: monitor)"]


# --- fast, and never held up by a hung call -------------------------------------------------------


def test_the_process_takes_under_a_second_on_simulated_chips(tmp_path: Path) -> None:
    path = scenario(tmp_path, "[{kind: gpu_lost, group: gpu, hosts: [0], chips: [0]}]")
    t0 = time.monotonic()
    done = subprocess.run([AGENT, "check", "--scenario", path], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - t0
    assert done.returncode == 1, done.stderr
    assert elapsed < 1.0, f"fleet-agent check took {elapsed:.2f}s"


def test_the_process_exits_while_a_call_is_still_hung(tmp_path: Path) -> None:
    # The hang is never released (as with a wedged driver): the worker threads must not keep the
    # process alive.
    path = scenario(tmp_path, "[{kind: hang, group: gpu, hosts: [0], chips: [0, 1], seconds: 600}]")
    code = ("import sys\n"
            "from fleet_agent.sim.host import HostSim\n"
            "HostSim.release_hangs = lambda self: None\n"
            "from fleet_agent.cli import main\n"
            f"sys.exit(main(['check', '--scenario', {path!r}, '--timeout', '0.3']))\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert done.returncode == 2, done.stderr
    assert "gpu0 warning stale:" in done.stdout and "gpu1 warning stale:" in done.stdout
    assert elapsed < 5.0, f"took {elapsed:.2f}s with a call hung"


class BlockedSource:
    """A chip source whose collector never gets built (a constructor stuck in the driver)."""

    name = "blocked-0000"
    kind = "gpu"
    group = None
    chips_expected = 1

    def __init__(self) -> None:
        self.gate = threading.Event()

    def collector(self, *, xid_events: XidEvents = "poll") -> ChipCollector:
        self.gate.wait(60)
        raise RuntimeError("unblocked")

    def release_hangs(self) -> None:
        self.gate.set()


def test_a_sample_stuck_outside_the_call_deadlines_is_cut_off() -> None:
    source = BlockedSource()
    t0 = time.monotonic()
    result = check.run_check(AgentConfig(collectors=("nvml",)), source, timeout_s=0.1)
    assert time.monotonic() - t0 < 5.0
    assert result.code == 2
    assert result.lines()[0].startswith("node warning sample: the sample did not finish within 3.2s")
    assert source.gate.is_set()  # released, so its thread can end


# --- Slurm ---------------------------------------------------------------------------------------


class Scontrol:
    """Records scontrol's argument lists; ``show node`` answers with ``state`` and ``reason``."""

    def __init__(self, state: str = "IDLE", reason: str | None = None) -> None:
        self.state = state
        self.reason = reason
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[0] == "show":
            line = (f"NodeName={argv[3]} Arch=x86_64 CoresPerSocket=1 State={self.state} "
                    "ThreadsPerCore=1 Partitions=debug")
            if self.reason is not None:
                line += f" Reason={self.reason} [root@2024-05-01T10:00:00] Comment=(null)"
            return subprocess.CompletedProcess(argv, 0, line + "\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def updates(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] == "update"]


def result(code: int, *found: tuple[str, Severity, str]) -> check.CheckResult:
    return check.CheckResult(code, [check.Finding(who, Problem("gpu_lost", sev, msg, Action.REBOOT))
                                    for who, sev, msg in found])


LOST = result(1, ("gpu3", Severity.CRITICAL, "GPU fell off the bus"),
              ("gpu5", Severity.CRITICAL, "GPU fell off the bus"), ("node", Severity.WARNING, "meh"))


def test_unhealthy_drains_an_undrained_node_with_the_first_problem() -> None:
    sc = Scontrol("IDLE")
    said = check.slurm_act(LOST, "node7", sc)
    assert sc.updates() == [["update", "NodeName=node7", "State=DRAIN",
                             "Reason=fleet-agent: gpu3 gpu_lost: GPU fell off the bus (+1 more)"]]
    assert said.startswith("node7: drained")


@pytest.mark.parametrize("state,reason", [("IDLE+DRAIN", "bob: swapping PSU"),
                                          ("ALLOCATED+DRAIN", "fleet-agent: gpu0 xid: old"),
                                          ("DOWN+DRAIN", "Not responding")])
def test_unhealthy_leaves_a_node_drained_by_anyone(state: str, reason: str) -> None:
    sc = Scontrol(state, reason)
    assert "left as it is" in check.slurm_act(LOST, "node7", sc)
    assert sc.updates() == []


def test_healthy_resumes_only_a_drain_of_its_own() -> None:
    ours = Scontrol("IDLE+DRAIN", "fleet-agent: gpu3 gpu_lost: GPU fell off the bus")
    assert check.slurm_act(result(0), "node7", ours).startswith("node7: resumed")
    assert ours.updates() == [["update", "NodeName=node7", "State=RESUME"]]
    for state, reason in [("IDLE+DRAIN", "bob: fleet-agent: said so"), ("MIXED+DRAIN", "fleetctl:sre1: fan"),
                          ("DOWN", "Not responding"), ("IDLE", None)]:
        other = Scontrol(state, reason)
        assert check.slurm_act(result(0), "node7", other) is None
        assert other.updates() == [], (state, reason)


def test_could_not_tell_touches_nothing() -> None:
    sc = Scontrol("IDLE+DRAIN", "fleet-agent: gpu3 gpu_lost: GPU fell off the bus")
    assert "left as it is" in check.slurm_act(result(2), "node7", sc)
    assert sc.calls == []


def test_the_reason_is_one_bounded_line() -> None:
    long = result(1, ("gpu0", Severity.CRITICAL, "line one\nline\ttwo " + "x" * 300),
                  ("gpu1", Severity.CRITICAL, "second"))
    reason = check.drain_reason(long.findings)
    assert len(reason) == check.MAX_REASON
    assert reason.startswith("fleet-agent: gpu0 gpu_lost: line one line two xxx")
    assert reason.endswith("... (+1 more)") and "\n" not in reason and "\t" not in reason


def test_a_failing_scontrol_is_one_line_error() -> None:
    def refuse(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "",
                                           "slurm_load_node error: Invalid node name specified\n")

    with pytest.raises(check.SlurmActionError, match=r"^scontrol show node failed: slurm_load_node error"):
        check.slurm_act(LOST, "node7", refuse)


def test_parse_node_strips_slurms_user_and_time_and_stops_at_the_next_field() -> None:
    node = check.parse_node("NodeName=gpu-01 Arch=x86_64 State=MIXED+DRAIN* Partitions=a,b "
                            "Reason=fleet-agent: gpu0 xid: XID 79 x1 [root@2024-05-01T10:00:00] "
                            "Comment=(null) Extra=(null)")
    assert node == check.SlurmNode("gpu-01", frozenset({"MIXED", "DRAIN"}),
                                   "fleet-agent: gpu0 xid: XID 79 x1")
    assert node.ours
    assert check.parse_node("NodeName=n1 State=IDLE Partitions=a").reason is None
    with pytest.raises(ValueError, match="unexpected scontrol output"):
        check.parse_node("Node n1 not found")


@pytest.mark.parametrize("name", ["gpu[1-3]", "-h", "a,b", "a b", "n1;reboot"])
def test_slurm_mode_refuses_what_is_not_one_node_name(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["check", "--slurm", f"--node-name={name}", "--scenario", "healthy"], capsys)
    assert code == 2 and "--node-name" in err and "not a single Slurm node name" in err


def test_node_name_comes_from_slurmd_then_the_short_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURMD_NODENAME", "node2")
    assert check.default_node_name() == "node2"
    monkeypatch.delenv("SLURMD_NODENAME")
    monkeypatch.setattr(check.socket, "gethostname", lambda: "gpu-17.rack3.example.org")
    assert check.default_node_name() == "gpu-17"


def _node(collector_error: str, *, chip_problem: Problem | None = None) -> NodeReport:
    chips = [] if chip_problem is None else [ChipReport(
        index=0, kind="gpu", vendor="nvidia", model="H100", uuid="GPU-0", pci_bus_id="0000:3b:00.0",
        status=Status.UNHEALTHY, problems=[chip_problem])]
    count = Problem("chip_count", Severity.CRITICAL, "0 of 8 expected chips present", Action.REBOOT)
    return NodeReport(host="gpu1", agent_version="0", sampled_at=0.0, interval_s=5.0, status=Status.UNHEALTHY,
                      chips_expected=8, chips=chips, host_metrics=HostMetrics(), problems=[count],
                      collectors=[CollectorState("nvml", ok=False, error=collector_error)])


def test_missing_chips_because_the_listing_call_hung_is_could_not_tell_not_unhealthy() -> None:
    # A wedged driver across the fleet must not drain every node: the chips were not seen, not gone.
    assert check.judge(_node("NVML call timed out after 2.0s"), 10.0).code == 2
    # The same count from a driver that answered "not loaded" is a fault of the host.
    assert check.judge(_node("NVML init failed: Driver Not Loaded"), 10.0).code == 1
    # From an agent that lacks its NVML bindings it says nothing about the chips either.
    assert check.judge(_node("NVML bindings not installed: nvidia-ml-py is not installed"), 10.0).code == 2
    # A hang beside a critical fault that was seen is still unhealthy.
    lost = Problem("gpu_lost", Severity.CRITICAL, "GPU fell off the bus", Action.REBOOT)
    assert check.judge(_node("NVML call timed out after 2.0s", chip_problem=lost), 10.0).code == 1


def test_once_table_shows_outside_text_escaped() -> None:
    from fleet_agent.cli import render_table
    from fleet_agent.schema import ChipReport, HostMetrics, NodeReport, Status

    chip = ChipReport(index=0, kind="gpu", vendor="nvidia", model="H100\x1b[2J\x9b31m", uuid="GPU-0",
                      pci_bus_id="", status=Status.HEALTHY)
    report = NodeReport(host="h\x1b]8;;http://x\x07", agent_version="0", sampled_at=0.0, interval_s=5.0,
                        status=Status.HEALTHY, chips_expected=1, chips=[chip], host_metrics=HostMetrics(),
                        drained=True, drained_reason="[maint]\rswap")
    text = render_table(report)
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text and "\r" not in text
    assert "H100\\x1b[2J\\x9b31m" in text and "h\\x1b]8;;http://x\\x07" in text and "[maint]\\rswap" in text
