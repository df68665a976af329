"""fleetctl.fanout.classify: each kind of bad body gets its own kind and a detail that names the fault.

Written against the mutants that survived the mutation run (docs/mutation.md): the kind, the detail and
the elapsed time of a result were not asserted for every branch.
"""

from __future__ import annotations

import json

import pytest
from fleet_agent.schema import SCHEMA_VERSION, HostMetrics, NodeReport, Status

from fleetctl.fanout import FetchKind
from fleetctl.fanout import classify as fanout_classify
from fleetctl.fanout.classify import Answer, Failed, classify_answer, decode
from fleetctl.inventory import Host

HOST = Host(name="gpu-a-01", address="10.0.0.1", groups=("gpu",), vars={})


def _body(**changes: object) -> bytes:
    report = NodeReport(host="gpu-a-01", agent_version="0.1.0", sampled_at=1000.0, interval_s=5.0,
                        status=Status.HEALTHY, chips_expected=None, chips=[], host_metrics=HostMetrics())
    doc = report.to_dict()
    doc.update(changes)
    return json.dumps(doc).encode()


def test_a_report_is_ok_with_no_detail_and_keeps_its_elapsed_time() -> None:
    result = classify_answer(HOST, Answer(_body(), elapsed_s=0.25))
    assert result.kind is FetchKind.OK
    assert result.report is not None and result.report.host == "gpu-a-01"
    assert result.detail == "" and result.elapsed_s == 0.25 and result.host is HOST


def test_a_failed_body_keeps_the_host_the_detail_and_the_elapsed_time() -> None:
    result = classify_answer(HOST, Answer(b"{not json", elapsed_s=1.5))
    assert result.kind is FetchKind.INVALID_JSON and result.report is None
    assert result.detail.startswith("invalid JSON: ") and len(result.detail) > len("invalid JSON: ")
    assert result.elapsed_s == 1.5 and result.host is HOST


def test_another_schema_version_is_its_own_kind_naming_both_versions() -> None:
    with pytest.raises(Failed) as err:
        decode(_body(schema="fleet.node/v0"))
    assert err.value.kind is FetchKind.SCHEMA_VERSION
    assert err.value.detail.startswith("schema:") and "fleet.node/v0" in err.value.detail
    assert SCHEMA_VERSION in err.value.detail and str(err.value) == err.value.detail


def test_a_bad_field_is_bad_schema_naming_the_field() -> None:
    with pytest.raises(Failed) as err:
        decode(_body(interval_s="five"))
    assert err.value.kind is FetchKind.BAD_SCHEMA and "interval_s" in err.value.detail


def test_a_type_the_parser_did_not_expect_is_bad_schema_with_its_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def raises_value_error(body: bytes) -> NodeReport:
        raise ValueError("count out of range")

    monkeypatch.setattr(fanout_classify, "decode_node_report", raises_value_error)
    with pytest.raises(Failed) as err:
        decode(b"{}")
    assert err.value.kind is FetchKind.BAD_SCHEMA
    assert err.value.detail == "invalid report: count out of range"


def test_failed_carries_kind_and_detail_as_its_message() -> None:
    failed = Failed(FetchKind.TOO_LARGE, "body over 4 MiB")
    assert failed.kind is FetchKind.TOO_LARGE and failed.detail == "body over 4 MiB"
    assert str(failed) == "body over 4 MiB"


def test_only_no_answer_kinds_are_unreachable() -> None:
    unreachable = {k for k in FetchKind if not k.reachable}
    assert unreachable == {FetchKind.REFUSED, FetchKind.CONNECT_ERROR, FetchKind.TIMEOUT, FetchKind.DEADLINE}
    assert fanout_classify.NO_ANSWER == unreachable | {FetchKind.SLOW}
