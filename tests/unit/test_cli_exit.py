"""fleetctl's exit without heap teardown (cli._exit_now): the same status, output and exit
handlers as a normal interpreter exit, in a real child process."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import atexit, sys
import fleetctl.cli as cli
atexit.register(lambda: print("handler ran", flush=True))
sys.stdout.write("buffered, not flushed;")  # flushed by _exit_now, or lost
cli._exit_now({code})
"""


@pytest.mark.parametrize(("code", "status", "stderr"), [
    ("None", 0, ""), ("0", 0, ""), ("1", 1, ""), ("2", 2, ""), ("130", 130, ""),
    ("'fleetctl: broken'", 1, "fleetctl: broken\n"),
])
def test_exit_now_keeps_status_output_and_exit_handlers(code: str, status: int, stderr: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD.format(code=code)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == status
    assert proc.stdout == "buffered, not flushed;handler ran\n"
    assert proc.stderr == stderr


def test_health_and_inventory_use_it_and_other_commands_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetctl.cli as cli

    exits: list[object] = []

    def fake_exit(code: object) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(cli, "_exit_now", fake_exit)
    monkeypatch.setattr(cli, "app", lambda: sys.exit(3))
    for argv, expected in ((["health", "--json"], [3]), (["inventory"], [3]), (["provision"], []),
                           ([], [])):
        exits.clear()
        monkeypatch.setattr(sys, "argv", ["fleetctl", *argv])
        with pytest.raises(SystemExit):
            cli.main()
        assert exits == expected, argv
