"""test_drain_machine_edges's database tests against a real PostgreSQL (test_state_postgres_suite.py
has the others; this module's ``sched`` fixture is not test_drain's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres_server import adopt_unit_tests, pg_server, pg_url  # noqa: F401 - fixtures

from fleetctl.state import db, pg

pytestmark = pytest.mark.integration


@pytest.fixture()
def conn(pg_url: str) -> Iterator[db.Connection]:  # noqa: F811
    c = db.connect(pg_url)
    assert isinstance(c, pg.PgConnection)  # the wiring: these runs are PostgreSQL's, not SQLite's again
    yield c
    c.close()


adopt_unit_tests(globals(), ("test_drain_machine_edges",))
