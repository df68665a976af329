"""Run records: start, heartbeat, finish, read back; dead runs show as interrupted."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetctl.runner import HostResult
from fleetctl.state import runs


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return runs.connect(tmp_path / "state.db")


def record(run_id: str, *, pid: int | None = None, heartbeat: str | None = None,
           machine: str | None = None) -> runs.RunRecord:
    return runs.RunRecord(
        id=run_id, user="alice", machine=machine or runs.this_machine(), pid=pid or os.getpid(),
        started_at=run_id, heartbeat_at=heartbeat or runs.now_iso(), inventory="/inv/hosts.yml",
        pattern="gpu", playbook="/repo/playbooks/site.yml", options={"tags": ["agent"]},
        artifacts="/state/runs/x/artifacts", hosts=[HostResult("n1"), HostResult("n2")],
    )


def test_a_finished_run_reads_back_with_its_host_results(conn: sqlite3.Connection) -> None:
    runs.start(conn, record("2026-01-01T00:00:00"))
    runs.heartbeat(conn, "2026-01-01T00:00:00", [HostResult("n1", ok=1), HostResult("n2")])
    runs.finish(conn, "2026-01-01T00:00:00", "failed",
                [HostResult("n1", ok=3, changed=1), HostResult("n2", failed=1, first_failure="t: x")])
    got = runs.get(conn, "2026-01-01T00:00:00")
    assert got is not None
    assert got.status == "failed" and got.ended_at is not None
    assert got.options == {"tags": ["agent"]}
    assert {h.host: h.state for h in got.hosts} == {"n1": "changed", "n2": "failed"}
    assert got.to_dict()["hosts"][1]["first_failure"] == "t: x"


def test_get_accepts_a_unique_prefix_only(conn: sqlite3.Connection) -> None:
    runs.start(conn, record("20260101T000000Z-aaaaaa"))
    runs.start(conn, record("20260101T000000Z-aabbbb"))
    found = runs.get(conn, "20260101T000000Z-aab")
    assert found is not None and found.id == "20260101T000000Z-aabbbb"
    assert runs.get(conn, "20260101T000000Z-aa") is None  # ambiguous
    assert runs.get(conn, "nope") is None
    assert runs.get(conn, "2026_") is None  # LIKE wildcards are literal


def test_list_is_newest_first_and_filters_by_status(conn: sqlite3.Connection) -> None:
    for i in range(3):
        runs.start(conn, record(f"2026-01-0{i + 1}"))
    runs.finish(conn, "2026-01-02", "successful", [])
    assert [r.id for r in runs.list_runs(conn)] == ["2026-01-03", "2026-01-02", "2026-01-01"]
    assert [r.id for r in runs.list_runs(conn, status="successful")] == ["2026-01-02"]
    assert [r.id for r in runs.list_runs(conn, limit=1)] == ["2026-01-03"]


def test_a_run_whose_process_died_shows_as_interrupted_with_results_so_far(conn: sqlite3.Connection) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    runs.start(conn, record("r-dead", pid=proc.pid))
    runs.heartbeat(conn, "r-dead", [HostResult("n1", ok=2)])
    runs.start(conn, record("r-alive"))
    got = runs.get(conn, "r-dead")
    assert got is not None and got.status == "interrupted"
    assert got.message and "without finishing" in got.message
    assert [h.ok for h in got.hosts if h.host == "n1"] == [2]
    alive = runs.get(conn, "r-alive")
    assert alive is not None and alive.status == "running"


def test_a_silent_run_on_another_machine_is_interrupted_after_the_stale_window(
    conn: sqlite3.Connection,
) -> None:
    old = (datetime.now(UTC) - runs.HEARTBEAT_STALE - timedelta(seconds=5)).isoformat()
    runs.start(conn, record("r-old", machine="bastion-2", heartbeat=old))
    runs.start(conn, record("r-recent", machine="bastion-2"))
    assert runs.reap(conn) == ["r-old"]
    statuses = {r.id: r.status for r in runs.list_runs(conn)}
    assert statuses == {"r-old": "interrupted", "r-recent": "running"}


def test_finish_refuses_a_non_final_status(conn: sqlite3.Connection) -> None:
    runs.start(conn, record("r1"))
    with pytest.raises(ValueError, match="running"):
        runs.finish(conn, "r1", "running", [])


def test_summarize_counts_host_states() -> None:
    hosts = [HostResult("a", ok=1), HostResult("b", failed=1), HostResult("c", ok=1)]
    assert runs.summarize(hosts) == {"ok": 2, "failed": 1}


@pytest.mark.parametrize("args", [["runs", "list"], ["runs", "show", "abc"]])
def test_a_corrupt_run_database_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    from typer.testing import CliRunner

    from fleetctl.cli import app

    bad = tmp_path / "state.db"
    bad.write_bytes(b"this is not an SQLite database, at all" * 10)
    result = CliRunner().invoke(app, [*args, "--db", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip() == f"fleetctl runs: state database {bad}: file is not a database"


def test_runs_from_a_newer_fleetctl_are_listed_read_only_never_rewritten(tmp_path: Path) -> None:
    """A newer schema version: ``runs list``/``show`` read it; a dead run shows as interrupted but is
    not written down, and a status this fleetctl does not know is shown as it is."""
    import json

    from typer.testing import CliRunner

    from fleetctl.cli import app
    from fleetctl.state import db

    path = tmp_path / "state.db"
    conn = runs.connect(path)
    runs.start(conn, record("2026-01-01", pid=2**22 + 12345))  # a pid that cannot exist: dead
    runs.start(conn, record("2026-01-02"))
    conn.execute("UPDATE provision_runs SET status = 'paused' WHERE id = '2026-01-02'")
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()

    listed = CliRunner().invoke(app, ["runs", "list", "--json", "--db", str(path)])
    assert listed.exit_code == 0, listed.output
    assert {r["id"]: r["status"] for r in json.loads(listed.output)} == {
        "2026-01-01": "interrupted", "2026-01-02": "paused"}
    table = CliRunner().invoke(app, ["runs", "list", "--db", str(path)])
    assert table.exit_code == 0 and "paused" in table.output, table.output
    shown = CliRunner().invoke(app, ["runs", "show", "2026-01-02", "--db", str(path)])
    assert shown.exit_code == 0 and "paused" in shown.output, shown.output
    raw = sqlite3.connect(path)
    assert dict(raw.execute("SELECT id, status FROM provision_runs").fetchall()) == {
        "2026-01-01": "running", "2026-01-02": "paused"}
