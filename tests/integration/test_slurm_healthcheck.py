"""``fleet-agent check --slurm`` as a real slurmd's HealthCheckProgram, over simulated hosts.

The cluster is slurm_cluster's (slurmctld + node1..node3 on 127.0.0.1), on this module's own ports
(37xxx: it may run beside the other Slurm tests' cluster) and with a HealthCheckProgram that slurmd
runs every few seconds on every node. That program is a small wrapper, as the fleet_agent role
installs one: it runs ``fleet-agent check --slurm`` over the scenario file named after the node
slurmd says it runs for ($SLURMD_NODENAME), so a test fails a node's chip by swapping its file.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slurm_cluster import ClusterOptions, SlurmCluster, slurm, slurm_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

AGENT = Path(sys.executable).with_name("fleet-agent")
HC_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / f"fleet-agent-hc-{os.getpid()}"
INTERVAL_S = 3

HOST = """\
seed: 9
groups:
  - {name: gpu, count: 1, kind: gpu, model: H100-SXM5-80GB, chips: 2,
     load: {base_pct: 30, amplitude_pct: 0, period_s: 600, memory_used_pct: 30}}
"""
HEALTHY = HOST + "faults: []\n"
GPU_LOST = HOST + "faults: [{kind: gpu_lost, group: gpu, hosts: [0], chips: [0]}]\n"

SLURM_OPTIONS = ClusterOptions(
    ctld_port=37817,
    node_ports=(37001, 37002, 37003),
    extra_conf=(f"HealthCheckProgram={HC_DIR}/fleet-agent-healthcheck\n"
                f"HealthCheckInterval={INTERVAL_S}\n"
                "HealthCheckNodeState=ANY\n"),
)


def _set_scenario(node: str, text: str) -> None:
    """Swap a node's scenario in one step: a check never reads a half-written file."""
    tmp = HC_DIR / f".{node}.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, HC_DIR / f"{node}.yaml")


def _runs(node: str) -> int:
    path = HC_DIR / f"{node}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _output(node: str) -> str:
    path = HC_DIR / f"{node}.out"
    return path.read_text(errors="replace") if path.exists() else "(no output)"


@pytest.fixture(scope="module", autouse=True)
def healthcheck_program() -> Iterator[None]:
    """The wrapper slurmd runs (it must exist before the cluster starts: slurmd runs it once before
    it registers), every node healthy to begin with."""
    HC_DIR.mkdir(mode=0o755)
    for node in ("node1", "node2", "node3"):
        _set_scenario(node, HEALTHY)
    wrapper = HC_DIR / "fleet-agent-healthcheck"
    # slurmd gives the program an almost empty environment (SLURMD_NODENAME): set what it needs.
    # scontrol finds the cluster through SLURM_CONF, whose path is known once the cluster made its
    # directory; until then (slurmd's first run) there is nothing to check against.
    wrapper.write_text(f"""#!/bin/sh
[ -s {HC_DIR}/slurm_conf_path ] || exit 0
PATH={AGENT.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SLURM_CONF=$(cat {HC_DIR}/slurm_conf_path)
export PATH SLURM_CONF
echo run >> "{HC_DIR}/$SLURMD_NODENAME.runs"
exec {AGENT} check --slurm --scenario "{HC_DIR}/$SLURMD_NODENAME.yaml" >> "{HC_DIR}/$SLURMD_NODENAME.out" 2>&1
""")
    wrapper.chmod(0o755)
    try:
        yield
    finally:
        for path in sorted(HC_DIR.iterdir()):
            path.unlink()
        HC_DIR.rmdir()


@pytest.fixture(scope="module", autouse=True)
def cluster_conf_known(healthcheck_program: None, slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    (HC_DIR / "slurm_conf_path").write_text(str(slurm_cluster.conf))


def wait_for(check: Callable[[], bool], what: str, explain: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{explain()}")


def reason(cluster: SlurmCluster, node: str) -> str:
    show = cluster.run(["scontrol", "show", "node", "-o", node]).stdout
    return show.partition(" Reason=")[2].strip()


def test_a_failing_chip_drains_the_node_with_the_checks_reason_and_recovery_resumes_it(
        slurm: SlurmCluster) -> None:  # noqa: F811
    _set_scenario("node2", GPU_LOST)
    wait_for(lambda: slurm.node_state("node2") == "drain", "node2 drained by its health check",
             lambda: _output("node2"))
    assert reason(slurm, "node2").startswith("fleet-agent: gpu0 gpu_lost: GPU fell off the bus")
    assert "slurm: node2: drained (Reason=fleet-agent: gpu0 gpu_lost:" in _output("node2")
    assert slurm.node_state("node1") == "idle" and slurm.node_state("node3") == "idle"

    # Still unhealthy at the next runs: the drain stays, its reason untouched.
    runs = _runs("node2")
    wait_for(lambda: _runs("node2") >= runs + 2, "two more checks on node2", lambda: _output("node2"))
    assert slurm.node_state("node2") == "drain"

    _set_scenario("node2", HEALTHY)
    wait_for(lambda: slurm.node_state("node2") == "idle", "node2 resumed once healthy",
             lambda: _output("node2"))
    assert "slurm: node2: resumed" in _output("node2")


def test_healthy_nodes_stay_idle_and_a_drain_set_by_someone_else_stays(slurm: SlurmCluster) -> None:  # noqa: F811
    slurm.run(["scontrol", "update", "NodeName=node3", "State=DRAIN", "Reason=bob: swapping PSU"])
    runs = {node: _runs(node) for node in ("node1", "node3")}
    wait_for(lambda: all(_runs(n) >= runs[n] + 2 for n in runs), "two checks on node1 and node3",
             lambda: _output("node1") + _output("node3"))
    assert slurm.node_state("node1") == "idle"
    assert slurm.node_state("node3") == "drain"
    assert reason(slurm, "node3").startswith("bob: swapping PSU")
