"""playbooks/verify.yml, the gate at the end of site.yml, run for real against real agents.

``ansible-playbook playbooks/verify.yml`` runs with ``ansible_connection=local`` hosts whose
``fleet_agent_port`` points at the agents of one ``fleet-agent sim-fleet`` process (bearer token
required): healthy and degraded hosts pass; an unhealthy one, one whose chips cannot be read
(unknown), one with no agent listening and one without the token fail, each with its reason,
while the others carry on. The token is sent (the agents refuse requests without it) and never
printed, even at -vvv.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import AgentProcess, _port_free, _spawn, free_port_block, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "verify.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
# This test's own port range (other suites use others on this machine).
PORT_LO, PORT_HI = 34000, 34999

# Host i of the fleet is gpu-000i. The hang keeps chip 1 of host 2 without a fresh reading.
SCENARIO = """
hosts: 4
groups:
  - {name: gpu, kind: gpu, model: H100-SXM5-80GB, chips: 2, count: 4}
faults:
  - {kind: ecc_uncorrectable, group: gpu, hosts: [1], chips: [0], count: 2}
  - {kind: hang, group: gpu, hosts: [2], chips: [1], seconds: 3600}
  - {kind: pcie_downgrade, group: gpu, hosts: [3], chips: [0], gen: 4, width: 16}
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[AgentProcess, str]]:
    """Four simulated agents on consecutive ports that require a bearer token."""
    token = "verify-" + secrets.token_hex(16)
    scenario = tmp_path / "fleet.yaml"
    scenario.write_text(SCENARIO)
    config = tmp_path / "agent.yaml"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config.write_text(yaml.safe_dump({"token_file": str(token_file)}))
    started: list[AgentProcess] = []
    try:
        agents = _start_fleet(tmp_path, scenario, config, started)
        # Every agent has a first sample and its verdict (the hang needs one sample to show).
        for i in range(4):
            wait_until(_answers(agents, i, token), 30, f"agent {i} serving", agents)
        wait_until(lambda: agents.get("/v1/node", host=2, token=token).json()["status"] == "unknown",
                   30, "the hung chip's host reported unknown", agents)
        yield agents, token
    finally:
        for a in started:
            a.stop()


def _start_fleet(tmp_path: Path, scenario: Path, config: Path, started: list[AgentProcess]) -> AgentProcess:
    for _attempt in range(3):
        base = free_port_block(4, PORT_LO, PORT_HI)
        workdir = tmp_path / f"fleet-{base}"
        workdir.mkdir()
        argv = ["sim-fleet", "--hosts", "4", "--base-port", str(base), "--scenario", str(scenario),
                "--interval", "3", "--config", str(config)]
        proc, out, err = _spawn(argv, workdir, "sim-fleet")
        agents = AgentProcess(proc, base, workdir, out, err, hosts=4)
        started.append(agents)
        try:
            wait_until(_ready(agents), 60, "sim-fleet ready", agents)
        except AssertionError:
            # A port of the block was taken between our check and the bind (this range is also
            # the kernel's ephemeral range): try another block.
            if agents.proc.poll() == 2 and "cannot listen" in agents.stderr():
                continue
            raise
        return agents
    raise AssertionError(f"sim-fleet found no free block of 4 ports in {PORT_LO}-{PORT_HI}")


def _ready(agents: AgentProcess) -> Callable[[], bool]:
    return lambda: "ready:" in agents.stdout()


def _answers(agents: AgentProcess, host: int, token: str) -> Callable[[], bool]:
    return lambda: agents.get("/v1/node", host=host, token=token).status == 200


def closed_port(taken: range) -> int:
    """A port in this test's range with nothing listening (and outside the fleet's block)."""
    for port in range(PORT_HI, PORT_LO, -1):
        if port not in taken and _port_free(port):
            return port
    raise AssertionError("no free port for the unreachable host")


def write_inventory(tmp_path: Path, agents: AgentProcess, token: str) -> Path:
    # ansible_host: where fleetctl reaches each agent, and so where the role makes it listen.
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
             "ansible_host": "127.0.0.1"}
    hosts: dict[str, dict[str, Any]] = {
        "gpu-healthy": {"fleet_agent_port": agents.port},
        "gpu-ecc": {"fleet_agent_port": agents.port + 1},
        "gpu-hung": {"fleet_agent_port": agents.port + 2},
        "gpu-degraded": {"fleet_agent_port": agents.port + 3},
        "gpu-noagent": {"fleet_agent_port": closed_port(range(agents.port, agents.port + 4))},
        # The healthy host's agent, asked without the token.
        "gpu-notoken": {"fleet_agent_port": agents.port, "fleet_agent_token": ""},
    }
    inventory = {"all": {
        "hosts": {name: {**local, **hv} for name, hv in hosts.items()},
        # Short waits for a first sample: these agents have one already.
        "vars": {"fleet_agent_token": token, "fleet_verify_retries": 2, "fleet_verify_delay": 1},
    }}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    path.chmod(0o600)
    return path


def run_verify(tmp_path: Path, inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    # The repository's ansible.cfg (as `ansible-playbook` from the checkout uses it), with its
    # relative fact cache under this test's directory.
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), HOME=str(tmp_path), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    rows = re.findall(r"^(\S+)\s+: ((?:\w+=\d+\s*)+)$", stdout, re.MULTILINE)
    return {host: {k: int(v) for k, v in (kv.split("=") for kv in counts.split())} for host, counts in rows}


def problem_messages(agents: AgentProcess, host: int, token: str) -> list[str]:
    report = agents.get("/v1/node", host=host, token=token).json()
    return [p["message"] for chip in report["chips"] for p in chip["problems"]] + [
        p["message"] for p in report["problems"]]


def test_verify_play_fails_bad_hosts_with_their_reason_and_passes_the_rest(
        tmp_path: Path, fleet: tuple[AgentProcess, str]) -> None:
    agents, token = fleet
    inventory = write_inventory(tmp_path, agents, token)
    assert agents.get("/v1/node", host=3, token=token).json()["status"] == "degraded"

    result = run_verify(tmp_path, inventory, "-vvv")
    out = result.stdout + result.stderr

    # Some hosts failed: ansible-playbook exits 2.
    assert result.returncode == 2, out
    counts = recap(result.stdout)
    passing = {"gpu-healthy", "gpu-degraded"}
    failing = {"gpu-ecc", "gpu-hung", "gpu-noagent", "gpu-notoken"}
    assert set(counts) == passing | failing, out
    # Every host ran to the end of the play or to its own failure: none stopped another.
    assert {h for h, c in counts.items() if c["failed"] == 0} == passing, out
    assert {h for h, c in counts.items() if c["failed"] == 1} == failing, out
    assert all(c["unreachable"] == 0 for c in counts.values())
    assert re.search(r"gpu-healthy: healthy, 2 chips of 2", out), out
    assert re.search(r"gpu-degraded: degraded, 2 chips of 2", out), out

    # The failures say why, with the agents' own problem messages.
    ecc = problem_messages(agents, 1, token)
    assert ecc and all(m in out for m in ecc), out
    assert "gpu-ecc: unhealthy - " in out
    hung = problem_messages(agents, 2, token)
    assert "gpu-hung: unknown - " in out and all(m in out for m in hung), out
    port = yaml.safe_load(inventory.read_text())["all"]["hosts"]["gpu-noagent"]["fleet_agent_port"]
    noagent = rf"gpu-noagent: agent at 127\.0\.0\.1:{port} did not answer /v1/node \(HTTP -1: .*refused"
    assert re.search(noagent, out), out
    notoken = (rf"gpu-notoken: agent at 127\.0\.0\.1:{agents.port} did not answer /v1/node "
               r"\(HTTP 401: .*check fleet_agent_token")
    assert re.search(notoken, out), out

    # The token went out (gpu-healthy passed where gpu-notoken was refused) and never came back.
    assert token not in out
    assert token[len("verify-"):] not in out


def test_verify_play_passes_a_healthy_fleet(tmp_path: Path, fleet: tuple[AgentProcess, str]) -> None:
    agents, token = fleet
    inventory = write_inventory(tmp_path, agents, token)
    # Only the hosts that should pass: the run exits 0 (a rolling run carries on).
    result = run_verify(tmp_path, inventory, "--limit", "gpu-healthy,gpu-degraded")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = recap(result.stdout)
    assert set(counts) == {"gpu-healthy", "gpu-degraded"}
    assert all(c["failed"] == 0 and c["ok"] >= 3 for c in counts.values()), result.stdout
    assert json.dumps(token) not in result.stdout and token not in result.stdout
