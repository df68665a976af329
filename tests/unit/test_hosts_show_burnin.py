"""``fleetctl hosts show``: the host's last burn-in and its remediations, in the page and in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetctl.cli import app
from fleetctl.state import burnin, db
from fleetctl.state import remediation as rstate

UNUSED_PORT = 36411  # this helper's range; nothing listens: quickly refused
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  vars:\n    fleet_scheduler: none\n    ansible_connection: local\n"
                   f"    ansible_host: 127.0.0.1\n    fleet_agent_port: {UNUSED_PORT}\n"
                   "  hosts:\n    h1:\n    h2:\n")
    monkeypatch.setenv("FLEETCTL_INVENTORY", str(inv))
    monkeypatch.setenv("FLEETCTL_DB", str(tmp_path / "state.db"))
    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("USER", "sre")
    return tmp_path


def show(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, ["hosts", "show", *args, "--timeout", "0.5"])
    return done.exit_code, done.stdout


def _burn(run_id: str, status: str, at: float, reason: str,
          not_run: tuple[str, ...] = ()) -> burnin.BurnInRecord:
    return burnin.BurnInRecord(run_id=run_id, host="h1", started_at=at - 60, ended_at=at, actor="sre",
                               level=2, status=status, reason=reason, not_run=not_run)


def test_a_host_never_burned_in_nor_remediated_says_so(env: Path) -> None:
    code, out = show("h2", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["burn_in"] is None and doc["remediations"] == []
    code, out = show("h2")
    assert code == 0
    assert any(line.split() == ["last", "burn-in", "never"] for line in out.splitlines())
    assert "remediation " not in out


def test_the_last_burn_in_and_the_open_and_latest_remediations(env: Path) -> None:
    conn = db.connect(env / "state.db")
    burnin.record(conn, [_burn("bi-old", "fail", T0, "diag 2: memory on GPU 3"),
                         _burn("bi-new", "incomplete", T0 + 3600, "dcgm missing", ("dcgm",))])
    burnin.record(conn, [burnin.BurnInRecord("bi-other", "h2", T0, T0, "sre", 1, "pass", "ok")])
    store = rstate.SqlStore(conn)
    old = store.start("h1", "reset_gpu", "repair", ["drain", "reset", "burn_in", "undrain"], [3],
                      reason="XID 79", actor="loop", at=T0)
    store.step_started(old, 0)
    store.step_ended(old, 0, ok=True)  # open, interrupted at its second step
    store.finish(store.get(old.id), rstate.INTERRUPTED, "stopped")
    done = store.start("h1", "reboot", "repair", ["drain", "reboot"], [], reason="XID 48", actor="loop",
                       at=T0 + 10)
    for i in range(2):
        store.step_started(store.get(done.id), i)
        store.step_ended(store.get(done.id), i, ok=True)
    store.finish(store.get(done.id), rstate.DONE, "back in service")
    conn.close()

    code, out = show("h1", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["burn_in"]["run_id"], doc["burn_in"]["status"], doc["burn_in"]["not_run"]) == (
        "bi-new", "incomplete", ["dcgm"])
    rems = doc["remediations"]
    assert [(r["id"], r["state"], r["open"], r["step_name"]) for r in rems] == [
        (done.id, "done", False, None), (old.id, "interrupted", True, "reset")]

    code, out = show("h1")
    assert code == 0
    lines = out.splitlines()
    burn = next(line for line in lines if line.startswith("last burn-in"))
    assert burn.split(None, 2)[2] == ("incomplete level 2 2023-11-14T23:13:20Z (bi-new): dcgm missing; "
                                      "not run: dcgm")
    shown = [line.split(None, 1)[1] for line in lines if line.startswith("remediation ")]
    assert shown == [f"{done.id}: done after step 2/2 (reboot): back in service",
                     f"{old.id}: interrupted at step 2/4 reset (reset_gpu): stopped"]
