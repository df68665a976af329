"""Errors that end a ``fleetctl`` command with a one-line message and a documented exit code.

Exit codes: 0 all good, 1 the fleet has problems, 2 usage or configuration error. Core modules raise
these; command modules catch :class:`FleetctlError`, print ``str(exc)`` to stderr and exit with
``exc.exit_code``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def first_line(exc: BaseException) -> str:
    """An exception as one line (sqlite and others can say more over several): its first, or its type."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class FleetctlError(Exception):
    """A failure the operator can act on; ``str()`` is one line, no traceback is shown."""

    exit_code: int = EXIT_PROBLEMS

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(FleetctlError):
    """Bad arguments or configuration (exit 2)."""

    exit_code = EXIT_USAGE
