"""The XID table's functions: qualified keys (154's recovery, NVLink5's Fatal/Nonfatal), overrides,
what clears an XID, and the critical key set alert rules are built from.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

import pytest
from fleet_agent.health.xid_codes import (
    NVLINK5_CODES,
    RECOVERY_ACTIONS,
    XID_TABLE,
    clears_on,
    critical_codes,
    critical_keys,
    split_key,
    xid_info,
)
from fleet_agent.schema import Action, Severity


@pytest.mark.parametrize(("key", "parsed"), [
    ("154:node_reboot", (154, "node_reboot")),
    ("145:fatal", (145, "fatal")),
    ("48", (48, None)),
    ("154:", (154, None)),  # an empty qualifier is none
    ("007", (7, None)),
    ("", None),
    ("\uff14\uff18", None),  # fullwidth digits: int() takes them, a kernel log never prints them
    ("-1", None),
    ("48x", None),
])
def test_split_key(key: str, parsed: tuple[int, str | None] | None) -> None:
    assert split_key(key) == parsed


@pytest.mark.parametrize(("value", "name", "severity", "action", "clears"),
                         [(v, *row) for v, row in RECOVERY_ACTIONS.items()])
def test_xid_154_is_judged_by_the_recovery_its_message_names(
        value: int, name: str, severity: Severity, action: Action, clears: str) -> None:
    info = xid_info(154, qualifier=name)
    assert (info.severity, info.action, info.clears) == (severity, action, clears)
    assert info.meaning == f"the driver asks for: {name.replace('_', ' ')}"
    assert info.bucket == XID_TABLE[154].bucket and clears_on(154, name) == clears


def test_xid_154_without_a_known_recovery_keeps_its_table_entry() -> None:
    assert xid_info(154) == XID_TABLE[154] and xid_info(154, qualifier="warp_drive") == XID_TABLE[154]
    assert xid_info(154, qualifier="fatal") == XID_TABLE[154]  # NVLink5's words mean nothing to 154


def test_nvlink5_codes_take_their_verdict_from_the_message_and_keep_their_meaning() -> None:
    for code in sorted(NVLINK5_CODES):
        fatal, nonfatal = xid_info(code, qualifier="fatal"), xid_info(code, qualifier="nonfatal")
        assert (fatal.severity, fatal.action, fatal.clears) == (Severity.CRITICAL, Action.RESET_CHIP, "reset")
        assert (nonfatal.severity, nonfatal.action, nonfatal.clears) == (
            Severity.WARNING, Action.MONITOR, "window")
        assert fatal.meaning == f"{XID_TABLE[code].meaning}, fatal" and fatal.bucket == XID_TABLE[code].bucket
        assert xid_info(code, qualifier="node_reboot") == XID_TABLE[code]
    assert xid_info(143, qualifier="fatal") == XID_TABLE[143]  # just outside the NVLink5 range
    assert xid_info(151, qualifier="fatal") == xid_info(151)


def test_an_override_changes_the_severity_only() -> None:
    info = xid_info(145, {145: Severity.INFO}, qualifier="fatal")
    assert info.severity is Severity.INFO
    assert (info.action, info.clears) == (Action.RESET_CHIP, "reset")
    assert info.meaning == f"{XID_TABLE[145].meaning}, fatal" and info.bucket == XID_TABLE[145].bucket
    assert clears_on(79) == "reboot" and xid_info(79, {79: Severity.INFO}).clears == "reboot"
    assert xid_info(4242, {4242: Severity.CRITICAL}) == xid_info(4242).__class__(
        Severity.CRITICAL, "unknown XID 4242", Action.MONITOR)


def test_an_unknown_code_is_a_warning_to_monitor_that_ages_out() -> None:
    info = xid_info(4242)
    assert (info.severity, info.action, info.bucket, info.clears) == (
        Severity.WARNING, Action.MONITOR, "CONTACT_SUPPORT", "window")


def test_critical_keys_are_the_critical_codes_and_the_critical_qualified_keys_in_code_order() -> None:
    keys = critical_keys()
    recoveries = {f"154:{name}" for name, sev, _a, _c in RECOVERY_ACTIONS.values()
                  if sev is Severity.CRITICAL}
    assert set(keys) == ({str(c) for c in critical_codes()} | recoveries
                         | {f"{code}:fatal" for code in NVLINK5_CODES})
    assert "154:none" not in keys and "154:drain_p2p" not in keys and "145:nonfatal" not in keys
    assert keys == sorted(keys, key=lambda k: (int(k.split(":")[0]), k)) and len(keys) == len(set(keys))
    assert keys.index("79") < keys.index("145:fatal") < keys.index("154:gpu_reset")
