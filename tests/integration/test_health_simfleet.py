"""``fleetctl health`` and ``fleetctl inventory`` against a real ``fleet-agent sim-fleet`` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import interrupt

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FLEETCTL = str(BIN / "fleetctl")
FLEET_AGENT = str(BIN / "fleet-agent")

# Stable faults only (no hangs, nothing that changes from one sample to the next).
SCENARIO = """\
description: fleetctl health integration test
seed: 7
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 4}
  - {name: v5e, kind: tpu, model: v5e, chips: 4, count: 2}
faults:
  - {kind: thermal_throttle, group: h100, hosts: [1], chips: [5], temperature_c: 90}
  - {kind: pcie_downgrade, group: h100, hosts: [2], chips: [3], gen: 3, width: 8}
  - {kind: chip_missing, group: v5e, hosts: [1], chips: [2]}
"""
EXPECTED = {
    "h100-0000": "healthy",
    "h100-0001": "unhealthy",
    "h100-0002": "degraded",
    "h100-0003": "healthy",
    "v5e-0000": "healthy",
    "v5e-0001": "unhealthy",
}


def port_block(n: int, lo: int, hi: int, wait_s: float = 60.0) -> int:
    """The first P in [lo, hi] with P .. P+n-1 free on 127.0.0.1, waiting up to ``wait_s`` for one.

    Probed as the agents bind, with SO_REUSEADDR. A port can still be taken for up to a minute by
    the TIME-WAIT of a client connection that used it as its ephemeral port (these ranges lie inside
    Linux's ephemeral range), hence the wait."""
    deadline = time.monotonic() + wait_s
    while True:
        p = lo
        while p + n - 1 <= hi:
            for q in range(p, p + n):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind(("127.0.0.1", q))
                    except OSError:
                        p = q + 1
                        break
            else:
                return p
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {n} free ports in {lo}-{hi}")
        time.sleep(0.5)


@dataclass
class SimFleet:
    proc: subprocess.Popen[bytes]
    inventory: Path
    base_port: int
    log: Path


def start_sim_fleet(
    workdir: Path, scenario: str, hosts: int, *, lo: int, hi: int, args: tuple[str, ...] = ()
) -> SimFleet:
    (workdir / "scenario.yaml").write_text(scenario)
    base = port_block(hosts, lo, hi)
    inventory, log = workdir / "inventory.yml", workdir / "sim-fleet.log"
    proc = subprocess.Popen(
        [
            FLEET_AGENT,
            "sim-fleet",
            "--hosts",
            str(hosts),
            "--base-port",
            str(base),
            "--scenario",
            str(workdir / "scenario.yaml"),
            "--write-inventory",
            str(inventory),
            "--interval",
            "3",
            *args,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while "ready:" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sim-fleet did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return SimFleet(proc, inventory, base, log)


def stop(fleet: SimFleet) -> None:
    if fleet.proc.poll() is None:
        fleet.proc.send_signal(signal.SIGTERM)
        try:
            fleet.proc.wait(10)
        except subprocess.TimeoutExpired:
            fleet.proc.kill()
            fleet.proc.wait(5)


def fleetctl(*args: str, cache: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FLEETCTL_CACHE_DIR": str(cache), "COLUMNS": "160"},
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    f = start_sim_fleet(tmp_path_factory.mktemp("simfleet"), SCENARIO, 6, lo=36000, hi=36499)
    yield f
    stop(f)


def statuses(doc: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {h["name"]: h["status"] for h in doc["hosts"]}


def test_json_report_over_real_agents(fleet: SimFleet, tmp_path: Path) -> None:
    out = fleetctl("health", "-i", str(fleet.inventory), "--json", cache=tmp_path)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert statuses(doc) == EXPECTED
    assert [h["name"] for h in doc["hosts"]][:2] == ["h100-0001", "v5e-0001"]  # worst first
    hot = next(h for h in doc["hosts"] if h["name"] == "h100-0001")
    assert {(p["check"], p["chip"]) for p in hot["problems"]} >= {("temperature", 5)}
    assert hot["chips_present"] == 8 and hot["max_temperature_c"] >= 87
    missing = next(h for h in doc["hosts"] if h["name"] == "v5e-0001")
    assert (missing["chips_present"], missing["chips_expected"]) == (3, 4)
    assert doc["summary"]["hosts"] == {
        "total": 6,
        "healthy": 3,
        "degraded": 1,
        "unknown": 0,
        "error": 0,
        "unreachable": 0,
        "unhealthy": 2,
    }


def test_tables_and_patterns(fleet: SimFleet, tmp_path: Path) -> None:
    inv = str(fleet.inventory)
    table = fleetctl("health", "-i", inv, cache=tmp_path)
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert lines[0].startswith("6 hosts: 3 healthy, 1 degraded, 2 unhealthy; 39 chips:")
    assert lines[2].split()[:2] == ["h100-0001", "unhealthy"]
    chips = fleetctl("health", "-i", inv, "--unhealthy", "--chips", cache=tmp_path)
    assert chips.returncode == 1
    rows = [line.split() for line in chips.stdout.splitlines()[2:] if line.startswith(("h100", "v5e"))]
    # host-level rows (no chip) first, then the chips worst first
    assert rows[0][:2] == ["v5e-0001", "-"]
    assert ["h100-0001", "5", "gpu"] == next(r for r in rows if r[1] != "-")[:3]
    assert any(r[:2] == ["v5e-0001", "-"] and "chip_count" in r for r in rows)
    assert not any(r[0] in ("h100-0000", "h100-0003") for r in rows)
    healthy = fleetctl("health", "-i", inv, "h100-0000,h100-0003", cache=tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    grouped = fleetctl(
        "health", "-i", inv, "all:!h100-0001", "--group-by", "group", "--sort", "name", cache=tmp_path
    )
    assert "group=gpu_nodes " in grouped.stdout and "group=tpu_nodes " in grouped.stdout
    assert "h100-0001" not in grouped.stdout


def test_usage_errors_exit_2_with_one_line(fleet: SimFleet, tmp_path: Path) -> None:
    for args, needle in [
        (("health", "-i", str(fleet.inventory), "nosuch"), "matches no host"),
        (("health", "-i", str(tmp_path / "missing.yml")), "inventory not found"),
        (("health", "-i", str(fleet.inventory), "--sort", "colour"), "--sort"),
        (("health", "-i", str(fleet.inventory), "--source", "prometheus"), "--prometheus-url"),
    ]:
        out = fleetctl(*args, cache=tmp_path)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_inventory_command_lists_the_fleet(fleet: SimFleet, tmp_path: Path) -> None:
    out = fleetctl("inventory", "-i", str(fleet.inventory), "tpu_nodes", "--json", cache=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [h["name"] for h in doc] == ["v5e-0000", "v5e-0001"]
    assert doc[0]["port"] == fleet.base_port + 4 and doc[0]["expected_chips"] == 4


def test_token_from_group_vars(tmp_path: Path) -> None:
    f = start_sim_fleet(tmp_path, SCENARIO, 6, lo=36500, hi=36899, args=("--token", "s3cret-t0ken"))
    try:
        # sim-fleet's inventory carries the token; take it out to see the agents refuse.
        inv = yaml.safe_load(f.inventory.read_text())
        assert inv["all"]["vars"].pop("fleet_agent_token") == "s3cret-t0ken"
        f.inventory.write_text(yaml.safe_dump(inv))
        without = fleetctl("health", "-i", str(f.inventory), "--json", cache=tmp_path / "c")
        doc = json.loads(without.stdout)
        assert {h["status"] for h in doc["hosts"]} == {"error"}
        assert {h["reason"]["kind"] for h in doc["hosts"]} == {"unauthorized"}
        (tmp_path / "group_vars").mkdir()
        (tmp_path / "group_vars" / "all.yml").write_text("fleet_agent_token: s3cret-t0ken\n")
        with_token = fleetctl("health", "-i", str(f.inventory), "--json", cache=tmp_path / "c")
        assert statuses(json.loads(with_token.stdout)) == EXPECTED
        assert "s3cret-t0ken" not in with_token.stdout + with_token.stderr
    finally:
        stop(f)


def test_inventory_json_masks_secrets(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("gpu_nodes:\n  hosts:\n    h100-0001:\n    h100-0002:\nrack1:\n  hosts:\n    h100-0001:\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "gpu_nodes.yml").write_text("fleet_agent_token: hunter2\nbmc_password: pw1\n")
    out = fleetctl("inventory", "-i", str(inv), "gpu_nodes:&rack1", "--json", "--vars", cache=tmp_path / "c")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [h["name"] for h in doc] == ["h100-0001"]
    assert doc[0]["token"] == "set" and doc[0]["vars"]["bmc_password"] == "<hidden>"
    assert "hunter2" not in out.stdout and "pw1" not in out.stdout
    bad = fleetctl("inventory", "-i", str(inv), "nosuch", cache=tmp_path / "c")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "matches no host" in bad.stderr


def test_pipes_get_one_line_per_host_and_the_on_call_views(fleet: SimFleet, tmp_path: Path) -> None:
    inv = str(fleet.inventory)
    table = fleetctl("health", "-i", inv, cache=tmp_path)  # stdout is a pipe here
    hot = [line for line in table.stdout.splitlines() if line.startswith("h100-0001 ")]
    assert len(hot) == 1 and "#5 temperature" in hot[0]  # its problems on its own line, whole
    assert len(table.stdout.splitlines()) == 2 + len(EXPECTED)
    names = fleetctl("health", "-i", inv, "--status", "degraded,unhealthy", "-o", "name", cache=tmp_path)
    assert names.returncode == 1 and names.stdout.split() == ["h100-0001", "v5e-0001", "h100-0002"]
    # several patterns, joined as Ansible joins them
    some = fleetctl("health", "-i", inv, "h100", "!h100-0001", "-o", "name", "--sort", "name", cache=tmp_path)
    assert some.stdout.split() == ["h100-0000", "h100-0002", "h100-0003"], some.stderr
    summary = fleetctl("health", "-i", inv, "--summary", "--group-by", "group", "-o", "json", cache=tmp_path)
    groups = {g["key"]: g for g in json.loads(summary.stdout)["groups"]}
    gpus = groups["gpu_nodes"]
    assert gpus["hostlist"] == "h100-[0000-0003]" and gpus["by_status"]["unhealthy"] == "h100-0001"
    fleet_map = fleetctl("health", "-i", inv, "--map", cache=tmp_path)
    assert "gpu_nodes " in fleet_map.stdout and "· healthy 3  o degraded 1  X unhealthy 2" in fleet_map.stdout
    chips = fleetctl("health", "-i", inv, "--chips", "--sort", "temp", "-o", "name", cache=tmp_path)
    assert chips.stdout.split()[0] == "h100-0001"  # the throttled chip is the hottest of all
    bad = fleetctl("health", "-i", inv, "--group-by", "rak", cache=tmp_path)
    assert bad.returncode == 2 and "--group-by 'rak'" in bad.stderr


def test_watch_in_a_pipe_prints_rounds_with_time_stamps(fleet: SimFleet, tmp_path: Path) -> None:
    proc = subprocess.Popen([FLEETCTL, "health", "-i", str(fleet.inventory), "--watch", "0.3", "--unhealthy"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path)})
    time.sleep(2.5)
    out, err = interrupt(proc, 20)
    stamps = [line for line in out.splitlines() if line.startswith("--- ")]
    assert len(stamps) >= 2, out + err
    assert out.count("h100-0001  unhealthy") == len(stamps)
