"""fleet_agent.daemon: the production agent stands alone (no simulator imported), and takes chips
that are not this host's through the ChipSource interface."""

from __future__ import annotations

import ast
import concurrent.futures as cf
import json
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import fleet_agent
import pytest
from fleet_agent.collectors.base import ChipIdentity, CollectorError
from fleet_agent.config import AgentConfig
from fleet_agent.daemon import (
    RESERVED_FDS,
    ChipSource,
    XidEvents,
    build_agent,
    chip_collectors,
    fit_connection_cap,
)
from fleet_agent.schema import ChipReport, HostMetrics, Status
from fleet_agent.server import render_summary_json

PACKAGE = Path(fleet_agent.__file__).parent


def test_the_run_code_path_imports_no_simulator() -> None:
    code = (
        "import sys\n"
        "import fleet_agent.cli, fleet_agent.daemon\n"
        "from fleet_agent.daemon import run_agent, build_agent, serve_until_stopped\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m == 'fleet_agent.sim' or m.startswith('fleet_agent.sim.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", [
    PACKAGE / "daemon.py",
    PACKAGE / "check.py",
    PACKAGE / "server.py",
    PACKAGE / "sampler.py",
    PACKAGE / "metrics.py",
    *sorted((PACKAGE / "collectors").glob("*.py")),
], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_production_modules_never_import_the_simulator(path: Path) -> None:
    sim = {m for m in _imports(path) if m == "fleet_agent.sim" or m.startswith("fleet_agent.sim.")}
    assert not sim, f"{path.name} imports {sorted(sim)}"


# --- a chip source that is not this host's ----------------------------------------------------------


class OneChip:
    """A ChipCollector with one chip that always reads 40 C."""

    name = "nvml"

    def __init__(self) -> None:
        self.chip = ChipIdentity(0, "gpu", "nvidia", "Test GPU", "GPU-0", "0000:01:00.0")

    def discover(self) -> list[ChipIdentity]:
        return [self.chip]

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        if chip != self.chip:
            raise CollectorError("no such chip")
        return ChipReport(index=0, kind="gpu", vendor="nvidia", model="Test GPU", uuid="GPU-0",
                          pci_bus_id="0000:01:00.0", temperature_c=40.0)

    def driver_version(self) -> str | None:
        return "1.0"

    def close(self) -> None:
        pass


class StubSource:
    name = "stub-0001"
    kind = "gpu"
    group = "stubs"
    chips_expected = 1

    def __init__(self) -> None:
        self.released = False
        self.xid_events: list[str] = []

    def collector(self, *, xid_events: XidEvents = "poll") -> OneChip:
        self.xid_events.append(xid_events)
        return OneChip()

    def release_hangs(self) -> None:
        self.released = True


class FixedHost:
    def collect(self) -> HostMetrics:
        return HostMetrics(load1=0.25)


@pytest.fixture
def pool() -> Iterator[cf.ThreadPoolExecutor]:
    ex = cf.ThreadPoolExecutor(max_workers=4)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


def test_an_agent_over_a_chip_source(pool: cf.ThreadPoolExecutor) -> None:
    source: ChipSource = StubSource()
    rt = build_agent(AgentConfig(), executor=pool, chips=source, host_source=FixedHost(), xid_events="poll")
    assert (rt.name, rt.group, rt.kind, rt.chips) == ("stub-0001", "stubs", "gpu", source)
    report, body, metrics, summary = rt.sample_and_render()
    assert report.host == "stub-0001" and report.chips_expected == 1
    assert report.status is Status.HEALTHY and [c.temperature_c for c in report.chips] == [40.0]
    assert body.startswith(b"{") and isinstance(metrics, bytes)
    assert b"fleet_chip_temperature_celsius" in metrics
    # A real agent renders the summary view with the sample, in this (worker) thread, as it does the rest.
    assert isinstance(summary, bytes) and summary == render_summary_json(report)
    rt.lazy_metrics = True  # sim-fleet: both on first use
    _, _, metrics, summary = rt.sample_and_render()
    assert callable(metrics) and callable(summary) and json.loads(summary())["host"] == "stub-0001"


def test_the_config_can_leave_a_chip_source_out(pool: cf.ThreadPoolExecutor) -> None:
    source = StubSource()
    assert chip_collectors(AgentConfig(collectors=("host",)), source) == []
    chosen = chip_collectors(AgentConfig(collectors=("nvml",)), source, xid_events="off")
    assert [c.name for c in chosen] == ["nvml"]
    assert source.xid_events == ["off"]


# --- the connection cap and the open-file limit -----------------------------------------------------


class FakeNofile:
    """RLIMIT_NOFILE as ``resource`` reports it; ``fixed``: raising it fails (as without privilege)."""

    def __init__(self, soft: int, hard: int, *, fixed: bool = False) -> None:
        self.soft, self.hard, self.fixed = soft, hard, fixed
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        self.calls.append(limits)
        if self.fixed:
            raise ValueError("not allowed")
        self.soft, self.hard = limits


@pytest.fixture
def nofile(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeNofile]:
    def install(soft: int, hard: int, *, fixed: bool = False) -> FakeNofile:
        fake = FakeNofile(soft, hard, fixed=fixed)
        monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
        monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
        return fake

    return install


def test_a_cap_within_the_limit_is_kept_and_the_limit_left_alone(nofile: Callable[..., FakeNofile]) -> None:
    fake = nofile(1024, 4096)
    assert fit_connection_cap(128) == (128, None)
    assert fake.calls == []


def test_the_soft_limit_is_raised_as_far_as_the_cap_needs(nofile: Callable[..., FakeNofile]) -> None:
    fake = nofile(1024, 524288)
    assert fit_connection_cap(2000) == (2000, None)
    assert fake.soft == 2000 + RESERVED_FDS and fake.hard == 524288


def test_a_cap_past_the_hard_limit_is_cut_and_said_once(nofile: Callable[..., FakeNofile]) -> None:
    fake = nofile(1024, 1500)
    cap, notice = fit_connection_cap(5000)
    assert cap == 1500 - RESERVED_FDS and fake.soft == 1500
    assert notice == (f"fleet-agent: max_connections 5000 does not fit the open-file limit (1500, "
                      f"{RESERVED_FDS} kept for the agent's own files): serving at most {cap} connections "
                      f"(raise LimitNOFILE for more)")


def test_a_limit_that_cannot_be_raised_is_what_counts(nofile: Callable[..., FakeNofile]) -> None:
    nofile(400, 4096, fixed=True)
    cap, notice = fit_connection_cap(1000)
    assert cap == 400 - RESERVED_FDS and notice is not None and f"at most {cap} " in notice
    nofile(100, 100)
    assert fit_connection_cap(1000)[0] == 1  # never zero: the agent still answers one at a time


def test_an_unlimited_limit_keeps_the_cap(nofile: Callable[..., FakeNofile]) -> None:
    fake = nofile(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    assert fit_connection_cap(100_000) == (100_000, None) and fake.calls == []
