"""The remediation store and lease on a real PostgreSQL (the shared state backend): the same SQL as on
SQLite, the engine's rounds, resume after a kill, and the lease refused across connections."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from postgres_server import pg_server, pg_url  # noqa: F401 - fixtures

from fleetctl.state import db
from fleetctl.state import remediation as rstate
from fleetctl.state.runs import this_machine

pytestmark = pytest.mark.integration
# The engine's fakes are the unit tests' (tests/unit/test_remediate_loop.py): the same rounds, here
# over PostgreSQL.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))


def test_rounds_resume_and_audit_on_postgresql(pg_url: str) -> None:  # noqa: F811
    from test_remediate_loop import FakeSteps, Killed, engine, fleet

    conn = db.connect(pg_url, schema=rstate.SCHEMA)
    store = rstate.SqlStore(conn)
    steps = FakeSteps(kill_at="reset_gpu")
    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            engine(store, steps).round(fleet(["h2"]), 1000.0 + t, apply=True)
    [rec] = store.open()
    assert rec.steps[rec.next_step] == "reset_gpu" and rec.step_open
    other = rstate.SqlStore(db.connect(pg_url, schema=rstate.SCHEMA))  # the next process
    result = engine(other, steps).round(fleet(["h2"]), 1090.0, apply=True)
    assert [f.state for f in result.finished] == ["done"] and result.finished[0].resumed
    assert [s for s, _ in steps.calls] == ["drain", "reset_gpu", "burn_in", "undrain"]
    phases = [(s.step, s.phase) for s in other.steps(rec.id)]
    assert phases.count(("reset_gpu", "started")) == 2 and phases.count(("drain", "started")) == 1
    assert [o.at for o in other.observations(0.0)["h2"]] == [1000.0, 1030.0, 1060.0, 1090.0]
    assert [(s.host, s.ended_at) for s in other.history(0.0)] == [("h2", 1090.0)]


def test_the_lease_is_refused_across_connections_on_postgresql(pg_url: str) -> None:  # noqa: F811
    a_conn = db.connect(pg_url, schema=rstate.SCHEMA)
    b_conn = db.connect(pg_url, schema=rstate.SCHEMA)
    a = rstate.LeaseHolder("a", "sre1", this_machine(), os.getpid())
    b = rstate.LeaseHolder("b", "sre2", "elsewhere", 7)
    rstate.acquire_lease(a_conn, a, ttl_s=60)
    with pytest.raises(rstate.LeaseHeld, match=f"sre1@{this_machine()} pid {os.getpid()} since "):
        rstate.acquire_lease(b_conn, b, ttl_s=60)
    rstate.release_lease(a_conn, a)
    assert rstate.acquire_lease(b_conn, b, ttl_s=60) is None
    lease = rstate.current_lease(a_conn)
    assert lease is not None and lease.holder == b
