"""Usage errors are one line on stderr, ``fleetctl <command>: <message>``, exit 2, with "did you mean"
where a close name exists (the real ``fleetctl`` in a subprocess, and through Typer's CliRunner)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetctl.cli import app

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
EXAMPLE = str(Path(__file__).resolve().parents[2] / "inventory" / "example")

CASES = [
    (["inventory", "--jsn"], "fleetctl inventory: no such option --jsn; did you mean --json?"),
    (["status", "--hstory", "3"], "fleetctl status: no such option --hstory; did you mean --history?"),
    (["inventory", "-o", "jsn"],
     "fleetctl inventory: --output/-o 'jsn': expected one of table, wide, json, yaml, name; "
     "did you mean json?"),
    (["runs", "list", "--status", "faild"],
     "fleetctl runs list: --status 'faild': expected one of running, successful, failed, canceled, "
     "interrupted; did you mean failed?"),
    (["runs", "list", "--limit", "x"], "fleetctl runs list: --limit/-n: 'x' is not a valid int range"),
    (["runs", "list", "--limit", "0"], "fleetctl runs list: --limit/-n: 0 is not in the range x>=1"),
    (["runs", "show"], "fleetctl runs show: missing argument RUN_ID"),
    (["drain"], "fleetctl drain: missing argument PATTERN..."),
    (["maintain", "h1"], "fleetctl maintain: missing option --playbook/-p"),
    (["provision", "--connection", "local"],
     "fleetctl provision: --connection/-c 'local': expected one of ssh, paramiko"),
    (["frob"], "fleetctl: no such command 'frob'"),
    (["runs", "lst"], "fleetctl runs: no such command 'lst'; did you mean 'list'?"),
    (["runs", "list", "extra"], "fleetctl runs list: got unexpected extra argument(s) (extra)"),
    (["completion", "tcsh"], "fleetctl completion: SHELL 'tcsh': expected one of bash, zsh, fish"),
    (["inventory", "--jsn\x1b[2J"], "fleetctl inventory: no such option --jsn\\x1b[2J; did you mean --json?"),
]


@pytest.mark.parametrize(("args", "line"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_usage_error_is_one_line_exit_2(args: list[str], line: str) -> None:
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", line + "\n")


def test_the_real_command_too(tmp_path: Path) -> None:
    env = {**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path)}
    for args, line in CASES[:3]:
        proc = subprocess.run([FLEETCTL, *args], capture_output=True, text=True, timeout=30, env=env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line + "\n")


def test_a_pattern_that_matches_nothing_suggests_close_hosts_and_groups() -> None:
    for pattern, hint in [
        ("gpu_node", "; did you mean group 'gpu_nodes' or group 'tpu_nodes'?"),
        ("gpu-h100-01", "; did you mean 'gpu-h100-001' or 'gpu-h100-004' or 'gpu-h100-003'?"),
    ]:
        result = CliRunner().invoke(app, ["inventory", "-i", EXAMPLE, pattern])
        assert result.exit_code == 2
        assert result.stderr == (f"fleetctl inventory: {EXAMPLE}: pattern {pattern!r} matches no host or "
                                 f"group{hint}\n")
    result = CliRunner().invoke(app, ["inventory", "-i", EXAMPLE, "gpu_nodes", "&h10"])
    assert result.stderr == (f"fleetctl inventory: {EXAMPLE}: pattern 'h10' matches no host; "
                             "did you mean group 'h100'?\n")
    result = CliRunner().invoke(app, ["inventory", "-i", EXAMPLE, "zzzz"])
    assert result.stderr == f"fleetctl inventory: {EXAMPLE}: pattern 'zzzz' matches no host or group\n"


def test_help_still_works_and_no_arguments_prints_help() -> None:
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0
    bare = CliRunner().invoke(app, [])
    assert bare.exit_code == 2 and "Usage" in bare.output
