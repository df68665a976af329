"""fleetctl.fanout.classify: outcome kinds and the decoding of a body, without a network."""

from __future__ import annotations

import pytest

from fleetctl.fanout import FetchKind
from fleetctl.fanout import classify as fanout_classify


def test_reachability_of_kinds() -> None:
    assert not FetchKind.TIMEOUT.reachable and not FetchKind.REFUSED.reachable
    assert not FetchKind.DEADLINE.reachable
    assert FetchKind.GARBAGE.reachable and FetchKind.UNAUTHORIZED.reachable and FetchKind.SLOW.reachable


def test_a_decoder_failure_is_that_hosts_error_not_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(body: bytes) -> None:
        raise RecursionError("nested too deep")

    monkeypatch.setattr(fanout_classify, "decode_node_report", broken)
    with pytest.raises(fanout_classify.Failed) as err:
        fanout_classify.decode(b"{}")
    assert err.value.kind is FetchKind.BAD_SCHEMA and "RecursionError: nested too deep" in err.value.detail
