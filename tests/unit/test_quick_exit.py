"""fleetctl.quick_exit: a process that held what it built ends with its code, its output flushed and its
atexit handlers run; without arm() or a held object, end() returns and the usual exit follows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# stdout buffered as a console script's usually is (a pipe, no PYTHONUNBUFFERED): the flush is tested
_BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _run(body: str) -> subprocess.CompletedProcess[str]:
    prog = textwrap.dedent("""
        import atexit, sys
        from fleetctl import quick_exit
        atexit.register(lambda: print("atexit ran", file=sys.stderr))
        class Loud:
            def __del__(self):
                print("freed", file=sys.stderr)
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60,
                          env=_BUFFERED)


def test_a_held_process_ends_with_its_code_output_flushed_and_atexit_run() -> None:
    out = _run("""
        quick_exit.arm()
        quick_exit.hold(Loud())
        sys.stdout.write("the report, unflushed")
        try:
            raise SystemExit(3)
        except SystemExit as exc:
            quick_exit.end(exc.code)
        print("not reached")
    """)
    assert out.returncode == 3
    assert out.stdout == "the report, unflushed"
    # the handlers ran; the held object was never freed (no teardown)
    assert out.stderr == "atexit ran\n"


def test_what_an_atexit_handler_writes_is_flushed_too() -> None:
    out = _run("""
        atexit.register(lambda: sys.stdout.write(" and the handler's line"))
        quick_exit.arm()
        quick_exit.hold(Loud())
        sys.stdout.write("the report")
        quick_exit.end(0)
    """)
    assert (out.returncode, out.stdout) == (0, "the report and the handler's line")


def test_a_running_thread_that_is_not_a_daemon_leaves_the_usual_exit() -> None:
    # the usual exit joins it: its work is not cut short
    out = _run("""
        import threading, time
        quick_exit.arm()
        quick_exit.hold(Loud())
        worker = threading.Thread(target=lambda: (time.sleep(0.3), print("thread done")))
        worker.start()
        quick_exit.end(3)
        print("went on")
        sys.exit(4)
    """)
    assert out.returncode == 4
    assert out.stdout.splitlines() == ["went on", "thread done"]


def test_no_stdout_at_all_still_ends_with_the_commands_code() -> None:
    # `fleetctl health >&-`: Python sets sys.stdout to None (rich then writes nowhere)
    out = _run("""
        quick_exit.arm()
        quick_exit.hold(Loud())
        sys.stdout = None
        quick_exit.end(2)
    """)
    assert (out.returncode, out.stderr) == (2, "atexit ran\n")


def test_exit_code_none_is_zero() -> None:
    out = _run("""
        quick_exit.arm()
        quick_exit.hold(Loud())
        quick_exit.end(None)
        print("not reached")
    """)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "atexit ran\n")


@pytest.mark.parametrize("body", [
    # not armed (a command run in-process, as Typer's test runner does): nothing is held
    "quick_exit.hold(Loud())\nquick_exit.end(3)\nprint('went on')\nsys.exit(4)\n",
    # armed, nothing held (every command but a one-shot health)
    "quick_exit.arm()\nquick_exit.end(3)\nprint('went on')\nsys.exit(4)\n",
    # a message for a code: the usual exit prints it
    "quick_exit.arm()\nquick_exit.hold(Loud())\nquick_exit.end('bad')\nprint('went on')\nsys.exit(4)\n",
])
def test_end_returns_unless_armed_and_holding(body: str) -> None:
    out = _run(body)
    assert out.returncode == 4
    assert out.stdout == "went on\n"
    assert "atexit ran" in out.stderr


def test_a_closed_stdout_leaves_the_usual_exit() -> None:
    # `fleetctl health --json | head -c1`: the flush fails; end() returns and the usual path goes on
    out = _run("""
        import io, os
        class Closed(io.StringIO):
            def flush(self):
                raise BrokenPipeError(32, "Broken pipe")
        quick_exit.arm()
        quick_exit.hold(Loud())
        sys.stdout = Closed()
        quick_exit.end(1)
        print("went on", file=sys.stderr)
        os._exit(5)
    """)
    assert out.returncode == 5
    assert "went on" in out.stderr


def test_the_console_script_holds_a_one_shot_health_report(tmp_path: Path) -> None:
    # The whole path: fleetctl's main arms it and a one-shot health holds its report; the exit code and
    # the JSON document come out whole (an unreachable host: exit 1).
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    gone: {ansible_host: 127.0.0.1, fleet_agent_port: 9}\n")
    prog = textwrap.dedent("""
        import os, sys
        real = os._exit
        def said(code):
            print("ended by quick_exit", file=sys.stderr, flush=True)
            real(code)
        os._exit = said
        from fleetctl.cli import main
        main()
    """)
    out = subprocess.run([sys.executable, "-c", prog, "health", "-i", str(inv), "--json", "--timeout", "2"],
                         capture_output=True, text=True, timeout=120,
                         env={**_BUFFERED, "FLEETCTL_CACHE_DIR": str(tmp_path / "cache")})
    doc = json.loads(out.stdout)
    assert out.returncode == doc["exit_code"] != 0
    assert [h["status"] for h in doc["hosts"]] == ["unreachable"]
    assert "ended by quick_exit" in out.stderr
