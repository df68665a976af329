"""Every real-hardware fixture (tests/fixtures/hw/*/) replays through the real NVML collector.

A recording made by ``fleet-agent once --record-nvml`` on a GPU host is played back with
``--replay-nvml``: the production collector parses the same answers again and must give the chips
of the ``once.json`` recorded beside it. The comparison with nvidia-smi is re-run on the stored
files too, so a change to either side that breaks agreement shows here, not on the next GPU host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted(p for p in (ROOT / "tests/fixtures/hw").iterdir() if p.is_dir())
AGENT = [sys.executable, "-m", "fleet_agent"]
sys.path.insert(0, str(ROOT / "scripts"))
import hw_compare  # noqa: E402


def test_there_is_a_fixture_to_replay() -> None:
    assert FIXTURES, "tests/fixtures/hw holds no recording"


def _chips(report: dict[str, Any]) -> list[dict[str, Any]]:
    chips = report["chips"]
    for chip in chips:
        chip.pop("sampled_at", None)
    return chips


def _same(replayed: Any, recorded: Any, where: str = "chips") -> None:
    """Equal where the recording has a field; a field the schema gained since is empty in the
    replay (the recording has no answer for the call that feeds it)."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key, value in replayed.items():
            if key in recorded:
                _same(value, recorded[key], f"{where}.{key}")
            else:
                assert value in (None, [], {}, 0, False), f"{where}.{key}: {value!r} not in the recording"
        assert not set(recorded) - set(replayed), f"{where}: fields gone: {set(recorded) - set(replayed)}"
    elif isinstance(recorded, list) and isinstance(replayed, list):
        assert len(replayed) == len(recorded), where
        for i, (a, b) in enumerate(zip(replayed, recorded, strict=True)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert replayed == recorded, where


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_recording_replays_to_the_recorded_report(fixture: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    done = subprocess.run([*AGENT, "once", "--json", "--config", str(config),
                           "--replay-nvml", str(fixture / "nvml-recording.json")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    replayed = json.loads(done.stdout)
    recorded = json.loads((fixture / "once.json").read_text())
    assert replayed["driver_version"] == recorded["driver_version"]
    assert len(replayed["chips"]) == len(recorded["chips"]) > 0
    _same(_chips(replayed), _chips(recorded))


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_stored_comparison_still_agrees(fixture: Path) -> None:
    rows = hw_compare.compare(json.loads((fixture / "once.json").read_text()),
                              (fixture / "nvidia-smi.xml").read_text())
    assert not [r for r in rows if r.verdict == "DISAGREE"]
    assert {r.field for r in rows if r.verdict == "same"} >= {"uuid", "model", "pci bus id", "power limit W"}
