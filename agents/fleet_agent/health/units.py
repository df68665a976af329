"""Small formatting helpers for problem messages."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``3600`` -> ``1h``, ``90`` -> ``90s``, ``5400`` -> ``90m``: the unit that keeps it whole."""
    whole = round(seconds)
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole >= 60 and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{seconds:g}s"


def temp(celsius: float) -> str:
    return f"{celsius:g} C"
