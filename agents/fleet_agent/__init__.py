"""fleet-agent: samples accelerator chips, judges their health, serves JSON and Prometheus metrics."""

__version__ = "0.1.0"
