"""Chip and host collectors, one module each (nvml, tpu, host), behind ``base.ChipCollector``."""
