"""Finding a scenario, and a host in it, for the CLI: every failure is a one-line ConfigError."""

from __future__ import annotations

from pathlib import Path

from fleet_agent.config import ConfigError
from fleet_agent.sim.host import HostSim
from fleet_agent.sim.scenario import Scenario, ScenarioError, builtin_scenario, load_scenario


def load_scenario_or_fail(path: str, hosts: int | None = None) -> Scenario:
    try:
        return load_scenario(path, hosts=hosts)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def simulated_host(scenario: str, index: int, source: str) -> HostSim:
    """Host ``index`` of ``scenario`` (what a config's ``simulation:`` section names)."""
    scen = load_scenario_or_fail(scenario)
    if not 0 <= index < len(scen):
        raise ConfigError(f"{source}: simulation.host_index: {index} is outside the scenario's "
                          f"{len(scen)} hosts")
    return scen.host(index)


def resolve_scenario(name_or_path: str) -> Path:
    """A scenario file's path: the file itself, or a shipped scenario of that name (``demo``)."""
    path = Path(name_or_path)
    if path.exists() or "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return path
    try:
        return builtin_scenario(name_or_path)
    except ScenarioError:
        shipped = sorted(p.stem for p in builtin_scenario("demo").parent.glob("*.yaml"))
        raise ConfigError(f"--scenario: {name_or_path}: no such file, nor a shipped scenario "
                          f"({', '.join(shipped)})") from None
