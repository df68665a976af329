"""The README cannot drift: its command blocks run, its names exist, its sample output is the demo's.

Every ```console block of README.md either runs here (against a simulated fleet, ``inventory/prod``
and ``inventory.yml`` standing for its inventory) or is marked just before it with
``<!-- readme-test: skip (reason) -->``; the marked ones are listed below, exactly, and their
``fleetctl`` commands still have their host patterns resolved in ``inventory/example`` and their
options looked up in ``--help``. Role variables the README names must be declared in a role's
``meta/argument_specs.yml`` (or be an inventory variable fleetctl reads).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "inventory" / "example"
# helper J's range on the shared machine: the sim fleet here, the demo's fleet above it.
FLEET_PORT, DEMO_PORT = 29200, 29300
FLEET_HOSTS = 8

# The blocks that cannot run here, by first command, with the reason the README gives.
EXPECTED_SKIPS = [
    ("make test", "the test suite this check is part of"),
    ("export ANSIBLE_VAULT_PASSWORD_FILE=~/.config/fleetctl/vault-pass",
     "changes real hosts over SSH with sudo"),
    ('fleetctl drain -i inventory/prod gpu-h100-003 --reason "XID 79, RMA ticket 4411" --wait --timeout 3600',
     "drains real hosts through their scheduler over SSH"),
    ("fleetctl burn-in -i inventory/prod h100-0003 --level 2", "real hosts: DCGM over SSH"),
    ("fleetctl remediate -i inventory/prod", "acts on real hosts through their scheduler"),
    ("fleetctl health -i inventory/prod --source prometheus --prometheus-url http://prometheus:9090",
     "needs a Prometheus server scraping the agents"),
    ("fleet-agent run [--config /etc/fleet-agent/config.yaml]",
     "on a fleet host: reads its chips, writes under /var/lib/fleet-agent"),
    ("make test",
     "the suite itself, Molecule and benchmarks: Docker, root, many minutes"),
]

FENCE = re.compile(r"^\s*```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!-- readme-test: skip \((.+)\) -->\s*$")
ANY_MARKER = re.compile(r"^\s*<!--.*readme-test")
# Variable prefixes of the roles and of the inventory variables fleetctl reads.
VARIABLE = re.compile(
    r"`((?:fleet_agent|nvidia_driver|cuda_toolkit|dcgm|tpu_runtime|container_runtime|base|fleet_slurm"
    r"|fleet_kubernetes)_[a-z0-9_]+|fleet_scheduler|fleet_kubeconfig)\b"
)
# Local facts the roles set (not variables a user sets), each with the role that sets it.
FACTS = {"nvidia_driver_reboot_needed": "nvidia_driver"}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    lines: tuple[str, ...]
    skip: str | None

    def commands(self) -> list[str]:
        """Logical command lines: continuations joined, blank lines dropped (comments kept)."""
        out: list[str] = []
        pending = ""
        for raw in self.lines:
            line = raw.strip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line:
                out.append(line)
        return out


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            j += 1
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        mm = MARKER.match(prev)
        blocks.append(Block(i + 1, m.group(1), tuple(lines[i + 1:j]), mm.group(1) if mm else None))
        i = j + 1
    return blocks


def console_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang == "console"]


def strip_comment(cmd: str) -> str:
    """The command without its trailing ``# comment`` (quotes kept)."""
    return re.sub(r"\s+#\s.*$", "", cmd)


def fleetctl_argv(cmd: str) -> list[str] | None:
    argv = shlex.split(cmd, comments=True)
    return argv if argv and argv[0] == "fleetctl" else None


# --- what needs no fleet -----------------------------------------------------------------------


def test_skipped_blocks_are_exactly_the_listed_ones() -> None:
    skipped = [(strip_comment(b.commands()[0]), b.skip) for b in console_blocks() if b.skip]
    assert skipped == EXPECTED_SKIPS


def test_every_marker_is_well_formed_and_precedes_a_console_block() -> None:
    text = README.read_text(encoding="utf-8").splitlines()
    markers = [n for n, line in enumerate(text, 1) if ANY_MARKER.search(line)]
    malformed = [n for n in markers if not MARKER.match(text[n - 1])]
    assert malformed == [], f"README lines {malformed}: write <!-- readme-test: skip (reason) -->"
    # Each marker is consumed by exactly one console block (a marker before prose would be lost).
    assert len(markers) == sum(1 for b in console_blocks() if b.skip is not None)


def _declared_variables() -> set[str]:
    names: set[str] = set()
    for spec in sorted((ROOT / "roles").glob("*/meta/argument_specs.yml")):
        doc = yaml.safe_load(spec.read_text()) or {}
        for entry in (doc.get("argument_specs") or {}).values():
            names.update((entry.get("options") or {}).keys())
    return names


def _fleetctl_source() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "fleetctl").rglob("*.py")))


def test_every_variable_the_readme_names_exists() -> None:
    named = set(VARIABLE.findall(README.read_text(encoding="utf-8")))
    assert len(named) > 20  # the pattern still finds the README's variables
    declared = _declared_variables()
    source = _fleetctl_source()
    unknown = []
    for name in sorted(named):
        if name in declared or f'"{name}"' in source:
            continue
        role = FACTS.get(name)
        if role and name in "".join(p.read_text() for p in (ROOT / "roles" / role).rglob("*.yml")):
            continue
        unknown.append(name)
    assert unknown == [], "named in README.md but in no role's meta/argument_specs.yml nor read by fleetctl"


def test_group_names_match_the_example_inventory() -> None:
    groups = set(_example_groups())
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:gpu|tpu)_[a-z0-9_]+)`", text))
    named -= _declared_variables()  # tpu_runtime_* are variables, not groups
    assert {"gpu_nodes", "tpu_nodes"} <= named
    assert named <= groups, f"groups the README names that inventory/example lacks: {named - groups}"
    for g in ("h100", "l4", "tpu_v5e"):
        assert f"`{g}`" in text and g in groups


def _example_groups() -> Iterator[str]:
    doc = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())

    def walk(node: dict[str, Any]) -> Iterator[str]:
        for name, sub in (node.get("children") or {}).items():
            yield name
            yield from walk(sub or {})

    yield from walk(doc["all"])


def _help(sub: list[str]) -> str:
    env = dict(os.environ, COLUMNS="250", NO_COLOR="1", TERM="dumb")
    out = subprocess.run([str(BIN / "fleetctl"), *sub, "--help"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _subcommand(argv: list[str]) -> list[str]:
    return argv[1:3] if argv[1] in ("runs", "prometheus") else argv[1:2]


def test_skipped_fleetctl_commands_use_real_options_and_match_example_hosts() -> None:
    checked = 0
    for block in console_blocks():
        if block.skip is None:
            continue
        for cmd in block.commands():
            argv = fleetctl_argv(cmd)
            if argv is None:
                continue
            sub = _subcommand(argv)
            help_text = _help(sub)
            for opt in (a.split("=")[0] for a in argv if a.startswith("-")):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", help_text), \
                    f"README line {block.line}: fleetctl {' '.join(sub)} has no option {opt}"
            if sub[0] in ("provision", "drain", "undrain", "status", "maintain", "health"):
                assert "-i" in argv, f"README: {cmd!r} names no inventory (ansible.cfg sets none)"
                at = argv.index("-i") + 2
                pattern = argv[at] if at < len(argv) and not argv[at].startswith("-") else "all"
                out = subprocess.run([str(BIN / "fleetctl"), "inventory", "-i", str(EXAMPLE), pattern],
                                     capture_output=True, text=True, timeout=60)
                assert out.returncode == 0, f"README: {pattern!r} matches nothing: {out.stderr.strip()}"
                checked += 1
    assert checked >= 6


# --- the runnable blocks, against a simulated fleet -----------------------------------------------


def _ports_free(lo: int, n: int) -> bool:
    for port in range(lo, lo + n):
        with socket.socket() as s:
            # as the agents bind: a port a finished run left in TIME_WAIT is free to them
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_block(lo: int, hi: int, n: int) -> int:
    base = next((p for p in range(lo, hi - n + 1, n) if _ports_free(p, n)), None)
    assert base is not None, f"no {n} free ports in {lo}-{hi}"
    return base


@pytest.fixture(scope="module")
def sim_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("readme-fleet")
    base = _free_block(FLEET_PORT, DEMO_PORT, FLEET_HOSTS)
    inv = work / "inventory.yml"
    log = work / "fleet.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([str(BIN / "fleet-agent"), "sim-fleet", "--hosts", str(FLEET_HOSTS),
                                 "--base-port", str(base), "--write-inventory", str(inv)],
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "ready:" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "ready:" in log.read_text(), log.read_text()
        yield inv
    finally:
        proc.terminate()
        proc.wait(10)


def _run_env(work: Path) -> dict[str, str]:
    pw = work / "vault-pass"
    pw.write_text("readme-test\n")
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_VAULT_PASSWORD_FILE=str(pw),
                FLEETCTL_CACHE_DIR=str(work / "cache"), FLEETCTL_DB=str(work / "fleetctl.db"),
                COLUMNS="120")


def test_runnable_blocks_run(sim_inventory: Path, tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(BIN.parent)  # the README's `.venv/bin/...` paths
    env = _run_env(tmp_path)
    targets = tmp_path / "targets.json"
    ran = []
    for block in console_blocks():
        if block.skip is not None or [strip_comment(c) for c in block.commands()] == ["make demo"]:
            continue
        for cmd in block.commands():
            if fleetctl_argv(cmd) is not None:
                cmd = (cmd.replace("inventory/prod", str(sim_inventory))
                       .replace("/etc/prometheus/file_sd/fleet-agent.json", str(targets)))
            out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)
            # `fleetctl health` exits 1 when the fleet has problems, which the demo scenario has.
            ok = (0, 1) if cmd.startswith("fleetctl health") else (0,)
            assert out.returncode in ok, f"README line {block.line}: {cmd}\n{out.stdout}\n{out.stderr}"
            ran.append(strip_comment(cmd).split(" ")[:2])
    assert ["fleetctl", "health"] in ran and ["openssl", "rand"] in ran
    vault = (tmp_path / "inventory/prod/group_vars/all/vault.yml").read_text()
    assert vault.startswith("vault_fleet_agent_token: !vault |") and "$ANSIBLE_VAULT;1.1;AES256" in vault
    doc = json.loads(targets.read_text())
    assert sum(len(t["targets"]) for t in doc) == FLEET_HOSTS


# --- the demo's sample output --------------------------------------------------------------------

VOLATILE = [
    (re.compile(r"127\.0\.0\.1:\d+-\d+"), "127.0.0.1:P"),
    (re.compile(r"\(\d+\.\d+s\)"), "(T)"),
    (re.compile(r"\d+°C"), "T°C"),
    (re.compile(r"\b\d+%"), "U%"),
    (re.compile(r"\b\d+/\d+ ?(GiB|G)\b"), r"M/M \1"),
    (re.compile(r"\b\d+ W\b"), "P W"),
    (re.compile(r"\b\d+s$"), "Ns"),
]


def normalize(line: str) -> str:
    for pattern, repl in VOLATILE:
        line = pattern.sub(repl, line.rstrip())
    return " ".join(line.split())


def test_demo_prints_the_readme_sample() -> None:
    blocks = readme_blocks()
    at = next(i for i, b in enumerate(blocks) if [strip_comment(c) for c in b.commands()] == ["make demo"])
    sample = blocks[at + 1]
    assert sample.lang == "text" and sample.lines[0].startswith("ready:")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", COLUMNS="132",
               DEMO_BASE_PORT=str(_free_block(DEMO_PORT, 29999, 64)))
    out = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True,
                         env=env, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    real = [normalize(line) for line in out.stdout.splitlines()]
    want = [normalize(line) for line in sample.lines if line.strip() and line.strip() != "..."]
    # In order: each README line is a later line of the real output.
    pos = 0
    for line in want:
        try:
            pos = real.index(line, pos) + 1
        except ValueError:
            pytest.fail(f"README sample line not printed by `make demo` (in this order): {line!r}")
