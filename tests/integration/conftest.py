"""Shared fixtures for integration tests: real ``fleet-agent`` processes on loopback ports.

``start_agent(config)`` runs ``fleet-agent run`` with a YAML config written from a dict, on a free
port, and returns once the first sample is served. ``start_sim_fleet(hosts=...)`` runs
``fleet-agent sim-fleet`` and returns once it printed ``ready:``. Both stop their processes (SIGTERM,
then SIGKILL) at the end of the test and show the process's stderr when it fails to start.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

FLEET_AGENT = Path(sys.executable).with_name("fleet-agent")
# The port range integration tests may use (others run beside us on this machine).
PORT_LO, PORT_HI = 18500, 18699


def free_port() -> int:
    """A currently free loopback port (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(n: int, lo: int = PORT_LO, hi: int = PORT_HI) -> int:
    """The first port P in [lo, hi] such that P .. P+n-1 are all free now."""
    p = lo
    while p + n - 1 <= hi:
        bad = next((q for q in range(p, p + n) if not _port_free(q)), None)
        if bad is None:
            return p
        p = bad + 1
    raise RuntimeError(f"no {n} consecutive free ports in {lo}-{hi}")


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def http_get(port: int, path: str, *, token: str | None = None, method: str = "GET",
             timeout: float = 5.0) -> HttpReply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return HttpReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


@dataclass
class AgentProcess:
    """A running fleet-agent process; ``port`` is its (first) port."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    stdout_path: Path
    stderr_path: Path
    config_path: Path | None = None
    hosts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, *, host: int = 0, token: str | None = None, method: str = "GET",
            timeout: float = 5.0) -> HttpReply:
        return http_get(self.port + host, path, token=token, method=method, timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fails with the agent's stderr if it exits or times out."""
        wait_until(predicate, timeout, what, self)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def _spawn(argv: list[str], workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    if not FLEET_AGENT.exists():
        raise RuntimeError(f"{FLEET_AGENT} is missing: install the agent (pip install -e ./agents)")
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(FLEET_AGENT), *argv], stdout=out.open("wb"), stderr=err.open("wb"),
                            stdin=subprocess.DEVNULL, env=env, cwd=workdir)
    return proc, out, err


def interrupt(proc: subprocess.Popen[Any], timeout: float) -> tuple[Any, Any]:
    """Ctrl-C to ``proc`` (SIGINT), then its remaining output. A process still running ``timeout``
    seconds later is killed, so a failing test leaves nothing behind, and the test fails saying so."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child of its own may hold the pipes
            proc.communicate(timeout=10)
        raise AssertionError(f"{' '.join(map(str, proc.args))[:200]} still ran {timeout:g} s after "
                             f"Ctrl-C: killed") from None


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               proc: AgentProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise AssertionError(f"fleet-agent exited ({proc.proc.returncode}) while waiting for "
                                 f"{what}:\n{proc.stderr()}")
        try:
            if predicate():
                return
        # HTTPException too: before the agent listens, a connection to a port in the ephemeral range
        # can connect to itself (Linux gave it that port as its source) and read its own request back
        # ("BadStatusLine: GET /v1/node HTTP/1.1", seen in CI): not an answer, poll again.
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    detail = f"\nstderr:\n{proc.stderr()}" if proc is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: ``start_agent({"simulation": {...}, ...}, token=None)`` -> a served AgentProcess.

    The config dict is written as YAML; ``port`` defaults to a free one and ``listen_address`` to
    127.0.0.1. ``wait`` (default True) waits until ``/v1/node`` answers 200 (a first sample);
    ``token`` is the one to wait with when the config reads it from ``token_file``.
    """
    started: list[AgentProcess] = []

    def start(config: dict[str, Any] | None = None, *, wait: bool = True, token: str | None = None,
              ready_timeout: float = 30.0) -> AgentProcess:
        fixed_port = config is not None and "port" in config
        for attempt in range(3):
            cfg = dict(config or {})
            cfg.setdefault("port", free_port())
            cfg.setdefault("listen_address", "127.0.0.1")
            workdir = tmp_path / f"agent{len(started)}"
            workdir.mkdir()
            cfg_path = workdir / "config.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            proc, out, err = _spawn(["run", "--config", str(cfg_path)], workdir, "agent")
            agent = AgentProcess(proc, int(cfg["port"]), workdir, out, err, cfg_path)
            started.append(agent)
            if not wait:
                return agent
            auth = token or cfg.get("token")
            try:
                wait_until(_serves_node(agent, auth), ready_timeout, f"agent on port {agent.port}", agent)
            except AssertionError:
                if not fixed_port and _port_taken(agent) and attempt < 2:
                    continue  # the free port was taken between our check and the agent's bind
                raise
            return agent
        raise AssertionError("unreachable")

    yield start
    for a in started:
        a.stop()


def _serves_node(agent: AgentProcess, token: str | None) -> Callable[[], bool]:
    return lambda: agent.get("/v1/node", token=token, timeout=1).status == 200


def _printed_ready(fleet: AgentProcess) -> Callable[[], bool]:
    return lambda: "ready:" in fleet.stdout()


def _port_taken(agent: AgentProcess) -> bool:
    """The process exited because its port was taken meanwhile (worth a retry on another)."""
    return agent.proc.poll() == 2 and "cannot listen" in agent.stderr()


@pytest.fixture
def start_sim_fleet(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: ``start_sim_fleet(hosts=3, scenario="demo", args=[...], inventory=True)``.

    Returns once the process printed ``ready:``; ``extra["inventory"]`` is the inventory path.
    """
    started: list[AgentProcess] = []

    def start(hosts: int = 3, *, scenario: str = "demo", args: list[str] | None = None,
              inventory: bool = True, ready_timeout: float = 60.0) -> AgentProcess:
        for attempt in range(3):
            base = free_port_block(hosts)
            workdir = tmp_path / f"fleet{len(started)}-{attempt}"
            workdir.mkdir()
            argv = ["sim-fleet", "--hosts", str(hosts), "--base-port", str(base), "--scenario", scenario,
                    *(args or [])]
            inv = workdir / "inventory.yml"
            if inventory:
                argv += ["--write-inventory", str(inv)]
            proc, out, err = _spawn(argv, workdir, "sim-fleet")
            fleet = AgentProcess(proc, base, workdir, out, err, hosts=hosts,
                                 extra={"inventory": inv if inventory else None})
            started.append(fleet)
            try:
                wait_until(_printed_ready(fleet), ready_timeout, "sim-fleet ready", fleet)
            except AssertionError:
                # Another process took one of the ports between our check and the bind: retry.
                if _port_taken(fleet) and attempt < 2:
                    continue
                raise
            return fleet
        raise AssertionError("unreachable")

    yield start
    for f in started:
        f.stop()


# --- sshd containers (the SSH tests of provision and maintain) ----------------------------------

TEST_IMAGE = "fleetctl/debian12-systemd:latest"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


def require_test_image(image: str = TEST_IMAGE) -> None:
    """Fail (never skip) when Docker or the locally built test image is missing."""
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("the SSH lab needs a running Docker daemon (scripts/system-deps.sh)", pytrace=False)
    if docker("image", "inspect", image, check=False).returncode != 0:
        pytest.fail(f"image {image} is missing: run tests/images/build.sh", pytrace=False)


def ssh_answers(port: int) -> bool:
    """True once an SSH server sends its banner on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False
