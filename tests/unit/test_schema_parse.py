"""Reading a node report: what is accepted, what is built, and the message naming the first bad field.

Two readers must agree on every case: the schema's own ``parse_node_report`` (a decoded document)
and fleetctl's ``decode_node_report`` (the raw body: msgspec's typed decoding, falling back to
``parse_node_report`` for anything it refuses), which reads every agent's answer in ``fleetctl health``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from fleet_agent.schema import (
    Action,
    ChipReport,
    GpuDetails,
    HostMetrics,
    NodeReport,
    Problem,
    SchemaError,
    Severity,
    Status,
    TpuDetails,
    parse_node_report,
)

from fleetctl.fanout import decode as node_decode
from fleetctl.fanout.decode import InvalidJson, decode_node_report

Reader = Callable[[Any], NodeReport]


@pytest.fixture(params=["parse_node_report", "decode_node_report"])
def read(request: pytest.FixtureRequest) -> Reader:
    if request.param == "parse_node_report":
        return parse_node_report
    return lambda doc: decode_node_report(json.dumps(doc).encode())


def gpu_chip(index: int = 0) -> dict[str, Any]:
    return {
        "index": index, "kind": "gpu", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index}", "pci_bus_id": f"0000:{index:02x}:00.0", "status": "healthy",
        "stale": False, "error": None, "sampled_at": 1_700_000_000.5, "temperature_c": 61,
        "memory_temperature_c": 70.5, "utilization_pct": 82.0, "memory_utilization_pct": None,
        "memory_used_bytes": 60 * 2**30, "memory_total_bytes": 80 * 2**30, "power_w": 546.25,
        "power_limit_w": 700, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619,
        "gpu": {"ecc_volatile_uncorrected": 0, "row_remap_pending": False, "throttle_reasons": [],
                "pcie_link_gen": 5, "nvlink_links_up": 18, "slowdown_temp_c": 90.0, "xid_counts": {},
                "xid_total": 0, "persistence_mode": True},
        "tpu": None, "problems": [],
    }


def node(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "fleet.node/v1", "host": "gpu-a-01", "agent_version": "0.3.0",
        "sampled_at": 1_700_000_000.5, "interval_s": 5, "status": "healthy", "chips_expected": 8,
        "chips": [gpu_chip(i) for i in range(2)],
        "host_metrics": {"cpu_pct": 12.5, "memory_used_bytes": 10, "memory_total_bytes": 100,
                         "load1": 0.5, "temperatures_c": {}},
        "problems": [], "collectors": [{"name": "nvml", "ok": True, "duration_s": 0.01}],
        "driver_version": "550.54.15", "drained": False,
    }
    doc.update(fields)
    return doc


def with_chip(position: int, /, **fields: Any) -> dict[str, Any]:
    doc = node()
    doc["chips"][position].update(fields)
    return doc


def test_a_full_report_builds_the_objects_it_describes(read: Reader) -> None:
    r = read(node())
    assert isinstance(r, NodeReport) and r.status is Status.HEALTHY and r.chips_expected == 8
    assert r.interval_s == 5.0 and isinstance(r.interval_s, float)
    c = r.chips[1]
    assert isinstance(c, ChipReport) and c.index == 1 and c.uuid == "GPU-1" and c.status is Status.HEALTHY
    assert (c.temperature_c, c.power_w, c.memory_utilization_pct, c.error) == (61, 546.25, None, None)
    assert c.stale is False and c.tpu is None and c.problems == []
    assert c.gpu == GpuDetails(ecc_volatile_uncorrected=0, row_remap_pending=False, pcie_link_gen=5,
                               nvlink_links_up=18, slowdown_temp_c=90.0, persistence_mode=True)
    assert r.host_metrics == HostMetrics(cpu_pct=12.5, memory_used_bytes=10, memory_total_bytes=100,
                                         load1=0.5)
    assert r.collectors[0].name == "nvml" and r.collectors[0].ok is True


def test_optional_fields_left_out_or_null_take_their_defaults(read: Reader) -> None:
    chip = {k: gpu_chip()[k] for k in ("index", "kind", "vendor", "model", "uuid", "pci_bus_id", "status")}
    doc = node(chips=[chip, {**chip, "index": 1, "stale": None, "gpu": None, "problems": None}],
               host_metrics={})
    r = read(doc)
    for c in r.chips:
        assert c.stale is False and c.temperature_c is None and c.gpu is None and c.problems == []
    assert r.host_metrics == HostMetrics()
    assert r.host_metrics.temperatures_c == {}


def test_details_with_items_are_checked_item_by_item(read: Reader) -> None:
    r = read(with_chip(0, gpu={"throttle_reasons": ["sw_thermal"], "xid_counts": {"79": 2},
                                            "xid_total": 2, "last_xid": 79}))
    assert r.chips[0].gpu == GpuDetails(throttle_reasons=["sw_thermal"], xid_counts={"79": 2}, xid_total=2,
                                        last_xid=79)
    with pytest.raises(SchemaError, match=r"^chips\[0\]\.gpu\.throttle_reasons: expected a list of strings$"):
        read(with_chip(0, gpu={"throttle_reasons": [1]}))
    with pytest.raises(SchemaError, match=r"^chips\[1\]\.gpu\.xid_counts: expected an object of numbers$"):
        read(with_chip(1, gpu={"xid_counts": {"79": "two"}}))


def test_a_tpu_chip(read: Reader) -> None:
    r = read(with_chip(0, kind="tpu", vendor="google", gpu=None,
                                    tpu={"duty_cycle_pct": 40, "runtime_metrics_available": True}))
    assert r.chips[0].tpu == TpuDetails(duty_cycle_pct=40, runtime_metrics_available=True)


def test_problems_are_parsed_with_their_enums(read: Reader) -> None:
    p = {"check": "ecc_uncorrectable", "severity": "critical", "message": "2 uncorrectable",
         "action": "reset_chip"}
    r = read(with_chip(1, status="unhealthy", problems=[p]))
    assert r.chips[1].problems == [Problem("ecc_uncorrectable", Severity.CRITICAL, "2 uncorrectable",
                                           Action.RESET_CHIP)]
    with pytest.raises(SchemaError, match=r"^chips\[1\]\.problems\[0\]\.severity: 'dire' is not one of"):
        read(with_chip(1, problems=[{**p, "severity": "dire"}]))


def test_actions_run_least_to_most_disruptive() -> None:
    assert [a.value for a in Action] == [
        "none", "monitor", "check_application", "check_configuration", "check_cooling", "restart_agent",
        "reset_chip", "reboot", "update_software", "check_hardware", "contact_support", "rma"]


def test_an_action_from_a_newer_agent_is_kept_as_it_was_sent() -> None:
    future = Action("drain_fabric")
    assert future == "drain_fabric" and future.value == "drain_fabric" and isinstance(future, Action)
    assert Problem("x", Severity.WARNING, "m", future).to_dict()["action"] == "drain_fabric"
    assert json.loads(json.dumps({"action": future})) == {"action": "drain_fabric"}
    assert future not in list(Action)  # known actions stay the listed ones
    for junk in ("", "Reboot", "rm -rf", "é", "x" * 65, 3, None):
        with pytest.raises(ValueError):
            Action(junk)


def test_a_report_with_a_newer_agents_action_is_read(read: Reader) -> None:
    p = {"check": "fabric", "severity": "critical", "message": "m", "action": "drain_fabric"}
    r = read(with_chip(1, problems=[p]))
    assert r.chips[1].problems[0].action.value == "drain_fabric"
    with pytest.raises(SchemaError, match=r"^chips\[1\]\.problems\[0\]\.action: 'Reboot!' is not one of"):
        read(with_chip(1, problems=[{**p, "action": "Reboot!"}]))


@pytest.mark.parametrize(("doc", "message"), [
    (with_chip(0, index="0"), "chips[0].index: expected int, got str"),
    (with_chip(1, index=True), "chips[1].index: expected int, got bool"),
    (with_chip(0, model=None), "chips[0].model: missing"),
    (with_chip(0, uuid=7), "chips[0].uuid: expected str, got int"),
    (with_chip(1, status="fine"), "chips[1].status: 'fine' is not one of"),
    (with_chip(0, stale="no"), "chips[0].stale: expected bool, got str"),
    (with_chip(0, temperature_c="hot"), "chips[0].temperature_c: expected int or float, got str"),
    (with_chip(0, temperature_c=True), "chips[0].temperature_c: expected int or float, got bool"),
    (with_chip(1, memory_used_bytes=1.5), "chips[1].memory_used_bytes: expected int, got float"),
    (with_chip(0, power_w=[1]), "chips[0].power_w: expected int or float, got list"),
    (with_chip(0, error=3), "chips[0].error: expected str, got int"),
    (with_chip(0, gpu={"pcie_link_gen": "5"}), "chips[0].gpu.pcie_link_gen: expected a number"),
    (with_chip(0, gpu={"persistence_mode": 1}), "chips[0].gpu.persistence_mode: expected bool"),
    (with_chip(0, gpu={"xid_total": True}), "chips[0].gpu.xid_total: expected a number"),
    (with_chip(0, gpu=[]), "chips[0].gpu: expected an object"),
    (with_chip(0, tpu={"duty_cycle_pct": "40%"}), "chips[0].tpu.duty_cycle_pct: expected a number"),
    (node(chips=[gpu_chip(), "GPU-1"]), "chips[1]: expected an object"),
    (node(host_metrics={"load1": "high"}), "host_metrics.load1: expected a number"),
    (node(host_metrics=None), "report.host_metrics: missing"),
    (node(chips={}), "report.chips: expected list, got dict"),
    (node(status="ok"), "report.status: 'ok' is not one of"),
    (node(schema="fleet.node/v2"), "schema: unsupported version 'fleet.node/v2'"),
])
def test_the_first_bad_field_is_named(read: Reader, doc: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError) as err:
        read(doc)
    assert str(err.value).startswith(message)


def test_the_same_bad_shape_is_refused_every_time(read: Reader) -> None:
    # A fast path that remembered a shape as good must never let a bad one through later.
    good, bad = node(), with_chip(0, temperature_c="hot")
    for _ in range(3):
        read(copy.deepcopy(good))
        with pytest.raises(SchemaError, match="temperature_c"):
            read(copy.deepcopy(bad))


def test_the_agents_own_output_parses_back_to_equal_objects(read: Reader) -> None:
    r = read(node())
    assert read(json.loads(json.dumps(r.to_dict()))) == r


# --- decode_node_report only ---------------------------------------------------------------------


def test_a_valid_body_takes_the_typed_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def careful(doc: Any) -> NodeReport:
        raise AssertionError("a valid body went the slow way")

    expected = parse_node_report(node())
    monkeypatch.setattr(node_decode, "parse_node_report", careful)
    assert decode_node_report(json.dumps(node()).encode()) == expected


def test_what_only_the_schema_allows_goes_the_careful_way() -> None:
    # null for fields with a non-null default, a float in an int counter, no chips_expected at all:
    # the annotations refuse these, the schema does not.
    doc = with_chip(0, stale=None, problems=None, gpu={"xid_total": 2.0, "ecc_volatile_corrected": 1.0})
    del doc["chips_expected"]
    r = decode_node_report(json.dumps(doc).encode())
    assert r.chips[0].stale is False and r.chips[0].problems == [] and r.chips_expected is None
    assert r.chips[0].gpu is not None and r.chips[0].gpu.xid_total == 2.0


@pytest.mark.parametrize(("body", "message"), [
    (b'{"host": "x"', "truncated"),
    (b'{"host": "\xff"}', "not UTF-8"),
    (b"\xff\xfe\x00", r"invalid character \(byte 0\)"),
    (b'{"a": NaN}', r"\(byte 6\)"),
    (b"", "truncated"),
    (b'{"a": 1e999}', "out of range"),
    # nesting deeper than any decoder recurses: an error for this host, not a crash of the command
    (b'{"schema": "fleet.node/v1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
])
def test_a_body_that_is_not_json(body: bytes, message: str) -> None:
    with pytest.raises(InvalidJson, match=message):
        decode_node_report(body)


def test_a_missing_or_foreign_schema_tag_is_refused_although_the_dataclass_has_a_default() -> None:
    doc = node()
    del doc["schema"]
    with pytest.raises(SchemaError, match=r"^schema: unsupported version None"):
        decode_node_report(json.dumps(doc).encode())
    nested = node(host_metrics={"schema": "fleet.node/v1"})  # not at the top: still missing
    del nested["schema"]
    with pytest.raises(SchemaError, match=r"^schema: unsupported version None"):
        decode_node_report(json.dumps(nested).encode())


NEW_GPU_FIELDS = {"nvlink_crc_flit_errors": 5, "nvlink_crc_data_errors": 1, "nvlink_replay_errors": 12,
                  "nvlink_recovery_errors": 3, "energy_mj": 123_456_789, "encoder_utilization_pct": 0.0,
                  "decoder_utilization_pct": 8.5}


def test_nvlink_energy_and_video_engine_fields_are_optional_and_typed(read: Reader) -> None:
    without = read(node()).chips[0].gpu  # an agent from before these fields
    assert without is not None
    assert [getattr(without, k) for k in NEW_GPU_FIELDS] == [None] * len(NEW_GPU_FIELDS)
    doc = node()
    doc["chips"][0]["gpu"].update(NEW_GPU_FIELDS)
    with_them = read(doc).chips[0].gpu
    assert with_them is not None
    assert {k: getattr(with_them, k) for k in NEW_GPU_FIELDS} == NEW_GPU_FIELDS
    for bad in ("12", True):
        doc = node()
        doc["chips"][1]["gpu"]["nvlink_replay_errors"] = bad
        with pytest.raises(SchemaError, match=r"chips\[1\]\.gpu\.nvlink_replay_errors"):
            read(doc)


def test_the_agents_own_sample_age_is_read_and_optional(read: Reader) -> None:
    assert read(node()).sample_age_s is None  # an older agent, or Prometheus
    assert read(node(sample_age_s=2.5)).sample_age_s == 2.5
    with pytest.raises(SchemaError, match=r"^report\.sample_age_s: expected"):
        read(node(sample_age_s="2s"))


def test_each_answer_carries_its_own_sample_age() -> None:
    from fleet_agent.schema import with_sample_age
    from fleet_agent.server import render_json

    report = parse_node_report(node())
    body = render_json(report)
    assert body.endswith(b'"sample_age_s":null}\n')  # the last field: stamping it is a splice
    stamped = with_sample_age(body, 12.3456)
    assert decode_node_report(stamped).sample_age_s == 12.346
    assert json.loads(stamped) == {**json.loads(body), "sample_age_s": 12.346}
    assert with_sample_age(body, float("nan")) == body
    assert with_sample_age(b'{"schema": "other"}\n', 1.0) == b'{"schema": "other"}\n'


def test_a_gpus_serial_is_text_on_both_paths(read: Reader) -> None:
    chip = gpu_chip(0)
    chip["gpu"] = {**chip["gpu"], "serial": "1654922001234"}
    assert read(node(chips=[chip])).chips[0].gpu.serial == "1654922001234"  # type: ignore[union-attr]
    chip["gpu"]["ecc_volatile_uncorrected"] = 2**70  # past msgspec's integers: the careful path
    assert read(node(chips=[chip])).chips[0].gpu.serial == "1654922001234"  # type: ignore[union-attr]
    chip["gpu"]["serial"] = 42
    with pytest.raises(SchemaError, match=r"^chips\[0\]\.gpu\.serial: expected a string"):
        read(node(chips=[chip]))


def test_the_cuda_driver_version_is_optional_text_and_round_trips(read: Reader) -> None:
    older = read(node())  # an agent from before the field: absent reads as None
    assert older.cuda_driver_version is None and older.driver_version == "550.54.15"
    assert read(node(cuda_driver_version=None)).cuda_driver_version is None
    newer = read(node(cuda_driver_version="12.4"))
    assert newer.cuda_driver_version == "12.4"
    assert read(json.loads(json.dumps(newer.to_dict()))) == newer
    assert json.loads(json.dumps(older.to_dict()))["cuda_driver_version"] is None
    with pytest.raises(SchemaError, match=r"^report\.cuda_driver_version: expected str, got float"):
        read(node(cuda_driver_version=12.4))


def test_the_cuda_driver_version_rides_in_a_stamped_answer() -> None:
    from fleet_agent.schema import with_sample_age
    from fleet_agent.server import render_json

    body = with_sample_age(render_json(parse_node_report(node(cuda_driver_version="12.2"))), 1.0)
    report = decode_node_report(body)
    assert report.cuda_driver_version == "12.2" and report.sample_age_s == 1.0
