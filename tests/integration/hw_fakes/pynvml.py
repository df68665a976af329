"""A ``pynvml`` module over a simulated host, for tests of the real-hardware check without a GPU.

Put this directory first on PYTHONPATH: the agent's ``import pynvml`` then finds the simulator's
FakeNvml (scenario FAKE_NVML_SCENARIO, default "healthy", host FAKE_NVML_HOST, default 0) instead of
nvidia-ml-py. ``nvidia-smi`` beside it answers ``-q -x`` from the same simulated host.
"""

from __future__ import annotations

import os
from typing import Any

from fleet_agent.sim.lookup import resolve_scenario, simulated_host

_fake = simulated_host(str(resolve_scenario(os.environ.get("FAKE_NVML_SCENARIO", "healthy"))),
                       int(os.environ.get("FAKE_NVML_HOST", "0")), "FAKE_NVML_SCENARIO").nvml
NVMLError = _fake.NVMLError


def __getattr__(name: str) -> Any:
    return getattr(_fake, name)
