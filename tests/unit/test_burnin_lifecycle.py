"""The burn-in lifecycle hooks (fleetctl.state.lifecycle.on_burn_in_*): which states each moves from,
to where, with what audit, and which it leaves alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.state import db, lifecycle
from fleetctl.state.db import Connection
from fleetctl.state.lifecycle import LifeState as L


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    c = db.connect(tmp_path / "state.db")
    yield c
    c.close()


def at(conn: Connection, host: str, state: L) -> None:
    if state is not L.NEW:
        lifecycle.set_state(conn, host, state, actor="ann", reason="setup", force=True)


@pytest.mark.parametrize(("start", "moved"), [
    (L.NEW, True), (L.REPAIRING, True), (L.SUSPECT, True), (L.RMA, True),
    (L.IN_SERVICE, False), (L.QUARANTINED, False), (L.RETIRED, False), (L.BURN_IN, False)])
def test_start_moves_new_repaired_and_returned_hosts(conn: Connection, start: L, moved: bool) -> None:
    at(conn, "h", start)
    assert lifecycle.on_burn_in_start(conn, "h", actor="ann@b", run_id="bi-1", level=3) is moved
    assert lifecycle.get(conn, "h").state is (L.BURN_IN if moved else start)
    if moved:
        last = lifecycle.history(conn, "h")[-1]
        assert (last.from_state, last.to_state, last.source, last.reason) == (
            start.value, "burn_in", "burn_in", "burn-in bi-1: level 3 started")


@pytest.mark.parametrize(("start", "status", "end"), [
    (L.BURN_IN, "pass", L.IN_SERVICE), (L.BURN_IN, "fail", L.SUSPECT), (L.BURN_IN, "incomplete", L.BURN_IN),
    (L.IN_SERVICE, "fail", L.SUSPECT), (L.IN_SERVICE, "pass", L.IN_SERVICE),
    (L.QUARANTINED, "pass", L.QUARANTINED), (L.QUARANTINED, "fail", L.QUARANTINED)])
def test_result_moves(conn: Connection, start: L, status: str, end: L) -> None:
    at(conn, "h", start)
    before = len(lifecycle.history(conn, "h"))
    moved = lifecycle.on_burn_in_result(conn, "h", status=status, actor="ann@b", run_id="bi-2",
                                        why="dcgm: pcie GPU 3: fail")
    assert lifecycle.get(conn, "h").state is end
    assert moved is (end is not start)
    assert len(lifecycle.history(conn, "h")) == before + int(moved)
    if status == "fail" and moved:
        assert lifecycle.get(conn, "h").reason == "burn-in bi-2: failed: dcgm: pcie GPU 3: fail"
