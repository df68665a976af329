"""``-o/--output`` and output that fits where it goes: drawn on a terminal, plain lines on a pipe.

The pipe and terminal cases run the real ``fleetctl`` (a pipe, and a pseudo-terminal from
``pty.openpty``) against ``inventory/example``; the renderer itself is checked on rich tables.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from typer.testing import CliRunner

from fleetctl.cli import app
from fleetctl.views.console import plain_lines, show
from fleetctl.views.text import NAME_LIMIT, cell, ident

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "inventory" / "example")
FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
LONG = "gpu-h100-" + "x" * 100 + "-0007"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCTL_", "ANSIBLE_"))}
    env = {k: v for k, v in env.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    return {**env, "FLEETCTL_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "80", "HOME": str(tmp_path),
            "TERM": "xterm"}


def piped(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETCTL, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=_env(tmp_path))


def on_terminal(tmp_path: Path, *args: str) -> str:
    """``fleetctl args`` with stdout on a pseudo-terminal (80 columns); what it wrote there."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    proc = subprocess.Popen([FLEETCTL, *args], stdout=slave, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={k: v for k, v in _env(tmp_path).items() if k != "COLUMNS"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def table_with(name: str) -> Table:
    t = Table(title=Text("rack=7"), box=None)
    t.add_column("HOST")
    t.add_column("CHIPS", justify="right")
    t.add_column("PROBLEMS")
    t.add_row(ident(name), "8", cell(""))
    t.add_row(ident("n1"), "10", Text("xid, temperature", style="red"))
    return t


def test_plain_lines_keep_whole_names_pad_columns_and_mark_empty_cells() -> None:
    assert len(ident(LONG).plain) == NAME_LIMIT  # clipped for a terminal...
    assert plain_lines(table_with(LONG)) == [  # ...whole for a pipe
        "rack=7",
        "HOST" + " " * (len(LONG) - 4) + "  CHIPS  PROBLEMS",
        LONG + "      8  -",
        "n1" + " " * (len(LONG) - 2) + "     10  xid, temperature",
    ]


def test_plain_lines_pad_by_display_width() -> None:
    from rich.cells import cell_len

    # a CJK name takes two terminal columns per character: the next column still starts in one place
    table = table_with("計算ノード-01")
    lines = plain_lines(table)[1:]
    tokens = ("CHIPS", "8", "10")
    ends = {cell_len(line[:line.index(t) + len(t)]) for line, t in zip(lines, tokens, strict=True)}
    assert ends == {cell_len("計算ノード-01") + 2 + len("CHIPS")}, lines  # CHIPS is right-aligned
    assert lines[1].startswith("計算ノード-01  ")


def test_plain_lines_escape_controls_in_the_whole_text() -> None:
    hostile = "h\x1b[2J" + "y" * 100
    [_, row, _] = plain_lines(table_with(hostile))[1:]
    assert row.startswith("h\\x1b[2J" + "y" * 100 + "  ")


def test_show_draws_on_a_terminal_and_writes_plain_lines_elsewhere() -> None:
    term = Console(file=StringIO(), width=60, force_terminal=True, color_system=None)
    show(Group(Text("3 hosts"), table_with(LONG)), term)
    drawn = term.file.getvalue()  # type: ignore[attr-defined]
    assert LONG not in drawn and "…" in drawn  # rich's table, the name clipped in its middle
    pipe = Console(file=StringIO(), width=60, force_terminal=False)
    show(Group(Text("3 hosts"), table_with(LONG)), pipe)
    lines = pipe.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[:2] == ["3 hosts", "rack=7"] and lines[3].startswith(LONG + " ")
    assert all("\x1b" not in line for line in lines)


INVENTORY_PIPED = [
    "HOST          ADDRESS         PORT  CHIPS  TOKEN  GROUP",
    "gpu-h100-001  192.0.2.11     10400      8  none   h100",
    "gpu-h100-002  192.0.2.12     10400      8  none   h100",
    "gpu-h100-003  192.0.2.13     10400      8  none   h100",
    "gpu-h100-004  192.0.2.14     10400      8  none   h100",
    "gpu-l4-001    198.51.100.21  10400      4  none   l4",
    "gpu-l4-002    198.51.100.22  10400      4  none   l4",
    "gpu-l4-003    198.51.100.23  10400      4  none   l4",
    "tpu-v5e-001   203.0.113.31   10400      4  none   tpu_v5e",
    "tpu-v5e-002   203.0.113.32   10400      4  none   tpu_v5e",
]


def test_inventory_on_a_pipe_is_one_host_per_line_and_no_count(tmp_path: Path) -> None:
    proc = piped(tmp_path, "inventory", "-i", EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # (the hosts' order is the inventory's as Ansible parses it: compared as a set of whole lines)
    assert lines[0] == INVENTORY_PIPED[0] and sorted(lines[1:]) == INVENTORY_PIPED[1:]


def test_inventory_on_a_terminal_is_a_drawn_table_with_a_count(tmp_path: Path) -> None:
    drawn = on_terminal(tmp_path, "inventory", "-i", EXAMPLE)
    assert "\x1b[" in drawn  # a terminal gets rich's styles (the bold header)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in drawn.splitlines()]
    assert lines[0].split() == ["HOST", "ADDRESS", "PORT", "CHIPS", "TOKEN", "GROUP"]
    assert lines[-1] == "9 hosts"
    assert all(len(line) <= 80 for line in lines)


def test_output_formats_of_inventory(tmp_path: Path) -> None:
    names = piped(tmp_path, "inventory", "-i", EXAMPLE, "tpu_nodes", "-o", "name")
    assert names.stdout.splitlines() == ["tpu-v5e-001", "tpu-v5e-002"]
    as_yaml = yaml.safe_load(piped(tmp_path, "inventory", "-i", EXAMPLE, "tpu_nodes", "-o", "yaml").stdout)
    as_json = json.loads(piped(tmp_path, "inventory", "-i", EXAMPLE, "tpu_nodes", "-o", "json").stdout)
    assert as_yaml == as_json == json.loads(piped(tmp_path, "inventory", "-i", EXAMPLE, "tpu_nodes",
                                                  "--json").stdout)
    assert as_json[0]["groups"] == ["tpu_v5e", "tpu_nodes"]
    wide = piped(tmp_path, "inventory", "-i", EXAMPLE, "tpu-v5e-001", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["HOST", "ADDRESS", "PORT", "CHIPS", "TOKEN", "GROUPS", "VARS"]
    assert wide[1].split()[:6] == ["tpu-v5e-001", "203.0.113.31", "10400", "4", "none", "tpu_v5e,tpu_nodes"]
    both = piped(tmp_path, "inventory", "-i", EXAMPLE, "--json", "-o", "yaml")
    assert (both.returncode, both.stderr) == (
        2, "fleetctl inventory: --json and -o yaml ask for two formats: give one\n")


def test_several_patterns_are_joined_as_ansible_joins_them(tmp_path: Path) -> None:
    out = piped(tmp_path, "inventory", "-i", EXAMPLE, "gpu_nodes", "&h100", "!gpu-h100-001", "-o", "name")
    assert out.stdout.splitlines() == ["gpu-h100-002", "gpu-h100-003", "gpu-h100-004"]
    union = piped(tmp_path, "inventory", "-i", EXAMPLE, "tpu-v5e-002", "gpu-l4-001", "-o", "name")
    assert union.stdout.splitlines() == ["tpu-v5e-002", "gpu-l4-001"]  # Ansible's order: the patterns''


def test_runs_list_on_an_empty_database_says_so_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    proc = piped(tmp_path, "runs", "list", "--db", str(db))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", f"no provision runs in {db}\n")
    failed = piped(tmp_path, "runs", "list", "--db", str(db), "--status", "failed")
    assert failed.stderr == f"no provision runs with status failed in {db}\n"
    assert piped(tmp_path, "runs", "list", "--db", str(db), "-o", "json").stdout == "[]\n"
    assert piped(tmp_path, "runs", "list", "--db", str(db), "-o", "name").stdout == ""


def test_db_in_a_missing_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "state.db"
    proc = piped(tmp_path, "runs", "list", "--db", str(db))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"fleetctl runs: state database {db}: directory {db.parent} does not exist "
                           "(create it first)\n")
    assert not db.parent.exists()


def test_environment_variables_are_shown_in_help_and_an_option_wins(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for command in (["status"], ["inventory"], ["drain"], ["runs", "list"]):
        text = " ".join(CliRunner().invoke(app, [*command, "--help"], terminal_width=200).stdout.split())
        assert "FLEETCTL_INVENTORY" in text or command == ["runs", "list"], command
        if command != ["inventory"]:
            assert "FLEETCTL_DB" in text, command
    env = {**_env(tmp_path), "FLEETCTL_INVENTORY": EXAMPLE}
    by_env = subprocess.run([FLEETCTL, "inventory", "tpu_nodes", "-o", "name"], capture_output=True,
                            text=True, env=env, timeout=60, cwd=tmp_path)
    assert by_env.stdout.splitlines() == ["tpu-v5e-001", "tpu-v5e-002"]
    other = tmp_path / "inv.ini"
    other.write_text("[tpu_nodes]\nonly-me ansible_host=127.0.0.1\n")
    by_option = subprocess.run([FLEETCTL, "inventory", "-i", str(other), "tpu_nodes", "-o", "name"],
                               capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert by_option.stdout.splitlines() == ["only-me"]


def test_inventory_yaml_on_a_fresh_parse_writes_a_groups_shared_values_at_each_host(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("rack1:\n  vars: {mounts: [x, y]}\n  hosts:\n    n1: {ansible_host: 127.0.0.1}\n"
                   "    n2: {ansible_host: 127.0.0.2}\n")
    fresh = piped(tmp_path, "inventory", "-i", str(inv), "-o", "yaml", "--vars")  # nothing cached yet
    assert fresh.returncode == 0, fresh.stderr
    assert "&id" not in fresh.stdout and "*id" not in fresh.stdout
    hosts = yaml.safe_load(fresh.stdout)
    assert [h["vars"]["mounts"] for h in hosts] == [["x", "y"], ["x", "y"]]
    assert hosts == json.loads(piped(tmp_path, "inventory", "-i", str(inv), "-o", "json", "--vars").stdout)
