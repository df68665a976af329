"""Lifecycle hooks that must move nothing: a dry run, a partial run, a drain during burn-in.

Found by review: a ``--check`` provision put new hosts in service and made failing ones suspect, a
``--tags`` run counted as provisioning, and drain + undrain took a burning-in host to in_service.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_lifecycle import Host, IdleScheduler
from test_provision import env, failed, ok, play, run  # noqa: F401  (env: the fixture)

from fleetctl import drain as drain_core
from fleetctl.runner import FakeRunner
from fleetctl.state import db, lifecycle
from fleetctl.state.lifecycle import LifeState as L


@pytest.fixture()
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db")


def test_drain_then_undrain_of_a_burn_in_host_leaves_it_burning_in(conn: sqlite3.Connection) -> None:
    sched, h1 = IdleScheduler(), Host("h1")
    lifecycle.set_state(conn, "h1", L.BURN_IN, actor="alice", reason="racked")
    drain_core.drain(conn, [h1], [h1], lambda h: sched,  # type: ignore[arg-type,return-value]
                     drain_core.DrainOptions(reason="burn-in job", actor="bob", poll_s=0.01))
    assert lifecycle.get(conn, "h1").state is L.BURN_IN
    drain_core.undrain(conn, [h1], lambda h: sched, lambda hosts: {"h1": None},  # type: ignore[arg-type,return-value]
                       actor="bob")
    assert lifecycle.get(conn, "h1").state is L.BURN_IN
    assert [e.to_state for e in lifecycle.history(conn, "h1")] == ["burn_in"]


def test_a_check_run_moves_no_host(env: Path) -> None:  # noqa: F811
    c = db.connect(env / "state.db")
    lifecycle.set_state(c, "n2", L.IN_SERVICE, actor="a", reason="x")
    run(env, FakeRunner(play(ok("n1"), failed("n2", "check mode: unsupported"), ok("n3"))), check=True)
    got = lifecycle.get_many(c, ["n1", "n2", "n3"])
    assert (got["n1"].state, got["n2"].state, got["n3"].state) == (L.NEW, L.IN_SERVICE, L.NEW)
    assert got["n1"].implied  # not even an implied in_service from the recorded check run


def test_a_tagged_run_does_not_put_new_hosts_in_service_but_a_failure_still_counts(env: Path) -> None:  # noqa: F811
    c = db.connect(env / "state.db")
    lifecycle.set_state(c, "n2", L.IN_SERVICE, actor="a", reason="x")
    run(env, FakeRunner(play(ok("n1"), failed("n2", "agent install failed"), ok("n3")), tags={"agent"}),
        tags=["agent"])
    got = lifecycle.get_many(c, ["n1", "n2"])
    assert got["n1"].state is L.NEW and got["n1"].implied
    assert got["n2"].state is L.SUSPECT


def test_a_whole_successful_run_puts_a_new_host_in_service(env: Path) -> None:  # noqa: F811
    run(env, FakeRunner(play(ok("n1"), ok("n2"), ok("n3"))))
    c = db.connect(env / "state.db")
    assert lifecycle.get(c, "n1").state is L.IN_SERVICE
