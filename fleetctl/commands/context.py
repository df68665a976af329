"""What drain, undrain, status and maintain each load: the inventory, the state database and the
scheduler adapters, with the database's errors turned into fleetctl's at the boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetctl.inventory import Host, Inventory
    from fleetctl.schedulers import SchedulerFactory
    from fleetctl.state.db import Connection


@dataclass
class DrainContext:
    inventory: Inventory
    db_path: Path
    conn: Connection
    schedulers: SchedulerFactory

    def select(self, pattern: str) -> list[Host]:
        return self.inventory.select(pattern)

    def pool(self, scope: str | None) -> list[Host]:
        """The hosts max-unavailable is counted over: the fleet, or one inventory group."""
        from fleetctl.errors import UsageError

        if scope is None:
            return list(self.inventory.hosts.values())
        if scope not in self.inventory.groups:
            raise UsageError(f"--scope {scope!r}: no such group in {self.inventory.label}")
        return self.inventory.select(scope)


@contextlib.contextmanager
def drain_context(inventory: str | None, db_path: Path | None, *,
                  write: bool = True) -> Iterator[DrainContext]:
    """Open what the command needs. A database that cannot be opened (naming it, a PostgreSQL URL with
    its password masked) or read and written later (the first line of the driver's message) is a
    :class:`~fleetctl.errors.StateDatabaseError`; so is one a newer fleetctl wrote when the command
    would ``write``: refused before any work."""
    from fleetctl.errors import state_database
    from fleetctl.inventory import load_inventory
    from fleetctl.schedulers import SchedulerFactory
    from fleetctl.state import db
    from fleetctl.state import hosts as hstate

    inv = load_inventory(inventory)
    path = db_path or db.default_path()
    with state_database(path):
        conn = db.connect(path, schema=hstate.SCHEMA)
    try:
        if write:
            db.require_writable(conn)
        with state_database():
            yield DrainContext(inv, path, conn, SchedulerFactory(inv.hosts.get))
    finally:
        conn.close()
