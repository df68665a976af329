"""scripts/hw-validate.sh end to end without a GPU: the real script, a real venv installed from the
index, the real agent; below NVML, the simulator (tests/integration/hw_fakes: a ``pynvml`` module
and an ``nvidia-smi`` over the same simulated H100 host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests/integration/hw_fakes"
SCRIPT = ROOT / "scripts/hw-validate.sh"


def _env(bin_dir: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(FAKES)}


def _fake_smi(bin_dir: Path) -> None:
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / "fake_nvidia_smi.py"}" "$@"\n')
    smi.chmod(0o755)


def test_script_installs_samples_compares_and_keeps_a_fixture(tmp_path: Path) -> None:
    _fake_smi(tmp_path / "bin")
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--seconds", "2"],
                          env=_env(tmp_path / "bin"), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"once.json", "nvml-recording.json", "nvidia-smi.xml",
                                                "compare.txt", "figures.json", "agent-version.txt"}
    once = json.loads((out / "once.json").read_text())
    assert len(once["chips"]) == 8 and once["status"] == "healthy"
    lines = (out / "compare.txt").read_text().splitlines()
    uuid_rows = [line for line in lines if " uuid " in line]
    assert len(uuid_rows) == 8 and all(row.rstrip().endswith("same") for row in uuid_rows)
    assert not [line for line in lines if line.rstrip().endswith("DISAGREE")]
    figures = json.loads((out / "figures.json").read_text())
    assert figures["agent"]["rss_mb_max"] > 5 and figures["agent"]["metrics_ms_p50"] > 0
    assert figures["nvml_calls"]["nvmlDeviceGetTemperature"]["calls"] == 8
    # What the script kept replays through the real collector to the same chips.
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    replay = subprocess.run([sys.executable, "-m", "fleet_agent", "once", "--json", "--config", str(config),
                             "--replay-nvml", str(out / "nvml-recording.json")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert replay.returncode == 0, replay.stderr
    chips = [{k: v for k, v in c.items() if k != "sampled_at"} for c in json.loads(replay.stdout)["chips"]]
    assert chips == [{k: v for k, v in c.items() if k != "sampled_at"} for c in once["chips"]]


def test_script_says_in_one_line_when_there_is_no_driver(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out"),
                           "--nvidia-smi", "nvidia-smi-not-here"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == ("hw-validate: nvidia-smi-not-here not found: run this on a host with the NVIDIA "
                           "driver installed\n")
    assert not (tmp_path / "out").exists()
