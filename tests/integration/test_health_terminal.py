"""``fleetctl health`` as a person sees it: the real command in a real terminal (tmux) at 50, 60, 80,
120 and 200 columns, against a deterministic simulated fleet, compared with golden captures.

The captures are tests/golden/health/<view>-<columns>.txt. What changes from one run to the next is
masked in both the capture and the comparison (see :func:`mask`): temperatures, memory in use and
power (the simulated chips drift a little around their load), ages (seconds since the agent sampled)
and the run's duration. Each is masked as a whole token with the padding before it, so a late sample
or a value that gains a digit inside its column masks the same, while a column that moves (a layout
change) still fails the test; statuses, problems, host names and the layout are compared as they are.

Regenerate after an intended change of the views (then read the diff as a person would):
``FLEETCTL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_health_terminal.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_health_simfleet import FLEETCTL, SimFleet, start_sim_fleet, stop

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "health"
UPDATE = os.environ.get("FLEETCTL_UPDATE_GOLDEN") == "1"
HEIGHT = 40
DONE = "[fleetctl exited "

# Flat load (amplitude 0): utilisation, memory and power do not move; faults that hold still.
SCENARIO = """\
description: fleetctl health terminal goldens (stable faults, flat load)
seed: 7
groups:
  - name: h100
    kind: gpu
    model: H100-SXM5-80GB
    chips: 8
    count: 16
    load: {base_pct: 50, amplitude_pct: 0, period_s: 600, memory_used_pct: 50}
  - name: v5e
    kind: tpu
    model: v5e
    chips: 4
    count: 8
    load: {base_pct: 50, amplitude_pct: 0, period_s: 600, memory_used_pct: 50}
faults:
  - {kind: thermal_throttle, group: h100, hosts: [1], chips: [5], temperature_c: 90}
  - {kind: pcie_downgrade, group: h100, hosts: [2], chips: [3], gen: 3, width: 8}
  - {kind: gpu_lost, group: h100, hosts: [9], chips: [2]}
  - {kind: xid, group: h100, hosts: [10], chips: [6], code: 48}
  - {kind: ecc_uncorrectable, group: h100, hosts: [10], chips: [6], count: 1}
  - {kind: row_remap_pending, group: h100, hosts: [11], chips: [0]}
  - {kind: chip_missing, group: v5e, hosts: [1], chips: [2]}
"""

VIEWS = {
    "table": [],
    "chips-unhealthy": ["--chips", "--unhealthy"],
    "summary": ["--summary", "--group-by", "rack"],
    "map": ["--map"],
}
WIDTHS = (50, 60, 80, 120, 200)

def _token(keep: int) -> Callable[[re.Match[str]], str]:
    """A drifting number and the spaces before it (its column's padding) as ``keep`` hashes, right
    aligned in the same width: a value with one digit more or less, inside the same column, masks
    the same."""
    def repl(m: re.Match[str]) -> str:
        width = len(m.group())
        return "#" * width if width <= keep else " " * (width - keep) + "#" * keep

    return repl


_MASKS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str], ...] = (
    (re.compile(r"\(\d+\.\d+s"), "(#s"),  # the run's duration, on the summary line (nothing after it aligns)
    (re.compile(r" *\d+(?=°C)"), _token(3)),  # temperatures
    (re.compile(r"(?<= ) *\d+[smhd]$"), _token(3)),  # AGE, the last column (at most three characters)
    (re.compile(r" *\d+(?=/\d+ ?G)"), _token(4)),  # memory in use
    (re.compile(r" *\d+(?= W\b)"), _token(4)),  # power
)


def mask(text: str, masks: Sequence[tuple[re.Pattern[str], Any]] = _MASKS) -> str:
    """The capture with its run-to-run figures masked (see the module doc)."""
    lines = []
    for line in text.splitlines():
        for pattern, repl in masks:
            line = pattern.sub(repl, line)
        lines.append(line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def test_masks_hide_a_number_that_gains_a_digit_but_not_the_layout() -> None:
    before = "h100-0001  healthy  8/8  45°C  50%  320/640 GiB  #5 temperature   9s\n6 hosts (0.03s)\n"
    after = "h100-0001  healthy  8/8 100°C  50% 1320/640 GiB  #5 temperature  10s\n6 hosts (10.25s)\n"
    assert mask(before) == mask(after)
    assert "#5 temperature" in mask(before) and "healthy" in mask(before)
    moved = "h100-0001  healthy  8/8  45°C  50%  320/640 GiB  #5 temperature    9s\n6 hosts (0.03s)\n"
    assert mask(moved) != mask(before)  # a column that moved still differs


def racked_inventory(fleet: SimFleet, path: Path) -> Path:
    """sim-fleet's inventory plus racks (four hosts each) and a host nobody answers for (h100-0016,
    on a port of this test's range that nothing listens on: refused at once, every run)."""
    doc = yaml.safe_load(fleet.inventory.read_text())
    children = doc["all"]["children"]
    doc["all"]["hosts"]["h100-0016"] = {"ansible_host": "127.0.0.1", "fleet_agent_port": 36999,
                                        "fleet_agent_expected_chips": 8}
    children["h100"]["hosts"]["h100-0016"] = None
    children["gpu_nodes"]["hosts"]["h100-0016"] = None
    gpus = sorted(h for h in doc["all"]["hosts"] if h.startswith("h100"))
    tpus = sorted(h for h in doc["all"]["hosts"] if h.startswith("v5e"))
    for i, name in enumerate(gpus):
        children.setdefault(f"rack{min(i // 4, 3) + 1}", {"hosts": {}})["hosts"][name] = None
    for i, name in enumerate(tpus):
        children.setdefault(f"rack{i // 4 + 5}", {"hosts": {}})["hosts"][name] = None
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fleet_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if shutil.which("tmux") is None:
        pytest.fail("these tests need tmux (apt-get install tmux)", pytrace=False)
    work = tmp_path_factory.mktemp("terminal")
    fleet = start_sim_fleet(work, SCENARIO, 24, lo=36000, hi=36900)
    try:
        yield racked_inventory(fleet, work / "racked.yml"), work / "cache"
    finally:
        stop(fleet)


def in_tmux(argv: list[str], columns: int, env: dict[str, str], tag: str) -> str:
    """Run ``argv`` in a fresh tmux terminal ``columns`` x HEIGHT with only ``env`` (pytest's own
    COLUMNS/LINES would otherwise win over the terminal's size); return what the screen (and its
    scrollback) shows once it exits."""
    socket = f"fleetctl-hm-{os.getpid()}-{tag}"
    script = " ".join(_quote(a) for a in argv) + f"; echo '{DONE}'$?']'; sleep 60"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-s", "m", "-x", str(columns), "-y", str(HEIGHT),
                    "env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", script],
                   check=True, timeout=10)
    try:
        deadline = time.monotonic() + 60
        while True:
            shown = subprocess.run([*tmux, "capture-pane", "-p", "-S", "-", "-t", "m"], capture_output=True,
                                   text=True, check=True, timeout=10).stdout
            if DONE in shown or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
    assert DONE in shown, f"the command did not finish in tmux:\n{shown}"
    return shown[:shown.index(DONE)]


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("view", list(VIEWS))
def test_health_in_a_terminal_matches_its_golden_capture(fleet_inventory: tuple[Path, Path], view: str,
                                                         columns: int) -> None:
    inventory, cache = fleet_inventory
    env = {"FLEETCTL_CACHE_DIR": str(cache), "TERM": "xterm-256color", "LANG": "C.UTF-8",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    shown = mask(in_tmux([FLEETCTL, "health", "-i", str(inventory), *VIEWS[view]], columns, env,
                         f"{view}-{columns}"))
    golden = GOLDEN / f"{view}-{columns}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(shown)
    assert golden.exists(), f"{golden} is missing: FLEETCTL_UPDATE_GOLDEN=1 writes it"
    # Looked at as a person would: nothing wider than the terminal, PROBLEMS never gone or cut
    # to a stub, the bad hosts there.
    assert all(len(line) <= columns for line in shown.splitlines())
    if view in ("table", "chips-unhealthy"):
        assert "PROBLEMS" in shown and "temperature" in shown and "pcie_link" in shown
    assert shown == golden.read_text(), f"{view} at {columns} columns differs from {golden}:\n{shown}"
