"""An output that cannot be written: the reader gone (a closed pipe), a full disk, no stdout at all.
Each ends in one line (or none) and an exit code that says so, never a traceback or exit 1, which
scripts read as "the fleet has problems"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MAIN = "from fleetctl.cli import main; main()"


def _inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    gone: {ansible_host: 127.0.0.1, fleet_agent_port: 9}\n")
    return inv


def _argv(tmp_path: Path, *output: str) -> list[str]:
    return [sys.executable, "-c", MAIN, "health", "-i", str(_inventory(tmp_path)), "--timeout", "2", *output]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path / "cache")}


@pytest.mark.parametrize("output", [["--json"], ["-o", "yaml"], []])
def test_a_reader_that_left_ends_the_command_as_sigpipe_would(tmp_path: Path, output: list[str]) -> None:
    # `fleetctl health ... | head -0`: the pipe is closed before anything is written.
    proc = subprocess.Popen(_argv(tmp_path, *output), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(tmp_path))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("output", [["--json"], ["-o", "yaml"], []])
def test_a_full_disk_is_one_line_and_exit_2(tmp_path: Path, output: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        run = subprocess.run(_argv(tmp_path, *output), stdout=full, stderr=subprocess.PIPE, text=True,
                             env=_env(tmp_path), timeout=120, check=False)
    assert run.returncode == 2
    said = run.stderr.strip().splitlines()
    assert said == ["fleetctl health: No space left on device"]


@pytest.mark.parametrize("output", [["--json"], ["-o", "yaml"], ["-o", "name"], []])
def test_no_stdout_at_all_is_the_commands_own_exit_in_every_view(tmp_path: Path, output: list[str]) -> None:
    # `fleetctl health >&-`: Python's sys.stdout is None. The one unreachable host: exit 1, as with a stdout.
    run = subprocess.run(_argv(tmp_path, *output), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=_env(tmp_path), timeout=120, check=False,
                         preexec_fn=lambda: os.close(1))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr


def test_a_full_disk_under_a_file_names_the_file_and_keeps_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    # A state or extra-vars file that cannot be written is not the output: said with its path; what
    # the command printed so far still reaches stdout.
    import errno

    import typer

    from fleetctl.commands import run_command

    def provision() -> int:
        print("host1 ok")
        raise OSError(errno.ENOSPC, "No space left on device", "/var/lib/fleetctl/runs/x.json")

    with pytest.raises(typer.Exit) as ended:
        run_command("provision", provision)()
    assert ended.value.exit_code == 2
    out, err = capsys.readouterr()
    assert out == "host1 ok\n"
    assert err == "fleetctl provision: No space left on device: /var/lib/fleetctl/runs/x.json\n"


def test_other_os_errors_are_not_taken_for_the_outputs() -> None:
    import typer  # noqa: F401

    from fleetctl.commands import run_command

    def refused() -> int:
        raise ConnectionRefusedError("not an output error")

    with pytest.raises(ConnectionRefusedError):
        run_command("health", refused)()
