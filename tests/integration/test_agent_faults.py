"""The real agent process under faults: a hung NVML call, hostile HTTP clients, bad config."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fleet_agent.schema import Action, Severity, Status, parse_node_report

if TYPE_CHECKING:
    from conftest import AgentProcess

pytestmark = pytest.mark.integration

FLEET_AGENT = str(Path(sys.executable).with_name("fleet-agent"))


def _scenario(tmp_path: Path, faults: str) -> str:
    p = tmp_path / "scenario.yaml"
    p.write_text("groups:\n  - {name: gpu, kind: gpu, model: A100-SXM4-80GB, chips: 4, count: 1}\n"
                 f"faults:\n{faults}")
    return str(p)


def test_hung_chip_is_unknown_and_stale_while_healthz_answers(
        start_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    # Chip 2's NVML calls block from the start for 12 s, then return (a wedged, then recovered driver).
    scen = _scenario(tmp_path, "  - {kind: hang, group: gpu, hosts: [0], chips: [2], seconds: 12}\n")
    agent = start_agent({"simulation": {"scenario": scen}, "interval_s": 2, "collector_timeout_s": 1})
    agent.wait_for(lambda: parse_node_report(agent.get("/v1/node").json()).chips[2].stale, 20,
                   "chip 2 to be reported hung")
    # Throughout the hang, every 0.2 s (a sampling pace, nothing waits on it): /healthz and /v1/node
    # answer, chip 2 stays unknown and stale with the timeout named, the other chips healthy, and the
    # sampler keeps producing new reports (a hung call does not hold up the samples after it).
    during: list[float] = []
    recovered = None
    for _ in range(150):  # 30 s at most; the hang ends by itself 12 s after the agent started
        assert agent.get("/healthz", timeout=2).status == 200
        report = parse_node_report(agent.get("/v1/node", timeout=2).json())
        hung = report.chips[2]
        if not hung.stale:
            recovered = report
            break
        assert hung.status is Status.UNKNOWN and hung.error == "NVML call timed out after 1.0s"
        assert [c.status for i, c in enumerate(report.chips) if i != 2] == [Status.HEALTHY] * 3
        assert report.status is Status.UNKNOWN
        during.append(report.sampled_at)
        if len(during) == 1:
            assert 'fleet_chip_stale{chip="2"' in agent.get("/metrics").body.decode()
        time.sleep(0.2)
    assert recovered is not None, "chip 2 never recovered"
    assert len(during) >= 10, f"the hang was sampled {len(during)} times only"
    assert len(set(during)) >= 2, "no new report was made while the call hung"
    # Once the call returns, the next sample clears it.
    assert recovered.chips[2].status is Status.HEALTHY and recovered.chips[2].error is None
    assert recovered.status is Status.HEALTHY


@pytest.mark.parametrize(("fault", "said", "action"), [
    ("driver_missing", "NVML library not found", Action.UPDATE_SOFTWARE),
    ("driver_not_loaded", "NVIDIA driver not loaded", Action.REBOOT),
    ("driver_mismatch", "NVIDIA driver/library version mismatch", Action.REBOOT),
])
def test_a_broken_driver_is_a_named_problem_not_fatal(start_agent: Callable[..., AgentProcess],
                                                      tmp_path: Path, fault: str, said: str,
                                                      action: Action) -> None:
    scen = _scenario(tmp_path, f"  - {{kind: {fault}, group: gpu, hosts: [0]}}\n")
    agent = start_agent({"simulation": {"scenario": scen}, "interval_s": 1, "collector_timeout_s": 0.5})
    report = parse_node_report(agent.get("/v1/node").json())
    # None of the 4 expected GPUs is visible, and the driver is named as the reason, first.
    assert report.chips == [] and report.status is Status.UNHEALTHY
    assert [p.check for p in report.problems] == ["driver", "chip_count"]
    driver = report.problems[0]
    assert (driver.severity, driver.action) == (Severity.CRITICAL, action)
    assert driver.message.startswith(said)
    nvml = next(c for c in report.collectors if c.name == "nvml")
    assert not nvml.ok and nvml.error is not None and nvml.error.startswith(said)
    # The agent keeps running and trying: still up, still serving.
    assert 'fleet_collector_up{collector="nvml"} 0.0' in agent.get("/metrics").body.decode()
    assert agent.get("/healthz", timeout=2).status == 200


def _raw(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def test_malformed_requests_get_4xx_or_close(start_agent: Callable[..., AgentProcess],
                                             tmp_path: Path) -> None:
    scen = _scenario(tmp_path, "  []\n")
    agent = start_agent({"simulation": {"scenario": scen}, "interval_s": 1, "collector_timeout_s": 0.5,
                         "request_timeout_s": 2})
    # Half-open connections held during everything else: they must not block anyone.
    idle = [socket.create_connection(("127.0.0.1", agent.port), timeout=10) for _ in range(3)]
    idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a partial request, never finished
    try:
        assert _raw(agent.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _raw(agent.port, b"GET /healthz\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _raw(agent.port, b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n").startswith(b"HTTP/1.1 400")
        big = _raw(agent.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 65536 + b"\r\n\r\n")
        assert big == b"" or big.startswith(b"HTTP/1.1 431")
        assert agent.get("/nope").status == 404
        assert agent.get("/v1/node", method="DELETE").status == 405
        assert agent.get("/metrics", method="POST").status == 405
        assert agent.get("/healthz", timeout=2).status == 200
        # The partial request is dropped once request_timeout_s has passed.
        idle[0].settimeout(10)
        assert idle[0].recv(100) == b""
    finally:
        for s in idle:
            s.close()
    assert agent.alive()
    assert agent.get("/healthz", timeout=2).status == 200


@pytest.mark.parametrize(("config", "message"), [
    ("interval_s: 0\n", "config.yaml: interval_s: expected a positive number"),
    ("listen: 0.0.0.0\n", "config.yaml: listen: unknown key"),
    ("health: {no_such_threshold: 1}\n", "config.yaml: health.no_such_threshold: unknown key"),
    ("simulation: {scenario: /nonexistent/s.yaml}\n", "/nonexistent/s.yaml: cannot read"),
])
def test_bad_config_exits_2_with_one_line(tmp_path: Path, config: str, message: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    proc = subprocess.run([FLEET_AGENT, "run", "--config", str(cfg)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        scen = _scenario(tmp_path, "  []\n")
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"port: {port}\nsimulation: {{scenario: {scen}}}\n")
        proc = subprocess.run([FLEET_AGENT, "run", "--config", str(cfg)], capture_output=True, text=True,
                              timeout=30)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
