"""``fleetctl health`` against agents that misbehave, each a real socket in another process.

Run as a script (``python test_health_hostile.py serve BASE_PORT``) this file is the hostile
server: one port per behaviour in :data:`BEHAVIOURS`, in that order.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FLEETCTL = str(BIN / "fleetctl")

# behaviour -> (expected host status, expected reason kind)
BEHAVIOURS = {
    "hung": ("unreachable", "timeout"),
    "silent": ("unreachable", "timeout"),  # accepts, never reads
    "drip": ("error", "slow"),
    "garbage": ("error", "garbage"),
    "invalid_json": ("error", "invalid_json"),
    "old_schema": ("error", "schema_version"),
    "bad_schema": ("error", "bad_schema"),
    "auth": ("error", "unauthorized"),
    "server_error": ("error", "http_error"),
    "slam": ("error", "garbage"),  # closes the connection at once
    "refused": ("unreachable", "refused"),  # nothing listens
}


# --- the hostile server (runs in its own process) -----------------------------------------------------


def _http(body: bytes, status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def _handler(kind: str):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if kind == "silent":
                await asyncio.sleep(3600)
            await reader.readuntil(b"\r\n\r\n")
            if kind == "hung":
                await asyncio.sleep(3600)
            elif kind == "drip":
                for b in _http(b'{"schema": "fleet.node/v1"}' + b" " * 4096):
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(0.2)
            elif kind == "garbage":
                writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 definitely not HTTP\r\n\r\n")
            elif kind == "invalid_json":
                writer.write(_http(b'{"schema": "fleet.node/v1", "host": '))
            elif kind == "old_schema":
                writer.write(_http(json.dumps({"schema": "fleet.node/v0", "host": "x"}).encode()))
            elif kind == "bad_schema":
                writer.write(_http(json.dumps({"schema": "fleet.node/v1", "host": 42}).encode()))
            elif kind == "auth":
                writer.write(_http(b'{"error": "unauthorized"}', "401 Unauthorized"))
            elif kind == "server_error":
                writer.write(_http(b"{}", "500 Internal Server Error"))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def _serve(base: int) -> None:
    servers = []
    for i, kind in enumerate(BEHAVIOURS):
        if kind != "refused":
            servers.append(await asyncio.start_server(_handler(kind), "127.0.0.1", base + i))
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the tests ---------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).parent))
from test_health_simfleet import SCENARIO, port_block, start_sim_fleet, stop  # noqa: E402


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("hostile")
    fleet = start_sim_fleet(work, SCENARIO, 6, lo=19300, hi=19399)
    base = port_block(len(BEHAVIOURS), 19400, 19499)
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(base)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        hostile = "\n".join(
            f"    {kind}: {{ansible_host: 127.0.0.1, fleet_agent_port: {base + i}}}"
            for i, kind in enumerate(BEHAVIOURS)
        )
        inv = work / "hostile.yml"
        inv.write_text("hostile:\n  hosts:\n" + hostile + "\n")
        # One directory inventory: the real fleet's file and the hostile one side by side.
        d = work / "all"
        d.mkdir()
        (d / "fleet.yml").write_text(fleet.inventory.read_text())
        (d / "hostile.yml").write_text(inv.read_text())
        yield d
    finally:
        server.kill()
        server.wait()
        stop(fleet)


@pytest.mark.integration
def test_every_host_classified_within_the_deadline(inventory: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    out = subprocess.run(
        [FLEETCTL, "health", "-i", str(inventory), "--json", "--timeout", "1.5", "--deadline", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path)},
    )
    elapsed = time.monotonic() - started
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    got = {h["name"]: (h["status"], (h["reason"] or {}).get("kind")) for h in doc["hosts"]}
    for kind, expected in BEHAVIOURS.items():
        assert got[kind] == expected, (kind, next(h for h in doc["hosts"] if h["name"] == kind)["reason"])
    # The real agents are unaffected by their hostile neighbours.
    assert got["h100-0000"] == ("healthy", None) and got["h100-0001"] == ("unhealthy", None)
    # Bounded by the per-host timeout, not by the number of bad hosts (generous: Ansible's cold parse
    # and interpreter start-up are in there too).
    assert elapsed < 4 + 10


@pytest.mark.integration
def test_overall_deadline_cuts_the_fan_out_short(inventory: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    out = subprocess.run(
        [
            FLEETCTL,
            "health",
            "-i",
            str(inventory),
            "hostile",
            "--json",
            "--timeout",
            "30",
            "--deadline",
            "1",
            "--concurrency",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path)},
    )
    elapsed = time.monotonic() - started
    # Every host is unreachable or in error: exit 1 (a crash would be another code, or no JSON).
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    doc = json.loads(out.stdout)
    kinds = {h["name"]: (h["reason"] or {}).get("kind") for h in doc["hosts"]}
    assert len(kinds) == len(BEHAVIOURS)
    # The whole command ends soon after the 1 s deadline, far before the 30 s per-host timeout the
    # hung hosts would otherwise run into (the bound is generous: interpreter and inventory start-up).
    assert elapsed < 1 + 10, elapsed
    assert kinds["hung"] == "deadline" and kinds["silent"] == "deadline"
    assert sum(1 for k in kinds.values() if k == "deadline") >= 2
    assert all(h["status"] == "unreachable" for h in doc["hosts"] if h["reason"]["kind"] == "deadline")


LARGE_SCENARIO = """\
description: a larger fleet among hostile hosts
seed: 11
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 300}
"""


@pytest.mark.integration
def test_hung_hosts_spread_through_a_larger_fleet_are_all_classified(inventory: Path, tmp_path: Path) -> None:
    # 300 real agents with 30 hung, 15 garbage and 15 refusing hosts among them, 16 requests at
    # once: hung hosts step aside, reports wait to be decoded until every request is out; nothing
    # of that may cost a host its classification.
    import random

    import yaml

    hostile = yaml.safe_load((inventory / "hostile.yml").read_text())["hostile"]["hosts"]
    ports = {name: v["fleet_agent_port"] for name, v in hostile.items()}
    fleet = start_sim_fleet(tmp_path, LARGE_SCENARIO, 300, lo=32000, hi=32999)
    try:
        agents = yaml.safe_load(fleet.inventory.read_text())["all"]["hosts"]
        expected = {name: "healthy-or-not" for name in agents}
        entries = [f"    {name}: {{ansible_host: 127.0.0.1, fleet_agent_port: {v['fleet_agent_port']}}}"
                   for name, v in agents.items()]
        for kind, count in (("hung", 30), ("garbage", 15), ("refused", 15)):
            for i in range(count):
                expected[f"{kind}-{i}"] = "refused" if kind == "refused" else BEHAVIOURS[kind][1]
                entries.append(f"    {kind}-{i}: {{ansible_host: 127.0.0.1, "
                               f"fleet_agent_port: {ports[kind]}}}")
        random.Random(7).shuffle(entries)
        mixed = tmp_path / "mixed.yml"
        mixed.write_text("all:\n  hosts:\n" + "\n".join(entries) + "\n")
        out = subprocess.run(
            [FLEETCTL, "health", "-i", str(mixed), "--json", "--timeout", "2", "--concurrency", "16"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path)},
        )
    finally:
        stop(fleet)
    assert out.returncode == 1, out.stderr
    got = {h["name"]: (h["reason"] or {}).get("kind") for h in json.loads(out.stdout)["hosts"]}
    assert set(got) == set(expected)
    wrong = {name: got[name] for name, kind in expected.items()
             if got[name] != (None if kind == "healthy-or-not" else kind)}
    assert wrong == {}


# fleetctl with a resolver that the test controls: names under .hang.test never resolve, names under
# .fleet.test are 127.0.0.1, through the system's getaddrinfo like every other lookup.
RESOLVER_STUB = """\
import socket, sys, threading
real = socket.getaddrinfo
never = threading.Event()

def getaddrinfo(host, port, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".hang.test"):
        never.wait()
    if isinstance(host, str) and host.endswith(".fleet.test"):
        host = "127.0.0.1"
    return real(host, port, *args, **kwargs)

socket.getaddrinfo = getaddrinfo
from fleetctl.cli import main
sys.argv[0] = "fleetctl"
main()
"""

HEALTHY_SCENARIO = """\
description: healthy agents reached by name
seed: 5
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 200}
"""


@pytest.mark.integration
def test_names_whose_lookups_hang_do_not_make_healthy_agents_unreachable(tmp_path: Path) -> None:
    # 200 real agents, each inventory host a name the resolver answers, and 40 names whose lookups
    # hang (more than there are resolver threads): every agent is reported as what it is, each
    # hung name as a name resolution that timed out, well within the overall deadline.
    import random

    import yaml

    fleet = start_sim_fleet(tmp_path, HEALTHY_SCENARIO, 200, lo=36000, hi=36999)
    try:
        agents = yaml.safe_load(fleet.inventory.read_text())["all"]["hosts"]
        entries = [f"    {name}: {{ansible_host: {name}.fleet.test, "
                   f"fleet_agent_port: {v['fleet_agent_port']}}}" for name, v in agents.items()]
        entries += [f"    dns-hang-{i}: {{ansible_host: h{i}.hang.test, fleet_agent_port: 9}}"
                    for i in range(40)]
        random.Random(3).shuffle(entries)
        inv = tmp_path / "named.yml"
        inv.write_text("all:\n  hosts:\n" + "\n".join(entries) + "\n")
        stub = tmp_path / "fleetctl_stub_resolver.py"
        stub.write_text(RESOLVER_STUB)
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, str(stub), "health", "-i", str(inv), "--json", "--timeout", "2",
             "--deadline", "20"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path / "cache")},
        )
        elapsed = time.monotonic() - started
    finally:
        stop(fleet)
    assert out.returncode == 1, out.stderr
    hosts = {h["name"]: h for h in json.loads(out.stdout)["hosts"]}
    assert len(hosts) == 240
    wrong = {name: (hosts[name]["status"], hosts[name]["reason"]) for name in agents
             if hosts[name]["status"] != "healthy"}
    assert wrong == {}
    for i in range(40):
        h = hosts[f"dns-hang-{i}"]
        assert h["status"] == "unreachable"
        assert h["reason"] == {"kind": "timeout",
                               "message": f"name resolution of h{i}.hang.test timed out after 2s"}
    assert elapsed < 20  # two lookup timeouts at most (40 hung names, 32 threads), plus start-up


@pytest.mark.integration
def test_watch_redraws_and_ctrl_c_leaves_the_terminal_clean(inventory: Path, tmp_path: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: fleetctl on a real terminal
        os.environ.update(FLEETCTL_CACHE_DIR=str(tmp_path), COLUMNS="160", LINES="60", TERM="xterm")
        # as from an interactive shell: a test run started in the background inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(FLEETCTL, [FLEETCTL, "health", "-i", str(inventory), "all:!hostile", "--watch", "0.5"])
    output = b""
    deadline = time.monotonic() + 60
    while output.count(b"6 hosts:") < 2 and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                output += os.read(fd, 65536)
            except OSError:
                break
    assert output.count(b"6 hosts:") >= 2, output[-2000:]  # at least two rounds drawn
    os.kill(pid, signal.SIGINT)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1  # the last round saw an unhealthy host
    assert b"Traceback" not in output and b"KeyboardInterrupt" not in output
    assert output.rstrip().endswith(b"\x1b[?25h") or b"\x1b[?25h" in output[-200:]  # cursor shown again


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "serve":
    asyncio.run(_serve(int(sys.argv[2])))
