"""The errors that end a ``fleetctl`` command: one tree, each class carrying its exit code.

Exit codes: 0 all good, 1 the fleet has problems or the request was refused, 2 usage or
configuration error (a full disk under the output too), 130 a run canceled by Ctrl-C/SIGTERM
(provision records it as a result), 141 the output's reader gone (a closed pipe, as for SIGPIPE).

    FleetctlError (1)                 a failure the operator can act on
    ├── UsageError (2)                bad arguments or configuration
    │   ├── StateDatabaseError (2)    the state database cannot be opened, read or written
    │   └── SourceUnavailable (2)     the health source (Prometheus) could not be asked
    └── StateConflict (1)             a host's recorded state changed under us (another fleetctl)

Core modules raise these, or subclasses of them next to the code that raises them (inventory,
scheduler, provision, drain-state errors). Exactly one place, ``fleetctl.commands.run_command``,
turns one into ``fleetctl <command>: <message>`` on stderr and the exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_CANCELED = 130  # the shell's convention for a run ended by SIGINT


def first_line(exc: BaseException) -> str:
    """An exception as one line (sqlite and others can say more over several): its first, or its type."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class FleetctlError(Exception):
    """A failure the operator can act on; :meth:`one_line` is what the command prints."""

    exit_code: int = EXIT_PROBLEMS

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        """The message after ``fleetctl <command>: ``."""
        return str(self)


class UsageError(FleetctlError):
    """Bad arguments or configuration (exit 2)."""

    exit_code = EXIT_USAGE


class StateDatabaseError(UsageError):
    """The state database cannot be opened, read or written (exit 2)."""


class SourceUnavailable(UsageError):
    """The fleet's health source (Prometheus) could not be asked, or its answer not read (exit 2). A
    loop (``--watch``) that has had one good round skips a round that fails so and tries again."""


class StateConflict(FleetctlError):
    """A host's state changed under us, e.g. another fleetctl moved it (exit 1: refused)."""

    def one_line(self) -> str:
        return f"state conflict: {self}"


@contextlib.contextmanager
def state_database(path: Path | None = None) -> Iterator[None]:
    """The boundary of the state database: an ``sqlite3.Error`` (or, naming ``path``, an ``OSError``
    while opening it) inside becomes a :class:`StateDatabaseError` of one line."""
    import sqlite3  # not on the path of ``fleetctl --help``

    errors: tuple[type[Exception], ...] = (sqlite3.Error,) if path is None else (sqlite3.Error, OSError)
    try:
        yield
    except errors as exc:
        where = "state database" if path is None else f"state database {path}"
        raise StateDatabaseError(f"{where}: {first_line(exc)}") from None
