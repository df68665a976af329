"""Run records at their edges: every field read back as written, the stored JSON's key order, run ids,
a heartbeat exactly at the stale limit, prefixes holding LIKE's wildcards, and the list's default size.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetctl.runner import HostResult
from fleetctl.state import runs


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return runs.connect(tmp_path / "state.db")


def record(run_id: str, *, heartbeat: str | None = None, started: str = "2026-03-01T10:00:00+00:00",
           hosts: list[HostResult] | None = None) -> runs.RunRecord:
    return runs.RunRecord(
        id=run_id, user="alice", machine=runs.this_machine(), pid=os.getpid(), started_at=started,
        heartbeat_at=heartbeat or runs.now_iso(), inventory="/inv/hosts.yml", pattern="gpu",
        playbook="/repo/playbooks/site.yml", options={"tags": ["agent"], "check": True},
        artifacts="/state/runs/x", hosts=hosts if hosts is not None else [HostResult("n1", ok=2)],
    )


def test_a_run_reads_back_field_for_field_and_its_dict_names_every_field(conn: sqlite3.Connection) -> None:
    rec = record("r-1", hosts=[HostResult("n2", failed=1, first_failure="t: x"), HostResult("n1", ok=2)])
    runs.start(conn, rec)
    got = runs.get(conn, "r-1")
    assert got is not None
    assert got.to_dict() == {
        "id": "r-1", "user": "alice", "machine": runs.this_machine(), "pid": os.getpid(),
        "started_at": "2026-03-01T10:00:00+00:00", "ended_at": None, "inventory": "/inv/hosts.yml",
        "pattern": "gpu", "playbook": "/repo/playbooks/site.yml",
        "options": {"tags": ["agent"], "check": True}, "status": "running", "artifacts": "/state/runs/x",
        "message": None,
        "hosts": [HostResult("n1", ok=2).to_dict(),  # ordered by host name
                  HostResult("n2", failed=1, first_failure="t: x").to_dict()],
    }
    assert got.heartbeat_at == rec.heartbeat_at


def test_options_and_host_results_are_stored_with_sorted_keys(conn: sqlite3.Connection) -> None:
    # Stable text: the same run always stores the same bytes (diffable, comparable across versions).
    rec = record("r-1", hosts=[HostResult("n1", ok=1)])
    rec.options = {"zeta": 1, "alpha": 2}
    runs.start(conn, rec)
    (options,) = conn.execute("SELECT options FROM provision_runs").fetchone()
    assert options == '{"alpha": 2, "zeta": 1}'
    runs.heartbeat(conn, "r-1", [HostResult("n1", ok=1)])
    (result,) = conn.execute("SELECT result FROM provision_run_hosts").fetchone()
    keys = re.findall(r'"(\w+)":', result)
    assert keys == sorted(keys) and "ok" in keys


def test_a_heartbeat_moves_the_time_of_a_running_run_only(conn: sqlite3.Connection) -> None:
    old = (datetime.now(UTC) - timedelta(seconds=60)).isoformat(timespec="seconds")
    runs.start(conn, record("r-1", heartbeat=old))
    runs.heartbeat(conn, "r-1", [])
    got = runs.get(conn, "r-1")
    assert got is not None and got.heartbeat_at > old and got.status == "running"


def test_a_run_id_is_the_utc_start_time_and_six_hex_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # a local time that is not UTC
    time.tzset()
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        run_id = runs.new_run_id()
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_id), run_id
    stamp = datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= after
    assert len({runs.new_run_id() for _ in range(20)}) == 20


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    # SIGHUP back to its default: under nohup it is ignored, and would hide a stray signal.
    proc = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    yield proc
    proc.kill()
    proc.wait()


def test_asking_whether_a_pid_lives_sends_it_no_signal(child: subprocess.Popen[bytes]) -> None:
    assert runs.pid_alive(child.pid)
    time.sleep(0.1)
    assert child.poll() is None  # signal 0 only asks; a real signal would have ended `sleep`


def test_another_users_process_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refused)
    assert runs.pid_alive(12345)


def test_a_heartbeat_exactly_at_the_stale_limit_is_still_alive() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    at_limit = record("r-1", heartbeat=(now - runs.HEARTBEAT_STALE).isoformat())
    assert not runs.is_dead(at_limit, now=now)
    past = record("r-2", heartbeat=(now - runs.HEARTBEAT_STALE - timedelta(seconds=1)).isoformat())
    assert runs.is_dead(past, now=now)


def test_a_dead_run_shown_without_writing_ends_at_its_last_heartbeat() -> None:
    stale = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    shown = runs._shown(record("r-1", heartbeat=stale))
    assert (shown.status, shown.ended_at) == ("interrupted", stale)
    ended = record("r-2", heartbeat=stale)
    ended.ended_at = "2026-03-01T10:05:00+00:00"
    assert runs._shown(ended).ended_at == "2026-03-01T10:05:00+00:00"


def test_an_exact_id_wins_over_a_longer_id_it_prefixes(conn: sqlite3.Connection) -> None:
    runs.start(conn, record("run-1"))
    runs.start(conn, record("run-10"))
    got = runs.get(conn, "run-1")
    assert got is not None and got.id == "run-1"
    got = runs.get(conn, "run-10")
    assert got is not None and got.id == "run-10"


@pytest.mark.parametrize(("prefix", "found"), [
    ("a_b", "a_b-1"),  # not "axb-1": `_` is literal
    ("a%", "a%b-1"),  # not every "a...": `%` is literal
    ("a\\b", "a\\b-1"),  # not "ab-1": a backslash is literal, not LIKE's escape
])
def test_a_prefix_matches_wildcard_characters_literally(conn: sqlite3.Connection, prefix: str,
                                                        found: str) -> None:
    for run_id in ("a_b-1", "axb-1", "a%b-1", "a\\b-1", "ab-1"):
        runs.start(conn, record(run_id))
    got = runs.get(conn, prefix)
    assert got is not None and got.id == found


def test_the_list_shows_the_newest_twenty_with_their_hosts(conn: sqlite3.Connection) -> None:
    for i in range(22):
        runs.start(conn, record(f"r-{i:02d}", started=f"2026-03-01T10:{i:02d}:00+00:00"))
    listed = runs.list_runs(conn)
    assert [r.id for r in listed] == [f"r-{i:02d}" for i in range(21, 1, -1)]
    assert all([h.host for h in r.hosts] == ["n1"] for r in listed)
