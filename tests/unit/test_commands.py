"""Every command ends the same way: a FleetctlError becomes one line and its class's exit code."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import typer
from agent_peers import node_json, threaded_agent

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


# --- outside text in a command's lines: shown escaped, never raw, never read as markup ----------------


def test_an_error_line_shows_outside_text_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise ForeignDrainError("h1\x1b[2J: drained by someone else ([maint]\x9b\x1b]8;;http://x\x07); left")

    with pytest.raises(typer.Exit):
        run_command("drain", body)()
    err = capsys.readouterr().err
    assert err == ("fleetctl drain: h1\\x1b[2J: drained by someone else "
                   "([maint]\\x9b\\x1b]8;;http://x\\x07); left\n")


def test_an_error_of_several_lines_stays_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise SchedulerError("h1: scontrol said:\nline two\r\x1b[1Aover")

    with pytest.raises(typer.Exit):
        run_command("status", body)()
    assert capsys.readouterr().err == "fleetctl status: h1: scontrol said:\\nline two\\r\\x1b[1Aover\n"


def test_progress_lines_of_the_core_are_made_safe(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetctl.commands.drain import echo_err

    echo_err("h1: drain_failed (scheduler says \x1b[2J[/]\x07)")
    assert capsys.readouterr().err == "h1: drain_failed (scheduler says \\x1b[2J[/]\\x07)\n"


def _inventory(tmp_path: Path, drained_file: Path, port: int = 29417) -> Path:
    inv = tmp_path / "hosts.yml"
    # the agent's port: by default one nothing listens on (in this test file's range): quickly refused
    inv.write_text("all:\n  hosts:\n    h1:\n      fleet_scheduler: none\n      ansible_connection: local\n"
                   f"      ansible_host: 127.0.0.1\n      fleet_agent_port: {port}\n"
                   f"      fleet_agent_drained_file: {drained_file}\n")
    return inv


def _drained_agent() -> contextlib.AbstractContextManager[int]:
    """A real HTTP server answering ``/v1/node`` as an agent whose host is drained; yields its port."""
    body = json.loads(node_json("h1"))
    body["drained"] = True
    return threaded_agent(json.dumps(body).encode())


def test_drain_reason_in_brackets_is_shown_whole_by_status(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fleetctl.cli import app

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("USER", "sre")
    inv = _inventory(tmp_path, tmp_path / "drained")
    common = ["-i", str(inv), "--db", str(tmp_path / "state.db")]
    drained = CliRunner().invoke(app, ["drain", "h1", "-r", "[maint] swap PSU", "--no-wait", *common])
    assert drained.exit_code == 0, drained.output
    status = CliRunner().invoke(app, ["status", "h1", "--history", "5", *common])
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    assert lines[1].startswith("h1 ") and ": [maint] swap PSU" in lines[1]
    audit = lines[2:]  # cordoned, then draining: each with the reason whole
    assert len(audit) == 2 and all(line.endswith("by sre: fleetctl:sre: [maint] swap PSU") for line in audit)


def test_status_shows_a_hostile_drained_file_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fleetctl.cli import app

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    drained_file = tmp_path / "drained"
    drained_file.write_text("[/]oops \x1b]8;;http://evil\x07click\x1b]8;;\x07 \x9b2J [bold]done")
    with _drained_agent() as port:
        inv = _inventory(tmp_path, drained_file, port)
        result = CliRunner().invoke(app, ["status", "h1", "-i", str(inv), "--db", str(tmp_path / "state.db")])
        assert result.exit_code == 0, result.output
        assert "[/]oops \\x1b]8;;http://evil\\x07click\\x1b]8;;\\x07 \\x9b2J [bold]done" in result.stdout
        assert not set(result.stdout) & {"\x1b", "\x07", "\x9b"}
        as_json = CliRunner().invoke(app, ["status", "h1", "--json", "-i", str(inv), "--db",
                                           str(tmp_path / "state.db")])
    assert json.loads(as_json.stdout)["hosts"][0]["scheduler_reason"] == drained_file.read_text()
