"""The XID table: the codes the issue names are all there, with the severities it asks for."""

from __future__ import annotations

from fleet_agent.health.xid_codes import XID_TABLE, critical_codes, xid_info
from fleet_agent.schema import Action, Severity

REQUIRED = [13, 31, 32, 38, 43, 45, 48, 56, 57, 58, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 109,
            110, 119, 120, 121, 122, 123, 140, 143, 154]


def test_every_required_code_has_meaning_and_action() -> None:
    missing = [code for code in REQUIRED if code not in XID_TABLE]
    assert missing == []
    for code in REQUIRED:
        info = XID_TABLE[code]
        assert info.meaning and not info.meaning.startswith("unknown"), code


def test_application_codes_are_warnings_and_hardware_codes_critical() -> None:
    for code in (13, 31, 43):
        assert XID_TABLE[code].severity is Severity.WARNING
        assert XID_TABLE[code].action is Action.CHECK_APPLICATION
    for code in (48, 79, 95, 119, 120):
        assert XID_TABLE[code].severity is Severity.CRITICAL
    assert XID_TABLE[79].action is Action.REBOOT
    for code in (48, 63, 64, 94, 95):
        assert "ECC" in XID_TABLE[code].meaning or "row" in XID_TABLE[code].meaning
    assert all("GSP" in XID_TABLE[code].meaning for code in (119, 120))


def test_unknown_code_and_overrides() -> None:
    info = xid_info(4242)
    assert (info.severity, info.meaning) == (Severity.WARNING, "unknown XID 4242")
    assert xid_info(13, {13: Severity.CRITICAL}).severity is Severity.CRITICAL
    assert xid_info(13, {13: Severity.CRITICAL}).meaning == XID_TABLE[13].meaning
    assert xid_info(13, {31: Severity.CRITICAL}).severity is Severity.WARNING


def test_critical_codes_is_the_sorted_critical_subset() -> None:
    codes = critical_codes()
    assert codes == sorted(codes)
    assert 79 in codes and 13 not in codes
    assert all(XID_TABLE[c].severity is Severity.CRITICAL for c in codes)
    assert len(codes) == sum(1 for i in XID_TABLE.values() if i.severity is Severity.CRITICAL)
