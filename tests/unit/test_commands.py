"""Every command ends the same way: a FleetctlError becomes one line and its class's exit code."""

from __future__ import annotations

import pytest
import typer

from fleetctl.commands import run_command
from fleetctl.errors import EXIT_PROBLEMS, EXIT_USAGE, FleetctlError, StateDatabaseError, UsageError
from fleetctl.schedulers.base import ForeignDrainError, SchedulerConfigError, SchedulerError
from fleetctl.state.hosts import BudgetExceeded, TransitionError


@pytest.mark.parametrize(("error", "code", "line"), [
    (UsageError("--x 'y': bad"), EXIT_USAGE, "--x 'y': bad"),
    (StateDatabaseError("state database: disk I/O error"), EXIT_USAGE, "state database: disk I/O error"),
    (SchedulerConfigError("h1: fleet_scheduler='x' is not known"), EXIT_USAGE,
     "h1: fleet_scheduler='x' is not known"),
    (SchedulerError("Kubernetes API unreachable"), EXIT_PROBLEMS, "Kubernetes API unreachable"),
    (ForeignDrainError("h1: drained by someone else"), EXIT_PROBLEMS, "h1: drained by someone else"),
    (TransitionError("h1: cannot go from active to drained"), EXIT_PROBLEMS,
     "state conflict: h1: cannot go from active to drained"),
    (BudgetExceeded(limit=1, pool=3, unavailable=["h2"], requested=["h1"]), EXIT_PROBLEMS,
     "refused: max-unavailable is 1 of 3 hosts; 1 already unavailable (h2) + 1 requested = 2"),
    (FleetctlError("fleet busy", exit_code=EXIT_USAGE), EXIT_USAGE, "fleet busy"),
])
def test_an_error_is_one_line_and_its_exit_code(error: FleetctlError, code: int, line: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise error

    with pytest.raises(typer.Exit) as exited:
        run_command("drain", body)()
    assert exited.value.exit_code == code
    assert capsys.readouterr().err == f"fleetctl drain: {line}\n"


def test_a_command_returns_its_exit_code() -> None:
    assert run_command("health", lambda: 0)() is None
    assert run_command("health", lambda: None)() is None
    with pytest.raises(typer.Exit) as exited:
        run_command("health", lambda: 1)()
    assert exited.value.exit_code == 1
