"""sim-fleet's parts (fleet_agent.sim.fleet, fleet_agent.sim.inventory): the multi-agent sampling
loop, the interval for large fleets, shared host metrics, and the inventory it writes."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fleet_agent.daemon import AgentRuntime
from fleet_agent.schema import HostMetrics, NodeReport, Status
from fleet_agent.server import AgentHttp, AgentState
from fleet_agent.sim.fleet import SampleScheduler, SharedHostMetrics, fleet_interval
from fleet_agent.sim.inventory import inventory_doc, write_inventory


@pytest.fixture
def pool() -> Iterator[cf.ThreadPoolExecutor]:
    ex = cf.ThreadPoolExecutor(max_workers=8)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


class CountingSampler:
    """Stands in for Sampler in a runtime: counts calls and the most ever running at once."""

    def __init__(self, name: str, stats: dict[str, int]) -> None:
        self.hostname = name
        self.expected_chips = 8
        self.stats = stats
        self.lock = threading.Lock()

    def sample_once(self) -> NodeReport:
        with self.lock:
            self.stats["running"] += 1
            self.stats["max_running"] = max(self.stats["max_running"], self.stats["running"])
        threading.Event().wait(0.01)
        with self.lock:
            self.stats["running"] -= 1
            self.stats[self.hostname] = self.stats.get(self.hostname, 0) + 1
        return NodeReport(host=self.hostname, agent_version="0", sampled_at=0.0, interval_s=0.2,
                          status=Status.HEALTHY, chips_expected=8, chips=[], host_metrics=HostMetrics())

    def close(self) -> None:
        pass


def _runtime(name: str, stats: dict[str, int], **kw: object) -> AgentRuntime:
    state = AgentState(0.2)
    return AgentRuntime(name=name, sampler=CountingSampler(name, stats), state=state,
                        http=AgentHttp(state), lazy_metrics=True, **kw)  # type: ignore[arg-type]


def test_scheduler_samples_every_host_repeatedly_with_bounded_concurrency(
        pool: cf.ThreadPoolExecutor) -> None:
    stats = {"running": 0, "max_running": 0}
    runtimes = [_runtime(f"h{i}", stats) for i in range(5)]

    async def main() -> None:
        sched = SampleScheduler(runtimes, 0.2, pool, concurrency=2)
        task = asyncio.create_task(sched.run())
        await asyncio.wait_for(sched.first_round.wait(), 5)
        assert all(rt.state.json_body is not None for rt in runtimes)
        await asyncio.sleep(1.0)
        task.cancel()

    asyncio.run(main())
    assert stats["max_running"] <= 2
    assert all(stats[f"h{i}"] >= 3 for i in range(5)), stats
    body = runtimes[0].state.metrics_body()  # lazy: rendered on first use
    assert body is not None and b'fleet_node_status{status="healthy"} 1.0' in body


def test_fleet_interval_grows_with_the_fleet() -> None:
    assert fleet_interval(10, None, 5.0) == 5.0
    assert fleet_interval(10_000, None, 5.0) == 50.0
    assert fleet_interval(10_000, 7.0, 5.0) == 7.0


def test_shared_host_metrics_reads_once_per_max_age() -> None:
    calls = []

    class Source:
        def collect(self) -> HostMetrics:
            calls.append(1)
            return HostMetrics(load1=float(len(calls)))

    shared = SharedHostMetrics(Source(), max_age_s=60)
    assert [shared.collect().load1 for _ in range(3)] == [1.0, 1.0, 1.0]


def test_inventory_groups_and_atomic_write(tmp_path: Path) -> None:
    stats: dict[str, int] = {}
    runtimes = [_runtime("dgx-0000", stats, group="dgx", kind="gpu", port=18001),
                _runtime("v5e-0000", stats, group="tpu-v5e", kind="tpu", port=18002)]
    doc = inventory_doc(runtimes)
    assert doc["all"]["hosts"]["dgx-0000"] == {"ansible_host": "127.0.0.1", "fleet_agent_port": 18001,
                                               "fleet_agent_expected_chips": 8}
    # ansible_port 1: nothing listens there, so a play without its own connection cannot reach this machine
    assert doc["all"]["vars"] == {"ansible_port": 1}
    assert set(doc["all"]["children"]) == {"dgx", "gpu_nodes", "tpu_v5e", "tpu_nodes"}
    target = tmp_path / "inv.yml"
    target.write_text("old\n")
    write_inventory(str(target), runtimes)
    assert yaml.safe_load(target.read_text()) == doc
    assert [p.name for p in tmp_path.iterdir()] == ["inv.yml"]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o644
    assert "fleet_agent_token" not in doc["all"]["vars"]  # no token given, none written


def test_inventory_carries_the_token_and_is_private(tmp_path: Path) -> None:
    stats: dict[str, int] = {}
    runtimes = [_runtime("dgx-0000", stats, group="dgx", kind="gpu", port=18001)]
    target = tmp_path / "inv.yml"
    write_inventory(str(target), runtimes, token="s3cret")
    written = yaml.safe_load(target.read_text())["all"]["vars"]
    assert written == {"ansible_port": 1, "fleet_agent_token": "s3cret"}
    assert target.stat().st_mode & 0o777 == 0o600
