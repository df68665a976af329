"""fleetctl.burnin.dcgm: real ``dcgmi diag -j`` outputs (tests/fixtures/dcgm/README.md) and hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetctl.burnin.dcgm import DiagParseError, Status, parse_diag, plugin_key, status_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dcgm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_dcgm3_level1_eight_gpus_all_pass() -> None:
    report = parse_diag(fixture("dcgm3.1_level1_8gpu_pass.json"), host="gpu-a")
    assert report.layout == "2.x/3.x"
    assert report.version == "3.1.0"
    assert report.status is Status.PASS
    # the nulls between tests are skipped; nine deployment checks plus the per-GPU software test
    assert [t.name for t in report.tests][:2] == ["Denylist", "NVML Library"]
    assert len(report.tests) == 10
    assert {t.key for t in report.tests} == {"software"}
    assert report.gpus_tested == frozenset(range(8))
    denylist = report.tests[0].results[0]
    assert denylist.entity_ids == tuple(range(8))  # "0,1,...,7" read as a list
    assert denylist.raw_status == "PASS"
    assert report.findings() == []


def test_dcgm4_gb10_software_failure_keeps_code_and_text() -> None:
    report = parse_diag(fixture("dcgm4.2.3_gb10_level1_fail.json"), host="spark-1")
    assert report.layout == "4.x"
    assert (report.version, report.driver_version) == ("4.2.3", "580.82.09")
    assert report.gpus == (0,)
    assert report.status is Status.FAIL
    assert report.per_gpu() == {0: {"software": Status.FAIL}}
    [finding] = report.findings()
    assert (finding.test, finding.gpu, finding.status) == ("software", 0, Status.FAIL)
    [msg] = finding.messages
    assert (msg.error_id, msg.category, msg.severity) == (29, 8, 5)
    assert msg.text.startswith("Persistence Mode: Persistence mode for GPU 0 is disabled.")
    assert "software GPU 0: fail (Persistence Mode" in report.reason()
    assert report.tests[0].summary is Status.FAIL


def test_dcgm4_diagnostic_test_from_an_issue_paste_passes_per_gpu() -> None:
    # The issue's paste is one test object; the document around it is the GB10 run's.
    doc = json.loads(fixture("dcgm4.2.3_gb10_level1_fail.json"))
    test = json.loads(fixture("dcgm4_issue215_diagnostic_test.json"))
    doc["DCGM Diagnostic"]["test_categories"] = [{"category": "Hardware", "tests": [test]}]
    report = parse_diag(json.dumps(doc), host="h")
    assert report.status is Status.PASS
    [diag] = report.tests
    assert (diag.key, diag.category, diag.summary) == ("diagnostic", "Hardware", Status.PASS)
    assert [r.gpus for r in diag.results] == [(g,) for g in range(8)]
    assert diag.results[0].info[2] == "GPU 0 calculated at approximately 859.08 gigaflops during this test"


def test_runtime_error_is_unknown_with_the_reason() -> None:
    report = parse_diag(fixture("dcgm3_runtime_error.json"), host="h")
    assert report.status is Status.UNKNOWN
    assert report.runtime_error == "Error: Diagnostic could not be run while DCGM is paused."
    assert report.reason() == ("diagnostic could not run: "
                               "Error: Diagnostic could not be run while DCGM is paused.")
    assert report.version == "3.3.1"


def test_the_error_line_dcgmi_prints_instead_is_one_line_naming_the_host() -> None:
    with pytest.raises(DiagParseError) as err:
        parse_diag(fixture("dcgmi_connection_error.txt"), host="gpu-7")
    assert str(err.value) == ("gpu-7: dcgmi printed no JSON: Error: unable to establish a connection "
                              "to the specified host: localhost")


@pytest.mark.parametrize(("text", "expected"), [
    ("", "h: dcgmi printed nothing"),
    ("  \n\n", "h: dcgmi printed nothing"),
    ('{"DCGM Diagnostic": {', "h: dcgmi output is not valid JSON: "),
    ("[1, 2]", "h: dcgmi printed no JSON: [1, 2]"),
    ('{"foo": 1, "bar": 2}', "h: not a DCGM diagnostic result (top-level keys: foo, bar)"),
    ('{"DCGM Diagnostic": []}', "h: 4.x result: expected an object under the top key"),
    ('{"iterations": [], "Overall Result": "Pass"}', "h: dcgmi output holds several iterations"),
    ('"just a string {"', "h: dcgmi output is not valid JSON"),
])
def test_output_that_is_no_result_raises_one_line(text: str, expected: str) -> None:
    with pytest.raises(DiagParseError) as err:
        parse_diag(text, host="h")
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(DiagParseError, match="not valid JSON"):
        parse_diag("{\"a\":" * 100_000 + "1" + "}" * 100_000, host="h")


def test_oversized_output_is_refused() -> None:
    with pytest.raises(DiagParseError, match="over the"):
        parse_diag("{" + " " * (17 * 1024 * 1024) + "}", host="h")


def test_control_characters_in_the_error_line_are_escaped() -> None:
    with pytest.raises(DiagParseError) as err:
        parse_diag("Error: \x1b[2Jcleared\r", host="h\x1b]0;x\x07")
    assert "\x1b" not in str(err.value) and "\r" not in str(err.value)
    assert "\\x1b" in str(err.value)


def _doc4(*tests: object, **extra: object) -> str:
    categories = [{"category": "Hardware", "tests": list(tests)}]
    return json.dumps({"DCGM Diagnostic": {"test_categories": categories}, **extra})


def _gpu(gpu: int, status: str, **more: object) -> dict[str, object]:
    return {"entity_group": "GPU", "entity_group_id": 1, "entity_id": gpu, "status": status, **more}


def test_an_unknown_status_word_is_unknown_never_a_pass() -> None:
    report = parse_diag(_doc4({"name": "memory", "results": [_gpu(0, "Pass"), _gpu(1, "Inconclusive")]}))
    assert report.per_gpu()[1]["memory"] is Status.UNKNOWN
    assert report.status is Status.UNKNOWN
    assert report.findings()[0].gpu == 1


def test_a_fail_outranks_unknown_and_warn() -> None:
    report = parse_diag(_doc4(
        {"name": "memory", "results": [_gpu(0, "Warn"), _gpu(1, "???")]},
        {"name": "pcie", "results": [_gpu(1, "Fail")]}))
    assert report.status is Status.FAIL


def test_warn_only_is_warn_and_skips_do_not_fail() -> None:
    report = parse_diag(_doc4({"name": "memory", "results": [_gpu(0, "Warn"), _gpu(1, "Skip")]},
                              {"name": "pcie", "results": [_gpu(0, "Pass"), _gpu(1, "Pass")]}))
    assert report.status is Status.WARN


def test_every_test_skipped_is_unknown() -> None:
    report = parse_diag(_doc4({"name": "memory", "results": [_gpu(0, "Skip")]}))
    assert report.status is Status.UNKNOWN
    assert report.reason() == "every test was skipped"


def test_no_tests_at_all_is_unknown() -> None:
    report = parse_diag('{"DCGM Diagnostic": {}, "metadata": {"version": "4.2.3"}}')
    assert report.status is Status.UNKNOWN
    assert report.notes == ("no test_categories in the result",)


def test_unreadable_pieces_become_notes_and_unknown() -> None:
    report = parse_diag(_doc4(
        {"name": "memory", "results": [_gpu(0, "Pass"), "garbage", {"status": "Pass", "entity_id": "x",
                                                                     "entity_group": "GPU"}]},
        42, {"results": []}))
    assert report.status is Status.UNKNOWN
    assert any("expected an object" in n for n in report.notes)
    assert any("entity_id 'x' is not a number" in n for n in report.notes)
    assert any("a test without a name" in n for n in report.notes)


def test_unknown_fields_and_tests_are_kept() -> None:
    report = parse_diag(_doc4({"name": "Quantum Flux", "results": [_gpu(0, "Pass", new_field={"x": 1})],
                               "another": True}, future_key=[1]))
    assert report.status is Status.PASS
    assert report.tests[0].key == "quantum_flux"


def test_text_around_the_document_is_kept_not_judged() -> None:
    text = "WARNING: THIS SHOULD NOT HAPPEN\n" + fixture("dcgm3.1_level1_8gpu_pass.json") + "\ntrailer\n"
    report = parse_diag(text)
    assert report.status is Status.PASS
    assert report.extra_text == ("WARNING: THIS SHOULD NOT HAPPEN", "trailer")


def test_3x_gpu_ids_forms_and_warning_shapes() -> None:
    doc = {"DCGM GPU Diagnostic": {"test_categories": [
        {"category": "Deployment", "tests": [
            {"name": "Page Retirement/Row Remap", "results": [
                {"status": "Fail", "gpu_ids": 3, "warnings": [
                    {"warnings": "GPU 3 had memory errors and row remappings are pending", "error_id": 85,
                     "error_category": 10, "error_severity": 6}]}]}]},
        {"category": "Stress", "tests": [
            {"name": "SM Stress", "results": [
                {"gpu_ids": "0", "status": "Fail", "warnings": ["Clocks are being throttled for GPU 0"],
                 "info": "GPU 0 ran"},
                {"gpu_ids": "1", "status": "Pass"},
                {"gpu_ids": "one", "status": "Pass"}]}]}]},
        "version": "3.3.8", "Driver Version Detected": "535.183.06", "GPU Device IDs": ["2330", "2330"]}
    report = parse_diag(json.dumps(doc))
    assert (report.version, report.driver_version, report.gpus) == ("3.3.8", "535.183.06", (0, 1))
    assert report.per_gpu()[3] == {"software": Status.FAIL}
    assert report.per_gpu()[0] == {"sm_stress": Status.FAIL}
    remap = report.tests[0].results[0].warnings[0]
    assert (remap.text, remap.error_id, remap.severity) == (
        "GPU 3 had memory errors and row remappings are pending", 85, 6)
    assert report.tests[1].results[0].warnings[0].error_id is None
    assert report.tests[1].results[0].info == ("GPU 0 ran",)
    assert any("gpu_ids 'one' is not a GPU list" in n for n in report.notes)


def test_bytes_with_bad_utf8_are_read() -> None:
    raw = _doc4({"name": "memory", "results": [_gpu(0, "Pass", info=["x"])]}).encode() + b"\xff\xfe"
    assert parse_diag(raw).status is Status.PASS


@pytest.mark.parametrize(("raw", "expected"), [
    ("Pass", Status.PASS), ("PASS", Status.PASS), (" fail ", Status.FAIL), ("SKIPPED", Status.SKIP),
    ("Warn", Status.WARN), ("Not Run", Status.UNKNOWN), (None, Status.UNKNOWN), (1, Status.UNKNOWN),
])
def test_status_words(raw: object, expected: Status) -> None:
    assert status_of(raw) is expected


@pytest.mark.parametrize(("name", "key"), [
    ("GPU Memory", "memory"), ("memory", "memory"), ("Targeted Stress", "targeted_stress"),
    ("targeted_power", "targeted_power"), ("Denylist", "software"), ("Persistence Mode", "software"),
    ("PCIe", "pcie"), ("EUD Test", "eud"), ("", "unnamed"),
])
def test_test_keys(name: str, key: str) -> None:
    assert plugin_key(name) == key


def test_to_dict_is_json() -> None:
    report = parse_diag(fixture("dcgm4.2.3_gb10_level1_fail.json"))
    again = json.loads(json.dumps(report.to_dict()))
    assert again["status"] == "fail"
    assert again["tests"][0]["results"][0]["warnings"][0]["error_id"] == 29
