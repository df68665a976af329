"""The state unit tests that exercise the database, run again against a real PostgreSQL.

Each test is the unit test itself (imported, unchanged), with ``conn`` a connection to a fresh
PostgreSQL database instead of a fresh SQLite file: the same scenarios on both backends.
test_drain_machine_edges has a fixture of the same name as test_drain's: its tests run from
test_state_postgres_suite_drain.py.
"""

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


adopt_unit_tests(globals(), ("test_locks", "test_state_locks_edges", "test_drain", "test_drain_budget_edges",
                             "test_runs", "test_runs_record_edges", "test_lifecycle",
                             "test_lifecycle_hooks_edges", "test_host_state"))
