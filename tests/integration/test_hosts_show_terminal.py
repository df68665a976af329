"""``fleetctl hosts show HOST`` as on-call sees it: the real command in a real terminal (tmux) at 80
and 120 columns, compared with golden captures, and its ``-o json`` document.

The host has a history written through the state modules themselves (a lifecycle from new through
burn-in to service and a drain into repair, a drain, a provision run, a burn-in result and an
interrupted remediation) and a live agent: one simulated H100 host with an XID 48 that holds still.
The captures are tests/golden/hosts/show-<columns>.txt. Masked in both (see :func:`mask`): the times
the state modules stamp themselves, the remediation's generated id and the agent's port, each with
a mask of its own width, so a column that moves still fails the test.

Regenerate after an intended change of the page (then read the diff as a person would):
``FLEETCTL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_hosts_show_terminal.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_health_simfleet import FLEETCTL, start_sim_fleet, stop
from test_health_terminal import in_tmux
from test_health_terminal import mask as terminal_mask

from fleetctl.runner import HostResult
from fleetctl.state import burnin, db, lifecycle, runs
from fleetctl.state import hosts as hstate
from fleetctl.state import remediation as rstate

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hosts"
UPDATE = os.environ.get("FLEETCTL_UPDATE_GOLDEN") == "1"
HOST = "h100-0000"
T0 = 1_714_557_600.0  # 2024-05-01T10:00:00Z: the records whose times the test chooses

SCENARIO = """\
description: fleetctl hosts show terminal goldens (one host, a fault that holds still)
seed: 7
groups:
  - name: h100
    kind: gpu
    model: H100-SXM5-80GB
    chips: 8
    count: 1
    load: {base_pct: 50, amplitude_pct: 0, period_s: 600, memory_used_pct: 50}
faults:
  - {kind: xid, group: h100, hosts: [0], chips: [6], code: 48}
"""

_MASKS = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"), "YYYY-MM-DDTHH:MM:SSZ"),
    (re.compile(r"r-\d{8}T\d{6}-[0-9a-f]{6}"), "r-YYYYMMDDTHHMMSS-xxxxxx"),
    (re.compile(r"(?<=127\.0\.0\.1:)\d{5}"), "PPPPP"),
)


def mask(text: str) -> str:
    """The capture with what the test does not choose masked (see the module doc), same widths."""
    return terminal_mask(text, _MASKS)


def test_the_masks_keep_the_layout() -> None:
    before = "remediation  r-20240501T100000-a1b2c3: interrupted  127.0.0.1:36001 2024-05-01T10:00:00Z\n"
    after = "remediation  r-20250101T000000-ffffff: interrupted  127.0.0.1:36417 2025-01-01T00:00:09Z\n"
    assert mask(before) == mask(after) and "interrupted" in mask(before)
    assert mask(before.replace("  r-", "   r-")) != mask(before)  # a column that moved still differs


def prepare(state: Path) -> str:
    """The host's history, written as fleetctl's verbs write it; returns the remediation's id."""
    conn = db.connect(state)
    try:
        lifecycle.set_state(conn, HOST, lifecycle.LifeState.BURN_IN, actor="alice@bastion1",
                            reason="racked in B7")
        lifecycle.on_burn_in_result(conn, HOST, status="pass", actor="alice@bastion1", run_id="bi-0001",
                                    why="level 2: every test passed")
        burnin.record(conn, [burnin.BurnInRecord(
            run_id="bi-0001", host=HOST, started_at=T0, ended_at=T0 + 900, actor="alice@bastion1", level=2,
            status="pass", reason="level 2: every test passed", not_run=("nccl",))])
        rec = runs.RunRecord(id="20240501T110000Z-0a1b2c", user="bob", machine="bastion2", pid=1,
                             started_at="2024-05-01T11:00:00+00:00", heartbeat_at="2024-05-01T11:00:00+00:00",
                             inventory="fleet.yml", pattern=HOST, playbook="site.yml", options={},
                             hosts=[HostResult(HOST)])
        runs.start(conn, rec)
        runs.finish(conn, rec.id, "successful", [HostResult(HOST, ok=41, changed=2)])
        for to in (hstate.DrainState.CORDONED, hstate.DrainState.DRAINING, hstate.DrainState.DRAINED):
            hstate.transition(conn, HOST, to, actor="carol@bastion1", reason="XID 48 on chip 6",
                              note="no jobs left" if to is hstate.DrainState.DRAINED else None)
        lifecycle.on_drain(conn, HOST, actor="carol@bastion1", reason="XID 48 on chip 6", run_id=None)
        store = rstate.SqlStore(conn)
        rem = store.start(HOST, "reset_gpu", "repair", ["drain", "reset_gpu", "burn_in", "undrain"], [6],
                          reason="XID 48 on chip 6", actor="remediate@bastion3", at=T0 + 7200)
        store.step_started(rem, 0)
        store.step_ended(rem, 0, ok=True)
        store.step_started(store.get(rem.id), 1)
        return rem.id
    finally:
        conn.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    if shutil.which("tmux") is None:
        pytest.fail("these tests need tmux (apt-get install tmux)", pytrace=False)
    work = tmp_path_factory.mktemp("hosts-show")
    fleet = start_sim_fleet(work, SCENARIO, 1, lo=36300, hi=36499)
    try:
        rid = prepare(work / "state.db")
        env = {"FLEETCTL_CACHE_DIR": str(work / "cache"), "FLEETCTL_DB": str(work / "state.db"),
               "FLEETCTL_INVENTORY": str(fleet.inventory), "TERM": "xterm-256color", "LANG": "C.UTF-8",
               "USER": "sre", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": os.environ.get("HOME", "/tmp")}
        yield env, rid
    finally:
        stop(fleet)


@pytest.mark.parametrize("columns", [80, 120])
def test_hosts_show_in_a_terminal_matches_its_golden_capture(page: tuple[dict[str, str], str],
                                                             columns: int) -> None:
    env, _ = page
    shown = mask(in_tmux([FLEETCTL, "hosts", "show", HOST], columns, env, f"show-{columns}"))
    golden = GOLDEN / f"show-{columns}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(shown)
    assert golden.exists(), f"{golden} is missing: FLEETCTL_UPDATE_GOLDEN=1 writes it"
    lines = shown.splitlines()
    # Looked at as a person would: nothing wider than the terminal, the host's name and what on-call
    # needs there whole (not folded onto a second line).
    assert all(len(line) <= columns for line in lines)
    assert lines[0].split() == ["host", HOST]
    assert any(line.split()[:2] == ["lifecycle", "repairing"] for line in lines)
    words = " ".join(shown.split())  # a folded value read back as one line
    assert "last burn-in pass level 2 YYYY-MM-DDTHH:MM:SSZ (bi-0001)" in words and "not run: nccl" in words
    assert "remediation r-YYYYMMDDTHHMMSS-xxxxxx: running at step 2/4 reset_gpu (reset_gpu)" in words
    # times, run ids and the chip rows whole on their own line, never folded
    assert any(line.startswith("20240501T110000Z-0a1b2c  YYYY-MM-DDTHH:MM:SSZ  successful") for line in lines)
    assert sum(bool(re.match(r"YYYY-MM-DDTHH:MM:SSZ  ", line)) for line in lines) == 6  # history, drains
    assert any(line.split()[:2] == ["6", "NVIDIA"] and line.split()[-2:] == ["x1", "48"] for line in lines)
    assert shown == golden.read_text(), f"hosts show at {columns} columns differs from {golden}:\n{shown}"


def test_hosts_show_json(page: tuple[dict[str, str], str]) -> None:
    env, rid = page
    done = subprocess.run([FLEETCTL, "hosts", "show", HOST, "-o", "json"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["host"], doc["state"], doc["drain_state"]) == (HOST, "repairing", "drained")
    assert [(e["from_state"], e["to_state"], e["source"]) for e in doc["history"]] == [
        ("new", "burn_in", "person"), ("burn_in", "in_service", "burn_in"),
        ("in_service", "repairing", "drain")]
    assert [(e["from_state"], e["to_state"]) for e in doc["drains"]] == [
        ("active", "cordoned"), ("cordoned", "draining"), ("draining", "drained")]
    assert [(r["run_id"], r["status"], r["result"]) for r in doc["runs"]] == [
        ("20240501T110000Z-0a1b2c", "successful", "changed")]
    burn = doc["burn_in"]
    assert (burn["run_id"], burn["status"], burn["level"], burn["not_run"]) == (
        "bi-0001", "pass", 2, ["nccl"])
    rems = doc["remediations"]
    assert [(r["id"], r["state"], r["open"], r["next_step"], r["step_name"]) for r in rems] == [
        (rid, "running", True, 1, "reset_gpu")]
    agent = doc["agent"]
    assert agent["reachable"] and agent["host"] == HOST and agent["driver_version"]
    xids = {c["index"]: c["xid_counts"] for c in agent["chips"] if c["xid_total"]}
    assert list(xids) == [6] and "48" in xids[6]
