"""NVML recordings (``--record-nvml``) and their replay (``--replay-nvml``) through the real collector."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from fleet_agent.collectors.base import CollectorError
from fleet_agent.collectors.nvml import NvmlCollector
from fleet_agent.collectors.nvml_record import FORMAT, NvmlRecorder
from fleet_agent.sim.lookup import resolve_scenario, simulated_host
from fleet_agent.sim.nvml_replay import NvmlReplay, RecordingError

AGENT = [sys.executable, "-m", "fleet_agent"]


def _fake(scenario: str = "healthy", host: int = 0) -> Any:
    return simulated_host(str(resolve_scenario(scenario)), host, "test").nvml


def _sample(nvml: Any, hung: int | None = None) -> list[dict[str, Any]]:
    collector = NvmlCollector(nvml, xid_events="poll")
    try:
        out = []
        for chip in collector.discover():
            if chip.index == hung:  # the sampler's deadline is not in this test: leave it out
                continue
            try:
                report = asdict(collector.sample_chip(chip))
            except CollectorError as exc:  # a lost GPU fails its chip, not the sample
                out.append({"index": chip.index, "error": str(exc)})
                continue
            report.pop("sampled_at")
            out.append(report)
        return out
    finally:
        collector.close()


def _roundtrip(nvml: Any, tmp_path: Path, hung: int | None = None) -> tuple[list[dict[str, Any]], NvmlReplay]:
    recorder = NvmlRecorder(nvml)
    recorded = _sample(recorder, hung)
    recorder.save(tmp_path / "rec.json")
    replay = NvmlReplay.load(tmp_path / "rec.json")
    assert _sample(replay, hung) == recorded
    return recorded, replay


def test_replay_gives_back_what_was_recorded(tmp_path: Path) -> None:
    recorded, replay = _roundtrip(_fake(), tmp_path)
    assert len(recorded) == 8 and all(c["temperature_c"] and c["power_w"] for c in recorded)
    assert replay.unmatched == []
    doc = json.loads((tmp_path / "rec.json").read_text())
    assert doc["format"] == FORMAT
    assert (tmp_path / "rec.json").stat().st_mode & 0o777 == 0o644
    # Handles travel as tokens; structures field by field.
    first = {}
    for call in doc["calls"]:
        first.setdefault(call["fn"], call)
    handle = first["nvmlDeviceGetHandleByIndex"]
    assert handle["args"] == [0] and set(handle["result"]) == {"$h"}
    assert set(first["nvmlDeviceGetMemoryInfo"]["result"]["$s"]) >= {"total", "used"}
    assert first["nvmlDeviceGetMemoryInfo"]["args"] == [handle["result"]]


def test_faulty_chips_replay_with_their_faults(tmp_path: Path) -> None:
    # The faults scenario's first host has failing chips: errors are recorded and replayed as
    # NVML errors with the same codes, so the collector reaches the same verdicts.
    recorded, _ = _roundtrip(_fake("faults", 0), tmp_path, hung=7)
    doc = json.loads((tmp_path / "rec.json").read_text())
    assert any("error" in c for c in doc["calls"])
    assert any("GPU lost" in (c.get("error") or "") for c in recorded)


def test_a_lost_gpu_replays_as_lost(tmp_path: Path) -> None:
    doc = {"format": FORMAT, "constants": {}, "absent": [], "calls": [
        {"fn": "nvmlInit", "args": [], "result": None},
        {"fn": "nvmlSystemGetDriverVersion", "args": [], "result": "550.54.15"},
        {"fn": "nvmlDeviceGetCount", "args": [], "result": 1},
        {"fn": "nvmlDeviceGetHandleByIndex", "args": [0], "result": {"$h": "h0"}},
        {"fn": "nvmlDeviceGetUUID", "args": [{"$h": "h0"}], "result": "GPU-1"},
        {"fn": "nvmlDeviceGetName", "args": [{"$h": "h0"}], "result": {"$b": "NVIDIA H100"}},
        {"fn": "nvmlDeviceGetTemperature", "args": [{"$h": "h0"}, 0], "error": 15, "message": "GPU is lost"},
    ]}
    doc["constants"] = {"NVML_TEMPERATURE_GPU": 0}
    replay = NvmlReplay(doc)
    collector = NvmlCollector(replay, xid_events="off")
    chips = collector.discover()
    assert [(c.model, c.uuid) for c in chips] == [("NVIDIA H100", "GPU-1")]
    with pytest.raises(CollectorError, match="GPU lost"):
        collector.sample_chip(chips[0])


def test_answers_come_in_order_then_the_last_again_and_unknown_calls_are_not_supported() -> None:
    replay = NvmlReplay({"format": FORMAT, "absent": ["nvmlDeviceGetOld"], "calls": [
        {"fn": "nvmlDeviceGetCount", "args": [], "result": 2},
        {"fn": "nvmlDeviceGetCount", "args": [], "result": 1},
    ]})
    assert [replay.nvmlDeviceGetCount() for _ in range(3)] == [2, 1, 1]
    with pytest.raises(replay.NVMLError) as err:
        replay.nvmlDeviceGetPowerUsage("x")
    assert err.value.value == 3
    assert replay.unmatched and replay.unmatched[0].startswith("nvmlDeviceGetPowerUsage")
    assert not hasattr(replay, "nvmlDeviceGetOld")  # absent in the recorded pynvml: absent here
    assert not hasattr(replay, "NVML_NOT_RECORDED")


@pytest.mark.parametrize(("content", "why"), [
    ("{", "not a JSON NVML recording"),
    (json.dumps({"format": "other", "calls": []}), "format: expected"),
    (json.dumps({"format": FORMAT, "calls": [{"fn": 1}]}), "calls: expected a list"),
])
def test_bad_recording_is_one_line(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "rec.json"
    path.write_text(content)
    with pytest.raises(RecordingError, match=why):
        NvmlReplay.load(path)
    done = subprocess.run([*AGENT, "once", "--replay-nvml", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"fleet-agent: --replay-nvml: {path}: ")


@pytest.mark.parametrize(("args", "message"), [
    (["--scenario", "healthy", "--record-nvml", "x.json"],
     "--scenario: simulated chips do not go through pynvml"),
    (["--record-nvml", "/nonexistent/dir/x.json"], "--record-nvml: /nonexistent/dir is not a directory"),
])
def test_cli_refuses_what_cannot_work(args: list[str], message: str) -> None:
    done = subprocess.run([*AGENT, "once", *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"fleet-agent: {message}") and done.stderr.count("\n") == 1


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/hw/simulated-h100/nvml-recording.json"


def test_the_cuda_version_call_is_recorded_and_replayed(tmp_path: Path) -> None:
    _roundtrip(_fake(), tmp_path)
    calls = json.loads((tmp_path / "rec.json").read_text())["calls"]
    cuda = [c for c in calls if c["fn"].startswith("nvmlSystemGetCudaDriverVersion")]
    assert [(c["fn"], c["result"]) for c in cuda] == [("nvmlSystemGetCudaDriverVersion_v2", 12020)]
    collector = NvmlCollector(NvmlReplay.load(tmp_path / "rec.json"), xid_events="off")
    collector.discover()
    assert (collector.driver_version(), collector.cuda_driver_version()) == ("535.183.06", "12.2")


def test_a_recording_from_before_the_cuda_version_replays_without_it() -> None:
    assert "CudaDriverVersion" not in FIXTURE.read_text()  # the committed fixture is such a recording
    replay = NvmlReplay.load(FIXTURE)
    collector = NvmlCollector(replay, xid_events="off")
    assert len(collector.discover()) == 8
    assert (collector.driver_version(), collector.cuda_driver_version()) == ("535.183.06", None)
    assert [u.split("[")[0] for u in replay.unmatched] == ["nvmlSystemGetCudaDriverVersion_v2",
                                                           "nvmlSystemGetCudaDriverVersion"]


def test_bindings_without_v2_fall_back_to_the_older_call() -> None:
    replay = NvmlReplay({"format": FORMAT, "absent": ["nvmlSystemGetCudaDriverVersion_v2"], "calls": [
        {"fn": "nvmlInit", "args": [], "result": None},
        {"fn": "nvmlSystemGetDriverVersion", "args": [], "result": "470.256.02"},
        {"fn": "nvmlSystemGetCudaDriverVersion", "args": [], "result": 11040},
        {"fn": "nvmlDeviceGetCount", "args": [], "result": 0},
    ]})
    collector = NvmlCollector(replay, xid_events="off")
    assert collector.discover() == []
    assert collector.cuda_driver_version() == "11.4" and replay.unmatched == []


@pytest.mark.parametrize(("args", "cuda"), [
    (["--replay-nvml", str(FIXTURE)], None),
    (["--scenario", "healthy"], "12.2"),
])
def test_once_shows_the_cuda_version_next_to_the_driver(tmp_path: Path, args: list[str],
                                                        cuda: str | None) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    base = [*AGENT, "once", "--config", str(config), *args]
    done = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr  # 1: the sample is judged unhealthy, still a report
    report = json.loads(done.stdout)
    assert report["driver_version"] == "535.183.06" and report["cuda_driver_version"] == cuda
    done = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    first = done.stdout.splitlines()[0]
    assert "  driver 535.183.06" in first
    assert (f"  driver 535.183.06  cuda {cuda}" in first) if cuda else ("cuda" not in first)
