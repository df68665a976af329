"""Shell completion: ``fleetctl completion SHELL`` prints the script; the script's requests (the
``_FLEETCTL_COMPLETE`` protocol) answer subcommands, options and choices, fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetctl.cli import app
from fleetctl.commands.runs import RunStatus

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))


def complete(words: str) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {**os.environ, "_FLEETCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    proc = subprocess.run([FLEETCTL], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize(("words", "expected"), [
    ("fleetctl ru", ["runs"]),
    ("fleetctl runs ", ["list", "show"]),
    ("fleetctl runs list --status ", [s.value for s in RunStatus]),
    ("fleetctl runs list --status f", ["failed"]),
    ("fleetctl inventory -o ", ["table", "wide", "json", "yaml", "name"]),
    ("fleetctl provision --connection p", ["paramiko"]),
    ("fleetctl status --hi", ["--history"]),
    ("fleetctl completion ", ["bash", "zsh", "fish"]),
])
def test_completion_answers(words: str, expected: list[str]) -> None:
    assert complete(words) == expected


def test_completion_is_fast() -> None:
    complete("fleetctl ru")  # warm
    started = time.perf_counter()
    complete("fleetctl runs list --status f")
    # the 0.3 s figure is bench_cli.py's; this catches a regression (an import of rich or Ansible)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("shell", "line"), [
    ("bash", "complete -o default -F _fleetctl_completion fleetctl"),
    ("zsh", "compdef _fleetctl_completion fleetctl"),
    ("fish", "complete --command fleetctl --no-files"),
])
def test_completion_prints_the_script(shell: str, line: str) -> None:
    proc = subprocess.run([FLEETCTL, "completion", shell], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and line in proc.stdout and "_FLEETCTL_COMPLETE=complete_" in proc.stdout


def test_bash_sources_the_script_and_completes_through_it(tmp_path: Path) -> None:
    script = subprocess.run([FLEETCTL, "completion", "bash"], capture_output=True, text=True,
                            timeout=30).stdout
    (tmp_path / "c.bash").write_text(script)
    driver = (f'PATH={Path(FLEETCTL).parent}:$PATH; source {tmp_path / "c.bash"}; '
              'COMP_WORDS=(fleetctl runs list --status s); COMP_CWORD=4; _fleetctl_completion fleetctl; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=30)
    assert proc.stdout.splitlines() == ["successful"], proc.stderr


def test_run_status_choices_are_the_state_modules() -> None:
    from fleetctl.state.runs import STATUSES

    assert tuple(s.value for s in RunStatus) == STATUSES
    assert app.registered_commands  # the CLI module loaded its commands
