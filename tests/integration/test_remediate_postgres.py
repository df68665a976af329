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


def test_the_lease_expiry_is_on_the_database_clock_so_a_skewed_machine_cannot_take_it(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import time

    a_conn = db.connect(pg_url, schema=rstate.SCHEMA)
    b_conn = db.connect(pg_url, schema=rstate.SCHEMA)
    a = rstate.LeaseHolder("a", "sre1", "bastion1", 4242)
    b = rstate.LeaseHolder("b", "sre2", "bastion2", 777)
    rstate.acquire_lease(a_conn, a, ttl_s=20)
    lease = rstate.current_lease(a_conn)
    assert lease is not None and abs(lease.expires_at - (rstate.db_now(a_conn) + 20)) < 5
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 45)  # the taker's clock runs 45 s ahead
    with pytest.raises(rstate.LeaseHeld, match="sre1@bastion1 pid 4242"):
        rstate.acquire_lease(b_conn, b, ttl_s=20)


def test_the_lease_keeper_reconnects_after_the_database_drops_its_connection(
        pg_url: str, pg_server) -> None:  # noqa: F811
    import time

    import psycopg

    from fleetctl.remediate.lease_keeper import LeaseKeeper

    conn = db.connect(pg_url, schema=rstate.SCHEMA)
    keeper = LeaseKeeper(pg_url, rstate.LeaseHolder("a", "sre1", "elsewhere-a", 1), ttl_s=3.0)
    keeper.take(conn)
    try:
        time.sleep(1.5)  # the renewer has its own connection now
        with psycopg.connect(pg_url, autocommit=True) as admin:  # a restart, an idle timeout, a failover
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE pid <> pg_backend_pid() AND datname = current_database()")
        time.sleep(5.0)
        other = db.connect(pg_url, schema=rstate.SCHEMA)
        with pytest.raises(rstate.LeaseHeld):
            rstate.acquire_lease(other, rstate.LeaseHolder("b", "sre2", "elsewhere-b", 2), ttl_s=60)
        assert keeper.lost is None
    finally:
        keeper.release(db.connect(pg_url, schema=rstate.SCHEMA))
