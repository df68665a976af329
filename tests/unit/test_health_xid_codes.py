"""The XID table: the codes the issue names are all there, with the severities it asks for."""

from __future__ import annotations

from fleet_agent.health.xid_codes import XID_TABLE, clears_on, critical_codes, split_key, xid_info
from fleet_agent.schema import Action, Severity

REQUIRED = [13, 31, 32, 38, 43, 45, 46, 48, 56, 57, 58, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 109,
            110, 119, 120, 121, 122, 123, 136, 140, 143, *range(144, 151), 154, 155, 156, 157, 158]


def test_every_required_code_has_meaning_and_action() -> None:
    missing = [code for code in REQUIRED if code not in XID_TABLE]
    assert missing == []
    for code in REQUIRED:
        info = XID_TABLE[code]
        assert info.meaning and not info.meaning.startswith("unknown"), code


def test_buckets_follow_nvidias_catalog() -> None:
    for code in (13, 31, 32, 94):  # RESTART_APP
        assert XID_TABLE[code].severity is Severity.WARNING
        assert XID_TABLE[code].action is Action.CHECK_APPLICATION
        assert XID_TABLE[code].clears == "window"
    for code in (38, 43, 63, 92, 121):  # IGNORE
        assert (XID_TABLE[code].severity, XID_TABLE[code].action) == (Severity.INFO, Action.NONE)
    for code in (46, 48, 62, 64, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158):
        assert XID_TABLE[code].severity is Severity.CRITICAL, code
        assert (XID_TABLE[code].action, XID_TABLE[code].clears) == (Action.RESET_CHIP, "reset"), code
    assert (XID_TABLE[79].action, XID_TABLE[79].clears) == (Action.REBOOT, "reboot")  # RESTART_BM
    assert XID_TABLE[54].bucket == "CHECK_MECHANICALS"
    assert all(XID_TABLE[c].bucket == "WORKFLOW_NVLINK5_ERR" for c in range(144, 151))
    for code in (48, 63, 64, 94, 95):
        assert "ECC" in XID_TABLE[code].meaning or "row" in XID_TABLE[code].meaning
    assert all("GSP" in XID_TABLE[code].meaning for code in (119, 120))


def test_buckets_without_a_reset_or_reboot_get_their_own_actions() -> None:
    by_bucket = {"CHECK_MECHANICALS": Action.CHECK_HARDWARE, "UPDATE_SWFW": Action.UPDATE_SOFTWARE,
                 "CHECK_UVM": Action.UPDATE_SOFTWARE, "CONTACT_SUPPORT": Action.CONTACT_SUPPORT}
    for bucket, action in by_bucket.items():
        codes = [code for code, info in XID_TABLE.items() if info.bucket == bucket]
        assert codes, bucket
        assert all(XID_TABLE[code].action is action for code in codes), bucket
    assert (XID_TABLE[54].action, XID_TABLE[78].action, XID_TABLE[159].action, XID_TABLE[122].action) == (
        Action.CHECK_HARDWARE, Action.UPDATE_SOFTWARE, Action.UPDATE_SOFTWARE, Action.CONTACT_SUPPORT)
    # Only an unknown code and the NVLink5 codes whose message says nothing more remain "monitor".
    assert {info.bucket for info in XID_TABLE.values() if info.action is Action.MONITOR} <= {
        "WORKFLOW_NVLINK5_ERR", "NONE"}


def test_message_qualifiers_decide_154_and_nvlink5() -> None:
    assert xid_info(154, qualifier="node_reboot").action is Action.REBOOT
    assert xid_info(154, qualifier="gpu_reset").action is Action.RESET_CHIP
    assert xid_info(154, qualifier="none").severity is Severity.INFO
    assert xid_info(149, qualifier="fatal").severity is Severity.CRITICAL
    assert xid_info(149, qualifier="nonfatal").severity is Severity.WARNING
    assert xid_info(13, qualifier="fatal") == XID_TABLE[13]  # a qualifier means nothing elsewhere
    assert clears_on(154, "node_reboot") == "reboot" and clears_on(31) == "window"
    assert split_key("154:node_reboot") == (154, "node_reboot") and split_key("48") == (48, None)
    assert split_key("abc") is None and split_key(":x") is None


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
