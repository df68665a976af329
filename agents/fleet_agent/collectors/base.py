"""The one small interface every chip collector implements.

The sampler (``fleet_agent.sampler``) calls these methods from worker threads, each call under a
deadline: a method may block (a GPU in a bad state can make NVML hang) and the sampler copes; a
method signals a failure by raising :class:`CollectorError` (or any exception) and the sampler
reports it per chip. Collectors never judge health: that is ``fleet_agent.health``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fleet_agent.schema import ChipReport


class CollectorError(RuntimeError):
    """A collector could not do what was asked; the message says why (shown per chip)."""


@dataclass(frozen=True)
class ChipIdentity:
    """What is known about a chip without sampling it: enough to list it when sampling fails."""

    index: int
    kind: str  # "gpu" | "tpu"
    vendor: str  # "nvidia" | "google"
    model: str
    uuid: str
    pci_bus_id: str


class ChipCollector(Protocol):
    """A source of chips of one kind (NVML, the TPU runtime, a simulation below either)."""

    name: str

    def discover(self) -> list[ChipIdentity]:
        """The chips present now. Raises CollectorError when the source is unusable (no driver)."""
        ...

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        """One fresh reading of ``chip``: metric fields filled, ``status``/``problems`` left alone.

        A field the chip does not support stays ``None``; a chip that is gone (fell off the bus)
        raises CollectorError with a message that says so.
        """
        ...

    def driver_version(self) -> str | None:
        ...

    def cuda_driver_version(self) -> str | None:
        """The CUDA version the driver supports ("12.2"); None where there is none (TPUs)."""
        ...

    def close(self) -> None:
        ...
