"""Simulated chips below the real collectors: a fake pynvml, a fake TPU runtime, from a scenario.

>>> sc = load_scenario(builtin_scenario("demo"))
>>> host = sc.host(0)          # HostSim: .name .kind .nvml .tpu_metrics .tpu_presence
>>> collector = host.collector()
"""

from fleet_agent.sim.scenario import (
    FAULT_KINDS,
    FaultSpec,
    GroupSpec,
    Scenario,
    ScenarioError,
    builtin_scenario,
    load_scenario,
    parse_scenario,
)

__all__ = ["FAULT_KINDS", "FaultSpec", "GroupSpec", "Scenario", "ScenarioError", "builtin_scenario",
           "load_scenario", "parse_scenario"]
