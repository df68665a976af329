"""Decode an agent's ``/v1/node`` body into a :class:`NodeReport`, fast, with the schema's own rules.

``fleetctl health`` decodes one body per host, which makes decoding the largest part of its CPU on
a large fleet. msgspec decodes straight into the schema's dataclasses, checking every field
against its annotation, several times faster than JSON parsing plus :func:`parse_node_report`
(figures: docs/performance.md).

Its checks are at least as strict as :func:`parse_node_report`'s (a bool is not a number, a float
not an int, a required field must be there), so a body it accepts is one that parser accepts too.
Where it refuses, the body is decoded as plain JSON and goes through :func:`parse_node_report`:
that accepts what the schema allows beyond the annotations (``null`` for an optional field, a
float counter) and otherwise raises the error that names the field. Both paths are tested with
the same cases.
"""

from __future__ import annotations

import msgspec
from fleet_agent.schema import SCHEMA_VERSION, NodeReport, parse_node_report


class _Envelope(msgspec.Struct):
    schema: str  # required here: NodeReport's own field has a default, so a missing one would pass


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_REPORT = msgspec.json.Decoder(NodeReport)


class InvalidJson(ValueError):
    """The body is not JSON (the message says why and where)."""


def decode_node_report(body: bytes) -> NodeReport:
    """The report in ``body``; :class:`InvalidJson`, or :class:`SchemaError` naming the field."""
    try:
        if _ENVELOPE.decode(body).schema == SCHEMA_VERSION:
            return _REPORT.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # RecursionError: nesting
        pass  # the careful path below says what is wrong, or accepts what the schema allows
    try:
        doc = msgspec.json.decode(body)
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # ValidationError: a number out of range
        msg = str(exc).removeprefix("JSON is malformed: ")
        raise InvalidJson("not UTF-8" if "UTF-8" in msg else msg[:1].lower() + msg[1:]) from None
    return parse_node_report(doc)
