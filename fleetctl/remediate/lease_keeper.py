"""Holding the remediation lease while the loop works: taken once, renewed from a thread of its own.

A step can run for long (a drain waits for jobs to leave, a reboot for the host to come back), so
the lease is renewed every ``ttl_s / 3`` seconds on a connection of its own, whatever the loop is
doing; if another loop took it meanwhile (this one was presumed dead), or it could not be renewed
for a whole TTL (the database unreachable), :attr:`LeaseKeeper.lost` says so and the loop stops
after its current step, writing nothing more to the records (the store checks the lease in each
write). The expiry is on the database's clock, so machines with skewed clocks agree on it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from fleetctl.state import db
from fleetctl.state import remediation as rstate

DEFAULT_TTL_S = 60.0


class LeaseKeeper:
    def __init__(self, db_path: Path | str, holder: rstate.LeaseHolder, *,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        self.db_path, self.holder, self.ttl_s = db_path, holder, ttl_s
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, conn: db.Connection) -> rstate.Lease | None:
        """Take the lease (:class:`rstate.LeaseHeld` when a live loop has it) and start renewing it.
        Returns the lease taken over from a loop that is gone, if any."""
        previous = rstate.acquire_lease(conn, self.holder, ttl_s=self.ttl_s)
        self._thread = threading.Thread(target=self._renew, name="remediate-lease", daemon=True)
        self._thread.start()
        return previous

    def _renew(self) -> None:
        conn: db.Connection | None = None
        renewed = time.monotonic()
        try:
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    conn = conn or db.connect(self.db_path, schema=rstate.SCHEMA)
                    rstate.renew_lease(conn, self.holder, ttl_s=self.ttl_s)
                    renewed = time.monotonic()
                except rstate.LeaseHeld as exc:
                    self.lost = str(exc)
                    return
                except Exception as exc:  # noqa: BLE001 - a busy or restarting database: the next beat
                    # A dropped connection stays dropped: open a new one at the next beat.
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                    if time.monotonic() - renewed >= self.ttl_s:
                        # Not renewed for a whole TTL: another loop may hold it now. Stop acting.
                        self.lost = f"the lease could not be renewed for {self.ttl_s:g} s: {exc}"
                        return
        finally:
            if conn is not None:
                conn.close()

    def release(self, conn: db.Connection) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.lost is None:
            rstate.release_lease(conn, self.holder)
