"""What became of one request: the outcome kinds, and the classification of an answer's body.

Every host of a fan-out gets exactly one :class:`FetchResult`. The network half of a request ends in
an :class:`Answer` (a complete 200 response, not decoded yet) or a :class:`Failed` saying why there
is none; :func:`classify_answer` decodes the body and says whether it is a node report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fleet_agent.schema import NodeReport, SchemaError

from fleetctl.fanout.decode import InvalidJson, decode_node_report
from fleetctl.inventory import Host


class FetchKind(enum.StrEnum):
    """The outcome of one request; everything but ``ok`` carries a reason."""

    OK = "ok"
    REFUSED = "refused"  # nothing listens on the port
    CONNECT_ERROR = "connect_error"  # no route, DNS failure, reset before any answer
    TIMEOUT = "timeout"  # connected (or not) but no byte of a response within the timeout: hung
    SLOW = "slow"  # a response started but did not finish within the timeout (slow drip)
    DEADLINE = "deadline"  # still waiting (or never started) when the overall deadline passed
    UNAUTHORIZED = "unauthorized"  # HTTP 401/403: token missing or wrong
    HTTP_ERROR = "http_error"  # any other non-200 status
    GARBAGE = "garbage"  # not HTTP, or the connection closed mid-response
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    SCHEMA_VERSION = "schema_version"  # a report, but of another schema version
    BAD_SCHEMA = "bad_schema"  # JSON that is not a valid node report

    @property
    def reachable(self) -> bool:
        """False when nothing answered (the host is shown as unreachable, not as an error)."""
        return self not in _UNREACHABLE


_UNREACHABLE = frozenset({FetchKind.REFUSED, FetchKind.CONNECT_ERROR, FetchKind.TIMEOUT,
                          FetchKind.DEADLINE})
# Outcomes that say nothing about how long an agent takes to answer (see ParkClock).
NO_ANSWER = _UNREACHABLE | {FetchKind.SLOW}


@dataclass(slots=True)
class FetchResult:
    host: Host
    kind: FetchKind
    report: NodeReport | None = None
    detail: str = ""
    elapsed_s: float = 0.0


class Failed(Exception):
    def __init__(self, kind: FetchKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(slots=True)
class Answer:
    """A complete 200 response, not yet decoded (:func:`fleetctl.fanout.pool.fan_out` says why
    decoding waits)."""

    body: bytes
    elapsed_s: float


def classify_answer(host: Host, answer: Answer) -> FetchResult:
    """``ok`` with the report, or what the body was instead."""
    try:
        return FetchResult(host, FetchKind.OK, decode(answer.body), "", answer.elapsed_s)
    except Failed as exc:
        return FetchResult(host, exc.kind, None, exc.detail, answer.elapsed_s)


def decode(body: bytes) -> NodeReport:
    """The node report in ``body``, or :class:`Failed` naming the kind and the first fault."""
    try:
        return decode_node_report(body)
    except InvalidJson as exc:
        raise Failed(FetchKind.INVALID_JSON, f"invalid JSON: {exc}") from None
    except SchemaError as exc:
        kind = FetchKind.SCHEMA_VERSION if str(exc).startswith("schema:") else FetchKind.BAD_SCHEMA
        raise Failed(kind, str(exc)) from None
    except (TypeError, ValueError) as exc:  # a type the schema parser did not expect
        raise Failed(FetchKind.BAD_SCHEMA, f"invalid report: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - one peer's bytes must not end the whole fleet's view
        raise Failed(FetchKind.BAD_SCHEMA,
                     f"cannot decode the report: {type(exc).__name__}: {exc}") from None
