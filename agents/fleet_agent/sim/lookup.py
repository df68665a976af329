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


def standin_host(scenario: str, *, hosts: int | None, name: str | None, index: int | None,
                 state_dir: str | None, elapsed: float = 0.0) -> tuple[HostSim, Scenario]:
    """The host a stand-in (``dcgmi``, ``nvidia-smi``) answers for, by ``name`` or ``index``.

    With ``state_dir`` (the sim fleet's, :func:`fleet_agent.sim.resets.state_dir_for`) the scenario's
    clock is the fleet's (its recorded start) and the chips honour the recorded GPU resets, so the
    stand-in sees what the fleet's agents see; without, the scenario starts now. ``elapsed`` moves
    the clock forward that many seconds."""
    import time

    from fleet_agent.sim.resets import ResetLog, SimStateError, read_start

    if hosts is not None and hosts < 1:
        raise ConfigError("--hosts: must be at least 1")
    scen = load_scenario_or_fail(scenario, hosts=hosts)

    def clock() -> float:
        return time.monotonic() + elapsed

    if state_dir is not None:
        try:
            start = read_start(Path(state_dir))
        except SimStateError as exc:
            raise ConfigError(f"--state-dir: {exc}") from None
        scen = scen.sharing(ResetLog(Path(state_dir), refresh_s=0.0), start=start, clock=clock)
    elif elapsed:
        scen = scen.sharing(None, start=scen.start, clock=clock)
    if name is not None:
        found = next((h for h in scen.hosts() if h.name == name), None)
        if found is None:
            raise ConfigError(f"--host: {name!r} is not a host of {scenario} ({len(scen)} hosts)")
        return found, scen
    if index is None or not 0 <= index < len(scen):
        raise ConfigError(f"host index {index} is outside the scenario's {len(scen)} hosts")
    return scen.host(index), scen
