"""health_config_from_dict: defaults, conversions, and a one-line error naming health.<key>."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_agent.health import CHECK_NAMES, HealthConfig
from fleet_agent.health.config import health_config_from_dict as _from_dict
from fleet_agent.schema import Severity


def health_config_from_dict(doc: Any) -> HealthConfig:
    # The agent passes the registry's check names; so do these tests.
    return _from_dict(doc, known_checks=CHECK_NAMES)


def test_empty_and_missing_give_the_defaults() -> None:
    assert health_config_from_dict({}) == HealthConfig()
    assert health_config_from_dict(None) == HealthConfig()


def test_defaults_are_the_documented_ones() -> None:
    cfg = HealthConfig()
    assert cfg.expected_chips is None
    assert cfg.stale_threshold_s(5.0) == 15.0
    assert cfg.throttle_reasons["hw_thermal"] is Severity.WARNING
    assert cfg.throttle_reasons["sw_power_cap"] is Severity.INFO
    assert cfg.xid_window_s == 3600.0


def test_a_full_yaml_section_converts() -> None:
    doc = yaml.safe_load("""
expected_chips: 8
stale_after_s: 20
temperature_margin_c: 3.5
default_slowdown_temp_c: {gpu: 85, tpu: 80}
default_shutdown_temp_c: {gpu: 90}
memory_temperature_max_c: 90
xid_window_s: 600
xid_severity_overrides: {13: critical, "45": warning}
throttle_reasons: {hw_thermal: critical, sw_power_cap: warning}
pcie_check_width: false
pcie_gen_min_utilization_pct: 80
ecc_volatile_uncorrected_max: 2
disabled_checks: [pcie_link, nvlink]
""")
    cfg = health_config_from_dict(doc)
    assert cfg.expected_chips == 8
    assert cfg.stale_threshold_s(5.0) == 20.0
    assert cfg.temperature_margin_c == 3.5
    assert cfg.default_slowdown_temp_c == {"gpu": 85.0, "tpu": 80.0}
    assert cfg.default_shutdown_temp_c == {"gpu": 90.0}
    assert cfg.xid_severity_overrides == {13: Severity.CRITICAL, 45: Severity.WARNING}
    assert cfg.throttle_reasons == {"hw_thermal": Severity.CRITICAL, "sw_power_cap": Severity.WARNING}
    assert cfg.pcie_check_width is False
    assert cfg.pcie_gen_min_utilization_pct == 80.0
    assert cfg.ecc_volatile_uncorrected_max == 2
    assert cfg.disabled_checks == frozenset({"pcie_link", "nvlink"})


def test_every_field_is_accepted_by_the_loader() -> None:
    # The loader has a converter for every field: a field added without one fails here.
    defaults = HealthConfig()
    for f in dataclasses.fields(HealthConfig):
        value: Any = getattr(defaults, f.name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, dict):
            value = {k: (v.value if isinstance(v, Severity) else v) for k, v in value.items()}
        assert getattr(health_config_from_dict({f.name: value}), f.name) == getattr(defaults, f.name)


@pytest.mark.parametrize(("doc", "error"), [
    ({"expected_chip": 8}, "health.expected_chip: unknown key"),
    ({"expected_chips": "8"}, "health.expected_chips: expected an integer, got str"),
    ({"expected_chips": True}, "health.expected_chips: expected an integer, got bool"),
    ({"expected_chips": -1}, "health.expected_chips: must be >= 0"),
    ({"stale_after_s": 0}, "health.stale_after_s: must be > 0"),
    ({"stale_after_s": "30s"}, "health.stale_after_s: expected a number, got str"),
    ({"temperature_margin_c": -2}, "health.temperature_margin_c: must be >= 0"),
    ({"xid_window_s": 0}, "health.xid_window_s: must be > 0"),
    ({"pcie_gen_min_utilization_pct": 101}, "health.pcie_gen_min_utilization_pct: must be <= 100"),
    ({"default_slowdown_temp_c": [85]}, "health.default_slowdown_temp_c: expected a mapping"),
    ({"default_slowdown_temp_c": {"gpu": "hot"}}, "health.default_slowdown_temp_c.gpu: expected a number"),
    ({"xid_severity_overrides": {"x13": "critical"}}, "health.xid_severity_overrides: XID code must be"),
    ({"xid_severity_overrides": {13: "fatal"}}, "health.xid_severity_overrides.13: 'fatal' is not one of"),
    ({"throttle_reasons": {"hw_warm": "warning"}}, "health.throttle_reasons: unknown throttle reason"),
    ({"throttle_reasons": {"hw_thermal": 2}}, "health.throttle_reasons.hw_thermal: 2 is not one of"),
    ({"pcie_check_width": "yes"}, "health.pcie_check_width: expected true or false"),
    ({"ecc_volatile_uncorrected_max": 0.5}, "health.ecc_volatile_uncorrected_max: expected an integer"),
    ({"disabled_checks": "xid"}, "health.disabled_checks: expected a list"),
    ({"disabled_checks": ["xid", "tempreature"]}, "health.disabled_checks: unknown check 'tempreature'"),
    (["expected_chips"], "health: expected a mapping, got list"),
])
def test_bad_input_names_the_key(doc: Any, error: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        health_config_from_dict(doc)
    message = str(excinfo.value)
    assert message.startswith(error), message
    assert "\n" not in message


def test_disabled_checks_accepts_every_registered_name() -> None:
    cfg = health_config_from_dict({"disabled_checks": sorted(CHECK_NAMES)})
    assert cfg.disabled_checks == CHECK_NAMES


def test_the_config_module_does_not_import_the_checks() -> None:
    # One-way: the checks import the config; the config takes the check names from its caller.
    import fleet_agent.health.config as config_module

    tree = ast.parse(Path(config_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not {m for m in imported if m and m.startswith("fleet_agent.health")}, imported


def test_known_checks_limit_what_may_be_disabled() -> None:
    with pytest.raises(ValueError, match="unknown check 'xid'"):
        _from_dict({"disabled_checks": ["xid"]}, known_checks=frozenset({"stale"}))
