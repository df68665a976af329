"""fleetctl: the controller for bare-metal accelerator fleets."""

__version__ = "0.1.0"
