"""``fleetctl <command>`` builds only that command's module (fleetctl.cli.app_for): it must behave as
the whole app does — same help, same one-line usage errors — for every command and group."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fleetctl import cli

NAMES = sorted(cli._MODULE_OF)
ENV = {"COLUMNS": "100", "NO_COLOR": "1"}


def test_every_module_command_is_known_by_name() -> None:
    assert {"health", "drain", "undrain", "status", "burn-in", "remediate", "hosts", "runs", "maintain",
            "provision", "inventory"} <= set(NAMES)
    assert "completion" not in NAMES  # the root's own command: the whole app runs it


@pytest.mark.parametrize("name", NAMES)
def test_one_command_app_gives_the_same_help_as_the_whole_app(name: str) -> None:
    one = cli.app_for([name])
    assert one is not cli.app and {name} <= cli._top_names(one) <= set(NAMES)
    whole = CliRunner().invoke(cli.app, [name, "--help"], env=ENV)
    alone = CliRunner().invoke(one, [name, "--help"], env=ENV)
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output) and whole.exit_code == 0


@pytest.mark.parametrize("name", NAMES)
def test_one_command_app_gives_the_same_usage_error(name: str) -> None:
    whole = CliRunner().invoke(cli.app, [name, "--no-such-flag"], env=ENV)
    alone = CliRunner().invoke(cli.app_for([name]), [name, "--no-such-flag"], env=ENV)
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output) and whole.exit_code == 2


def test_the_whole_app_runs_what_names_no_command_and_completion() -> None:
    assert cli.app_for([]) is cli.app and cli.app_for(["--help"]) is cli.app
    assert cli.app_for(["helth"]) is cli.app  # "did you mean health?" needs every name


def test_completion_gets_the_whole_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.COMPLETE_VAR, "complete_bash")
    assert cli.app_for(["health"]) is cli.app


def test_version_needs_no_command_tree(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["fleetctl", "--version"])
    cli.main()
    assert capsys.readouterr().out == cli.version_text() + "\n"
