"""Build the fleet report from a Prometheus server that scrapes the agents (for very large fleets).

Instant queries (``/api/v1/query``) over the agent's metrics (docs/metrics.md) replace one request per
host. Hosts are matched by the ``host`` label that ``fleetctl prometheus targets`` puts on every file_sd
target. With the recording rules of deploy/prometheus/rules/fleetctl-report.rules.yml loaded, the fleet-
sized part is a few series per host (``up`` and the per-host summaries); only the hosts whose summary is
not clean (and every host of a small selection) are read chip by chip. Prometheus's cost follows the
series a query selects, so this keeps the per-chip selections the size of the faults. Without the rules,
the per-chip queries cover the whole fleet, as before. Either way the metrics are turned back into node
reports where chips matter, so the controller's own checks run exactly as for direct fan-out.

A summary is as old as the rules' last evaluation: how much older than "now" it may be comes from the
rule group's interval and last evaluation (``/api/v1/rules``), and the freshness of each host's sample
is judged against the time the evaluation saw the fleet at (the rules record it), so a 60 s evaluation
interval or VictoriaMetrics's query latency offset does not send every host to the per-chip queries.
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import dataclasses
import datetime
import email.utils
import http.client
import math
import os
import queue
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import msgspec
from fleet_agent.schema import (
    SCHEMA_VERSION,
    Action,
    ChipReport,
    HostMetrics,
    NodeReport,
    Problem,
    Severity,
    Status,
)
from fleet_agent.verdict import STALE_MIN_S

from fleetctl.errors import SourceUnavailable
from fleetctl.inventory import Host
from fleetctl.report import FleetReport, HostHealth, HostRow
from fleetctl.report.build import WRONG_AGENT, host_row_failed, host_row_from_node
from fleetctl.report.model import ChipFigures
from fleetctl.speedups import gc_paused

ENV_URL = "FLEETCTL_PROMETHEUS_URL"
ENV_DETAIL = "FLEETCTL_PROMETHEUS_DETAIL_HOSTS"

# Metric name -> ChipReport field, for the per-chip gauges we show.
_CHIP_GAUGES = {
    "fleet_chip_temperature_celsius": "temperature_c",
    "fleet_chip_utilization_ratio": "utilization_pct",
    "fleet_chip_memory_used_bytes": "memory_used_bytes",
    "fleet_chip_memory_total_bytes": "memory_total_bytes",
    "fleet_chip_power_watts": "power_w",
    "fleet_chip_stale": "stale",
}
_NODE_GAUGES = ("fleet_sample_timestamp_seconds", "fleet_node_chips_expected", "fleet_node_drained")
# A chip's status: one-hot (every agent), or one series per chip valued at its rank (agents since the
# rank): a quarter of the series for Prometheus to select, and no comparison to evaluate.
ONE_HOT: tuple[str, str] = ("fleet_chip_status", " == 1")
RANK = "fleet_chip_status_rank"
_OF_RANK = {float(s.rank): s for s in Status}


def _detail_of(chip_status: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """Per-host detail: (metric, what follows the selector), the chips' status read as given."""
    return (("fleet_node_status", " == 1"), chip_status, ("fleet_health_check_failing", " == 1"),
            ("fleet_agent_info", ""), *((name, "") for name in _NODE_GAUGES),
            *((name, "") for name in _CHIP_GAUGES))


# With the rules, the detail hosts' chips by rank (then one-hot for the hosts that have none: older
# agents); without them, every host's, one-hot (every agent version in one round).
_DETAIL = _detail_of((RANK, ""))
QUERIES: tuple[str, ...] = ("up", *(name + tail for name, tail in _detail_of(ONE_HOT)))

# The recording rules' series (deploy/prometheus/rules/fleetctl-report.rules.yml).
RULES_INFO = "fleetctl:report_rules:info"
# When the rules were last evaluated (the info sample's own timestamp), for servers without a rules API.
RULES_EVALUATED = f"timestamp({RULES_INFO})"
RULES_GROUP = "fleetctl-report"
# From this version on the info's value is the evaluation's time(): the instant it saw the fleet at.
RULES_VERSION_DATA_TIME = 2
# From this version on the chip summaries come from the agents' per-host rollups (fleet_node_chip*).
RULES_VERSION_ROLLUPS = 3
# The group interval assumed when no rules API tells it (a common evaluation interval).
ASSUMED_INTERVAL_S = 30.0
# Evaluation time and clock jitter allowed on top of two intervals before the rules count as stopped.
EVALUATION_SLACK_S = 5.0
# From this version on the clean hosts are one record (and the readings one record each): see below.
RULES_VERSION_CLEAN = 4
# From this version on the agents that name another host are a record (IDENTITY_RECORD), read in the
# first round; older rules' servers are asked IDENTITY itself, in a round after it.
RULES_VERSION_IDENTITY = 5
# From this version on the clean record is the agents' own verdict (fleet_node_clean): the hosts the rules
# name as without rollups are those whose agents export none (older than the rules).
RULES_VERSION_AGENT_VERDICT = 6
# The rules' version this fleetctl ships (deploy/prometheus/rules/fleetctl-report.rules.yml).
RULES_VERSION = RULES_VERSION_AGENT_VERDICT
MODELS = "fleetctl:host_chip_models"
AGENT_JOBS = "fleetctl:agent_jobs"
# What a host's summary holds, in this order (a :data:`Line`); rules of every version give the same.
SUMMARY_KEYS: tuple[str, ...] = (
    "node_healthy", "sample_timestamp_seconds", "chips_expected", "chips_present", "chips_healthy", "drained",
    "max_temperature_celsius", "mean_utilization_ratio", "memory_used_bytes", "memory_total_bytes",
    "power_watts",
)
# Version 4 on: the clean hosts (healthy, every chip healthy and present, not drained), valued at their
# sample time, with label chips_expected "agent" (= the chips present) or "unset"; the readings one record
# each; the hosts whose agents export no rollups. Eight series per host in all, `up` included.
CLEAN = "fleetctl:clean_host_sample_timestamp_seconds"
READINGS: dict[str, str] = {
    "max_temperature_celsius": "fleetctl:host_chip_temperature_max_celsius",
    "mean_utilization_ratio": "fleetctl:host_chip_utilization_mean_ratio",
    "memory_used_bytes": "fleetctl:host_chip_memory_used_bytes",
    "memory_total_bytes": "fleetctl:host_chip_memory_total_bytes",
    "power_watts": "fleetctl:host_chip_power_watts",
}
WITHOUT_ROLLUPS = "fleetctl:hosts_without_rollups"
# The agent copies what fleetctl reads about a host that is not clean under this one name
# (fleet_agent.metrics.FAULT_DETAIL): selected by name, the answer is the size of the faults, and it
# comes in the first round, so such a host needs no round of its own (see _read_faults). One query per
# series copied (its `metric` label): each answer is decoded and folded in while the next is on its way,
# never all at once (at 100,000 hosts with 14 % faulty, 280,000 series: 180 MB held decoded).
FAULT_DETAIL = "fleet_fault_detail"
FAULT_METRICS: tuple[str, ...] = (
    "fleet_node_status", "fleet_agent_info", "fleet_health_check_failing", RANK, *_NODE_GAUGES,
    "fleet_node_chips_present", "fleet_node_chips_healthy", "fleet_node_chip_temperature_max_celsius",
    "fleet_node_chip_utilization_mean_ratio", "fleet_node_chip_memory_used_bytes",
    "fleet_node_chip_memory_total_bytes", "fleet_node_chip_power_watts", *_CHIP_GAUGES)
FAULT_QUERIES: tuple[str, ...] = tuple(f'{FAULT_DETAIL}{{metric="{m}"}}' for m in FAULT_METRICS)
# The agents that name another host than their target's `host` label (the inventory's): a copied
# address makes one target scrape another machine's agent, whose health must not pass for this host's
# (undrain and remediate would act on it). It answers the mismatches only, but selects one series per
# host, twice: the rules (version 5) record it once per evaluation, and fleetctl reads the record. An
# agent from before the hostname label sends none: never a mismatch.
IDENTITY = ('fleet_agent_info{hostname!=""} unless on (host, hostname) '
            'label_replace(fleet_agent_info, "hostname", "$1", "host", "(.*)")')
IDENTITY_RECORD = "fleetctl:agent_hostname_mismatch"
# The first round: the info and the current version's series, one query each (one answer per record lets
# Prometheus answer them side by side on its cores, and fleetctl decode each while the next are on their
# way). Rules of an older version answer the version-4 queries with nothing (cheap) and get a second
# round: their summaries (below).
RULE_QUERIES: tuple[str, ...] = (RULES_INFO, RULES_EVALUATED, "up", CLEAN, *READINGS.values(), MODELS,
                                 AGENT_JOBS, WITHOUT_ROLLUPS, *FAULT_QUERIES, IDENTITY_RECORD)
# Versions 1-3: every summary one series per host and `summary` label.
SUMMARY = "fleetctl:host_summary"
SUMMARY_QUERIES: tuple[str, ...] = tuple(f'{SUMMARY}{{summary="{key}"}}' for key in SUMMARY_KEYS)
NO_RULES = ("Prometheus has no fleetctl-report recording rules (deploy/prometheus/rules/"
            "fleetctl-report.rules.yml): reading every chip's series instead (slow past ~10,000 hosts)")
# Past this, the server's clock (its HTTP Date) is said to differ from this machine's, in one line. The
# queries are evaluated at this machine's "now": a server that far ahead has not yet stored the last
# seconds of scrapes at that instant, and every age grows by as much. The Date header's whole seconds
# and an answer's delay stay below it.
CLOCK_SKEW_MAX_S = 5.0
# A selection this small is read chip by chip even when every summary is clean.
DETAIL_ALL_MAX_HOSTS = 1000
# Hosts per detail query: the names travel in a POST body, in one regex matcher.
_DETAIL_CHUNK = 2000

DEFAULT_QUERY_TIMEOUT_S = 25.0


class PrometheusError(SourceUnavailable):
    """Prometheus could not be queried (exit 2: the URL or the server is misconfigured, or it is down)."""


class Labels(msgspec.Struct, frozen=True):
    """The labels this module reads; every other label of an answer is skipped while decoding."""

    host: str | None = None
    job: str | None = None
    instance: str | None = None
    chip: str | None = None
    kind: str | None = None
    vendor: str | None = None
    model: str | None = None
    uuid: str | None = None
    status: str | None = None
    check: str | None = None
    severity: str | None = None
    action: str | None = None
    version: str | None = None
    summary: str | None = None
    chips_expected: str | None = None
    metric: str | None = None  # fleet_fault_detail: the name of the series it copies
    hostname: str | None = None  # fleet_agent_info: the host its agent says it runs on (IDENTITY)


class NamedLabels(Labels, frozen=True):
    """The labels, and the metric's name: decoded only for a selector of several metrics (a string per
    series that the fleet-sized answers need not pay for)."""

    name: str | None = msgspec.field(default=None, name="__name__")


Sample = tuple[Labels, float]
_L = TypeVar("_L")


class _Series(msgspec.Struct, Generic[_L]):
    metric: _L
    value: tuple[float, str]


class _Data(msgspec.Struct, Generic[_L]):
    resultType: str
    result: list[_Series[_L]] = []
    warnings: list[str] | None = None  # older Thanos: see _LaxAnswer


class _Answer(msgspec.Struct, Generic[_L]):
    status: str
    data: _Data[_L] | None = None
    error: str | None = None
    errorType: str | None = None
    warnings: list[str] | None = None
    isPartial: bool | None = None


class _LaxSeries(msgspec.Struct, Generic[_L]):
    metric: _L
    value: tuple[float, float]


class _LaxData(msgspec.Struct, Generic[_L]):
    resultType: str
    result: list[_LaxSeries[_L]] = []
    warnings: list[str] | None = None  # older Thanos put them here


class _LaxAnswer(msgspec.Struct, Generic[_L]):
    """An answer as the fast decoder reads it. Beside its series, what a server says of an answer it
    could only give in part: ``warnings`` (Prometheus, Thanos: a remote read or a store that did not
    answer) and VictoriaMetrics cluster's ``isPartial`` (a vmstorage node that did not); read in the
    same pass as the series."""

    status: str
    data: _LaxData[_L] | None = None
    warnings: list[str] | None = None
    isPartial: bool | None = None


class _HostLabel(msgspec.Struct):
    host: str | None = None


# Values decoded as numbers straight from their strings (lax mode: "63.5", "NaN", "-Inf"), no Python
# float() per sample; an answer these refuse ("+Inf", a malformed value) takes the strict path.
_NUMERIC = msgspec.json.Decoder(_LaxAnswer[Labels], strict=False)
_NUMERIC_NAMED = msgspec.json.Decoder(_LaxAnswer[NamedLabels], strict=False)
# The strict path: says what is wrong, or reads what lax mode cannot.
_DECODER = msgspec.json.Decoder(_Answer[Labels])
_DECODER_NAMED = msgspec.json.Decoder(_Answer[NamedLabels])
_HOST_VALUES = msgspec.json.Decoder(_LaxAnswer[_HostLabel], strict=False)


def _lax_vector(decoder: msgspec.json.Decoder[_LaxAnswer[_L]], raw: bytes, notes: list[str] | None = None
                ) -> list[_LaxSeries[_L]] | None:
    """The answer's series by the fast decoder, or None: not a successful vector it can read. Its
    warnings go to ``notes``."""
    try:
        answer = decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if answer.status != "success" or answer.data is None or answer.data.resultType != "vector":
        return None
    if notes is not None:
        notes.extend(_notes(answer.warnings, answer.data.warnings, answer.isPartial))
    return answer.data.result


PARTIAL_NOTE = "a partial answer (isPartial): a storage node did not answer"


def _notes(warnings: list[str] | None, inner: list[str] | None, partial: bool | None) -> list[str]:
    out = [*(warnings or ()), *(inner or ())]
    if partial and not out:
        out.append(PARTIAL_NOTE)
    return out


class PromQuery(Protocol):
    """The one call this module needs; a fake in unit tests, HTTP in real use."""

    def query(self, promql: str) -> list[Sample]:
        """An instant query's vector: (labels, value) per series."""
        ...


Column = tuple[list[str | None], list[float]]  # one answer's host labels and values, series by series


@runtime_checkable
class PromColumns(Protocol):
    """Optional: a client that can also decode an answer to its hosts and values alone (the summaries:
    a series per host, of which nothing else is read)."""

    def query_values(self, promql: str) -> Column:
        """An instant query's vector as (host label per series, value per series)."""
        ...


@runtime_checkable
class PromInstant(Protocol):
    """Optional: a client that can evaluate every query at one instant instead of at each one's arrival,
    and tells how far the server's clock is from this machine's."""

    when: float | None  # the instant every query is evaluated at (None: each at its arrival)
    clock_skew_s: float | None  # server minus this machine, from its answers (None: not known)

    def at(self, when: float) -> PromQuery:
        """The same server, every query evaluated at ``when`` (epoch seconds)."""
        ...


@runtime_checkable
class PromWarned(Protocol):
    """Optional: a client that keeps what the server warned of in its answers (a partial answer)."""

    warnings: list[tuple[str, str]]  # (query, warning), in the order the answers came


def clock_skew_line(skew_s: float | None) -> str:
    """The one line saying the server's clock is off this machine's by more than CLOCK_SKEW_MAX_S
    (empty when it is not, or not known): every age, and the report's instant, are this machine's."""
    if skew_s is None or abs(skew_s) <= CLOCK_SKEW_MAX_S:
        return ""
    way = "ahead of" if skew_s > 0 else "behind"
    return (f"Prometheus's clock is {abs(skew_s):.0f}s {way} this machine's (its HTTP Date): samples are "
            "read and aged by this machine's clock, so hosts may show as stale or not scraped; sync the "
            "clocks (NTP)")


def at_one_instant(client: PromQuery) -> PromQuery:
    """``client`` pinned to now, where it can be: every round of one report then reads the same instant.

    Unpinned, each query is evaluated as it arrives; a scrape that lands between two of them (a host's
    copies gone in one answer and not yet in the next, its faults round reading a newer state than the
    first round judged) mixes two states in one report. Pinned, only a scrape still being written at
    that instant can. The instant is fleetctl's clock; the report ages every sample against it too."""
    return client.at(time.time()) if isinstance(client, PromInstant) else client


@dataclass(frozen=True)
class RuleGroup:
    """A rule group as ``/api/v1/rules`` describes it: its interval, when it last ran (epoch s) and
    how long that took."""

    interval_s: float | None
    last_evaluation: float | None
    evaluation_s: float = 0.0


@runtime_checkable
class PromRules(Protocol):
    """Optional: a client that can also read the rules API."""

    def rule_group(self, name: str) -> RuleGroup | None:
        """The group called ``name``, or None when the server does not say (no rules API, no such group)."""
        ...


class _ApiGroup(msgspec.Struct):
    name: str
    interval: float | None = None
    lastEvaluation: datetime.datetime | None = None
    evaluationTime: float | None = None


class _ApiRules(msgspec.Struct):
    groups: list[_ApiGroup] = []


class _RulesAnswer(msgspec.Struct):
    status: str
    data: _ApiRules | None = None


_RULES_DECODER = msgspec.json.Decoder(_RulesAnswer)
# A rules API answer lists every rule of the server (not per series): small, but bounded anyway.
MAX_RULES_BYTES = 32 * 1024 * 1024


def rule_group_from(raw: bytes, name: str) -> RuleGroup | None:
    """The group ``name`` from a ``/api/v1/rules`` answer (Prometheus, Thanos, vmalert); when several
    servers report it (replicated rulers), the one evaluated last. None if absent or unreadable."""
    try:
        answer = _RULES_DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if answer.status != "success" or answer.data is None:
        return None
    best: RuleGroup | None = None
    for g in answer.data.groups:
        if g.name != name:
            continue
        last = None
        if g.lastEvaluation is not None:
            when = g.lastEvaluation
            last = (when if when.tzinfo else when.replace(tzinfo=datetime.UTC)).timestamp()
            last = last if last > 0 else None  # Prometheus says 0001-01-01 before the first evaluation
        interval = g.interval if g.interval is not None and g.interval > 0 else None
        took = g.evaluationTime if g.evaluationTime is not None and g.evaluationTime > 0 else 0.0
        if best is None or (last or 0.0) > (best.last_evaluation or 0.0):
            best = RuleGroup(interval, last, took)
    return best


# An instant query's answer for 10,000 hosts x 8 chips is tens of MB; past this, something is wrong.
MAX_ANSWER_BYTES = 512 * 1024 * 1024


class HttpPrometheus:
    """``POST {url}/api/v1/query`` with a per-query time limit; errors name the URL (without credentials)
    and the query.

    The limit goes to Prometheus too (its ``timeout`` parameter), so a query past it is stopped there
    rather than left running. ``user:password@`` in the URL is sent as HTTP basic auth, the token in
    ``token_file`` as a bearer token, ``tenant`` as ``X-Scope-OrgID`` (Mimir, Cortex); a redirect is
    an error, never followed with them.
    """

    def __init__(self, url: str, timeout_s: float = DEFAULT_QUERY_TIMEOUT_S, *,
                 token_file: Path | None = None, tenant: str | None = None) -> None:
        parsed, shown = _checked_url(url)
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise PrometheusError(f"--query-timeout {timeout_s}: expected a number of seconds above 0")
        self.url = shown.rstrip("/")
        self.timeout_s = timeout_s
        self.when: float | None = None  # evaluation time of every query (epoch s); None: each at arrival
        self.clock_skew_s: float | None = None
        self.warnings: list[tuple[str, str]] = []  # (query, warning) of the answers (PromWarned)
        self._headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if parsed.username is not None:
            user = urllib.parse.unquote(parsed.username)
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self.token_file = token_file
        if token_file is not None:
            if parsed.username is not None:
                raise PrometheusError(f"--prometheus-url {shown!r} has a user and --prometheus-token-file "
                                      "is given: use one")
            self._headers["Authorization"] = f"Bearer {bearer_token(token_file)}"
        if tenant is not None:
            if not _HEADER_VALUE.fullmatch(tenant):
                raise PrometheusError(f"--prometheus-tenant {tenant[:40]!r}: expected printable ASCII "
                                      f"without spaces, 1 to {_HEADER_MAX} characters")
            self._headers["X-Scope-OrgID"] = tenant

    def at(self, when: float) -> HttpPrometheus:
        pinned = copy.copy(self)
        pinned.when = when
        pinned.clock_skew_s = None
        pinned.warnings = []  # each report its own
        if self.token_file is not None:  # read again for each report: a rotated token (--watch) is used
            pinned._headers = {**self._headers, "Authorization": f"Bearer {bearer_token(self.token_file)}"}
        return pinned

    def query(self, promql: str) -> list[Sample]:
        notes: list[str] = []
        # A selector without a metric name (`{__name__=~"a|b",...}`): each series's name is read too.
        samples = parse_vector(self._answer(promql), f"{self.url}: query {_shown(promql)}",
                               named=promql.startswith("{"), notes=notes)
        self.warnings.extend([(promql, note) for note in notes])  # atomic: the round's threads share it
        return samples

    def query_values(self, promql: str) -> Column:
        notes: list[str] = []
        column = parse_values(self._answer(promql), f"{self.url}: query {_shown(promql)}", notes=notes)
        self.warnings.extend([(promql, note) for note in notes])
        return column

    def _answer(self, promql: str) -> bytes:
        """The raw answer to ``promql``; a PrometheusError naming the query when there is none."""
        shown = _shown(promql)
        # nocache=1: VictoriaMetrics otherwise answers an instant query "now" as of its latency offset
        # (30 s by default), every sample that much older; Prometheus and Thanos ignore the parameter.
        form = {"query": promql, "timeout": query_timeout_param(self.timeout_s), "nocache": "1"}
        if self.when is not None:
            form["time"] = f"{self.when:.3f}"
        body = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=body, headers=self._headers)  # noqa: S310
        slow = (f"{self.url}: query {shown} took longer than the {self.timeout_s:g}s query timeout "
                f"(--query-timeout)")
        try:
            # The scheme was checked in __init__ (http/https only). Prometheus stops the query at
            # timeout_s; the socket waits a little longer for that answer.
            with _OPENER.open(request, timeout=self.timeout_s + 2.0) as resp:
                self._note_clock(resp.headers.get("Date"), time.time())  # as the headers arrive
                raw: bytes = resp.read(MAX_ANSWER_BYTES + 1)
                missing = resp.length  # what Content-Length promised and the connection did not bring
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                to = _without_credentials(urllib.parse.urlsplit(exc.headers.get("Location") or ""))
                raise PrometheusError(f"{self.url}: HTTP {exc.code} redirect to {to!r}, not followed (it "
                                      "would take the credentials along): give --prometheus-url as the "
                                      "server's own URL") from None
            text = _error_text(exc)
            if (exc.code == 503 and "timeout" in text.lower()) or "timed out" in text.lower():
                raise PrometheusError(slow) from None
            raise PrometheusError(f"{self.url}: query {shown}: HTTP {exc.code} {exc.reason}" + text) from None
        except TimeoutError:
            raise PrometheusError(slow) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise PrometheusError(slow) from None
            raise PrometheusError(f"{self.url}: cannot query Prometheus: {reason}") from None
        except http.client.HTTPException as exc:  # not HTTP, or the answer cut short
            raise PrometheusError(f"{self.url}: query {shown}: broken HTTP answer "
                                  f"({type(exc).__name__})") from None
        if missing:
            raise PrometheusError(f"{self.url}: query {shown}: broken HTTP answer (cut short, "
                                  f"{missing} bytes missing)")
        if len(raw) > MAX_ANSWER_BYTES:
            raise PrometheusError(f"{self.url}: query {shown}: answer over {MAX_ANSWER_BYTES} bytes")
        return raw

    def _note_clock(self, date: str | None, now: float) -> None:
        # The Date header is stamped when the answer starts, in whole seconds: each answer's delay and
        # the truncation only make the server look behind, so the largest skew of a report's answers
        # is the closest to the truth (a quick one: the rules' info).
        try:
            stamped = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError, IndexError, OverflowError):
            stamped = None
        if stamped is None:
            return
        if stamped.tzinfo is None:  # asctime and "-0000" dates: HTTP dates are UTC, never local time
            stamped = stamped.replace(tzinfo=datetime.UTC)
        skew = stamped.timestamp() - now
        if self.clock_skew_s is None or skew > self.clock_skew_s:  # assigned whole: threads share it
            self.clock_skew_s = skew

    def rule_group(self, name: str) -> RuleGroup | None:
        """``GET {url}/api/v1/rules?type=record``: the group's interval and last evaluation. Optional
        information: any failure (no rules API, as on VictoriaMetrics without vmalert) is None."""
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        request = urllib.request.Request(f"{self.url}/api/v1/rules?type=record", headers=headers)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as resp:
                raw = resp.read(MAX_RULES_BYTES + 1)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return None if len(raw) > MAX_RULES_BYTES else rule_group_from(raw, name)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header to wherever one points
    (and turn a query's POST into a GET without it). The 3xx reaches the caller as an HTTPError."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


# The scheme is checked in HttpPrometheus.__init__ (http/https only).
_OPENER = urllib.request.build_opener(_NoRedirect)
# A token or tenant: one HTTP header value, nothing that could end the header or start another.
_HEADER_MAX = 4096
_HEADER_VALUE = re.compile(rf"[\x21-\x7e]{{1,{_HEADER_MAX}}}")


def bearer_token(path: Path) -> str:
    """The token in ``path``: its one line, the line break stripped. Errors name the file, never the
    token (an error message may land in a log)."""
    where = f"--prometheus-token-file {path}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PrometheusError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise PrometheusError(f"{where}: not an ASCII token") from None
    if not token:
        raise PrometheusError(f"{where}: empty")
    if not _HEADER_VALUE.fullmatch(token):
        raise PrometheusError(f"{where}: expected one token (printable ASCII, no spaces or line breaks, at "
                              f"most {_HEADER_MAX} characters)")
    return token


def _shown(promql: str) -> str:
    """A query as named in messages: a detail query's long host list is clipped."""
    return repr(promql if len(promql) <= 120 else promql[:100] + "...")


def query_timeout_param(seconds: float) -> str:
    """The ``timeout`` a query asks of the server, in whole milliseconds: a duration Prometheus, Thanos
    and VictoriaMetrics all read (``2.5s`` is not one: Prometheus refuses every query that sends it)."""
    return f"{max(1, round(seconds * 1000))}ms"


def _checked_url(url: str) -> tuple[urllib.parse.SplitResult, str]:
    """``--prometheus-url`` parsed, and as messages may show it; a PrometheusError unless it is
    http(s)://host[:port][/prefix] in ASCII with any ``@`` in its user:password part only."""
    usage = "expected http(s)://[user:password@]host[:port][/prefix]"
    url = url.strip()  # a URL read from a file or a secret often ends in a line break
    if not url.isascii() or not url.isprintable():
        raise PrometheusError(f"--prometheus-url: {usage}, in printable ASCII (percent-encode anything else)")
    parsed: urllib.parse.SplitResult | None = None
    try:
        parsed = urllib.parse.urlsplit(url)
        port_ok = parsed.hostname is not None and (parsed.port is None or parsed.port > 0)
    except ValueError:  # a port that is not a number or out of range, a bracket left open
        port_ok = False
    if parsed is None:  # not shown either: what cut it short may be in a password
        raise PrometheusError(f"--prometheus-url (not shown: it may hold a password): not a URL; {usage}")
    if "@" in url.partition("://")[2].replace(parsed.netloc, "", 1):
        # Not shown: a password with an unencoded '/', '?' or '#' ends the host part early, and
        # what follows (the rest of the password) would be printed as the path.
        raise PrometheusError(f"--prometheus-url (not shown: it may hold a password): {usage}; "
                              "percent-encode '/', '?', '#' and '@' in a user or password")
    shown = _without_credentials(parsed)
    if parsed.scheme not in ("http", "https") or not port_ok:
        raise PrometheusError(f"--prometheus-url {shown!r}: {usage}")
    return parsed, shown


def _without_credentials(parsed: urllib.parse.SplitResult) -> str:
    if "@" not in parsed.netloc:
        return parsed.geturl()
    return parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()


def _error_text(exc: urllib.error.HTTPError) -> str:
    """Prometheus's own ``error`` text from an error answer (a bad query: HTTP 400), if any."""
    try:
        answer = msgspec.json.decode(exc.read(64 * 1024), type=_Answer)
    except (msgspec.DecodeError, OSError, http.client.HTTPException):
        return ""
    return f": {answer.error[:200]}" if answer.error else ""


def parse_values(raw: bytes, where: str, *, notes: list[str] | None = None) -> Column:
    """An answer's host labels and values alone (every other label skipped while decoding); what
    the fast decoder refuses goes through :func:`parse_vector`, which reads it or says what is wrong.
    The answer's warnings go to ``notes``."""
    result = _lax_vector(_HOST_VALUES, raw, notes)
    if result is not None:
        return [series.metric.host for series in result], [series.value[1] for series in result]
    return columns_of(parse_vector(raw, where, notes=notes))


def columns_of(samples: list[Sample]) -> Column:
    return [labels.host for labels, _ in samples], [value for _, value in samples]


def parse_vector(raw: bytes, where: str, *, named: bool = False,
                 notes: list[str] | None = None) -> list[Sample]:
    """An instant query's JSON answer, decoded straight into typed samples (``named``: their labels
    as :class:`NamedLabels`). The answer's warnings (a partial answer) go to ``notes``."""
    quick: list[_LaxSeries[Labels]] | list[_LaxSeries[NamedLabels]] | None = (
        _lax_vector(_NUMERIC_NAMED, raw, notes) if named else _lax_vector(_NUMERIC, raw, notes))
    if quick is not None:
        return [(series.metric, series.value[1]) for series in quick]
    try:  # the strict path: says what is wrong, or reads what lax mode cannot
        answer = (_DECODER_NAMED if named else _DECODER).decode(raw)
    except msgspec.ValidationError as exc:
        raise PrometheusError(f"{where}: malformed answer ({str(exc)[:120]})") from None
    except msgspec.DecodeError:
        raise PrometheusError(f"{where}: the answer is not JSON") from None
    if answer.status != "success":
        raise PrometheusError(f"{where}: {answer.error or 'not a successful Prometheus answer'}")
    if answer.data is None or answer.data.resultType != "vector":
        got = None if answer.data is None else answer.data.resultType
        raise PrometheusError(f"{where}: expected a vector, got {got!r}")
    if notes is not None:
        notes.extend(_notes(answer.warnings, answer.data.warnings, answer.isPartial))
    out: list[Sample] = []
    for series in answer.data.result:
        try:
            out.append((series.metric, float(series.value[1])))
        except ValueError:
            raise PrometheusError(f"{where}: malformed value {series.value[1][:40]!r}") from None
    return out


Up = tuple[str | None, str | None, float]  # (job, instance, up)


@dataclass
class _HostData:
    status: Status | None = None
    version: str | None = None
    gauges: dict[str, float] = field(default_factory=dict)
    chips: dict[int, dict[str, Any]] = field(default_factory=dict)
    node_problems: list[Problem] = field(default_factory=list)
    seen_problems: set[tuple[int | None, str, str, str]] = field(default_factory=set)
    # The targets (job, instance) that sent chips' stale flags, and those that sent their rank.
    chip_targets: set[tuple[str | None, str | None]] = field(default_factory=set)
    ranked_targets: set[tuple[str | None, str | None]] = field(default_factory=set)
    # The targets that sent fleet_agent_info, and those that sent the chips' healthy count (a rollup).
    agent_targets: set[tuple[str | None, str | None]] = field(default_factory=set)
    rollup_targets: set[tuple[str | None, str | None]] = field(default_factory=set)
    # Only its chips that are not healthy (or have a problem) were read: the rest are its rollups.
    faults_only: bool = False
    # Its node status series (`== 1`) read: more than one from one target is a leftover series.
    statuses: int = 0


def _ups(samples: Iterable[Sample], wanted: set[str]) -> dict[str, list[Up]]:
    """Every ``up`` series of each wanted host (more than one when several jobs scrape it)."""
    out: dict[str, list[Up]] = {}
    isfinite = math.isfinite
    for labels, value in samples:
        host = labels.host
        if host in wanted and isfinite(value):
            seen = out.get(host)
            if seen is None:
                out[host] = [(labels.job, labels.instance, value)]
            else:
                seen.append((labels.job, labels.instance, value))
    return out


def agent_up(ups: list[Up] | None, agent_jobs: set[str], host: Host) -> float | None:
    """The agent's own ``up``: other jobs scraping the same host (node_exporter, say) do not count.
    The agent's target is the one at its endpoint (as ``prometheus targets`` writes it) or in a
    job that scrapes agents; when no series tells, every ``up`` of the host counts."""
    if not ups:
        return None
    if len(ups) == 1:  # its own or, with nothing else to go by, the one there is: the same value
        return ups[0][2]
    return max(_agent_ups(ups, agent_jobs, host))


def _agent_ups(ups: list[Up], agent_jobs: set[str], host: Host) -> list[float]:
    """The ``up`` of each target that scrapes the host's agent (see :func:`agent_up`)."""
    endpoint = host.agent_endpoint
    own = [v for job, instance, v in ups if instance == endpoint or job in agent_jobs]
    return own or [v for _job, _instance, v in ups]


def _chip_index(labels: Labels) -> int | None:
    try:
        return int(labels.chip or "")
    except ValueError:
        return None


class _Gathered:
    """Per-host data, and the jobs that scrape agents (those with ``fleet_agent_info`` series), added
    one answer at a time (:meth:`add`): an answer can be dropped once added.

    A host may be scraped by more than one job or instance (a second Prometheus job, a stale
    target): statuses take the worst series, problems count once, gauges the last series.
    NaN and infinite samples are left out: a value we cannot use is absent, never made up.
    """

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.data: dict[str, _HostData] = defaultdict(_HostData)
        self.agent_jobs: set[str] = set()

    def unranked(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` scraped from an agent that sent its chips but no rank (an agent from before
        it; a second target may be new): every agent sends each chip's ``fleet_chip_stale``."""
        out = []
        for n in names:
            d = self.data.get(n)
            if d is not None and (d.chip_targets - d.ranked_targets
                                  or any("status" not in c for c in d.chips.values())):
                out.append(n)
        return out

    def add(self, promql: str, samples: list[Sample]) -> None:
        name = promql.split(" ", 1)[0].split("{", 1)[0]
        if name == "up":  # read by _ups
            return
        if name == FAULT_DETAIL:  # an agent's copies of one series: the one its query names
            copied = _FAULT_METRIC_OF.get(promql)
            if copied is not None:
                self._add(copied, [sample for sample in samples if sample[0].metric == copied])
            return
        if not name:  # one selector of several metrics (`{__name__=~...}`): each series names its own
            by_name: dict[str, list[Sample]] = defaultdict(list)
            for sample in samples:
                if metric := getattr(sample[0], "name", None):
                    by_name[metric].append(sample)
            for each, some in by_name.items():
                self._add(each, some)  # a name as the answer says it, never parsed again as a query
            return
        self._add(name, samples)

    def _add(self, name: str, samples: list[Sample]) -> None:
        """The series of metric ``name``."""
        data, agent_jobs, wanted = self.data, self.agent_jobs, self.wanted
        info, ranked = name == "fleet_agent_info", name == RANK
        status_series, stale = ranked or name == "fleet_chip_status", name == "fleet_chip_stale"
        for labels, value in samples:
            if info and labels.job is not None:
                agent_jobs.add(labels.job)  # any host's, and the rules' (no host label)
            host = labels.host
            if host is None or host not in wanted or not math.isfinite(value):
                continue
            d = data[host]
            if name == "fleet_node_status":
                d.status = _worst(d.status, _status(labels.status))
                d.statuses += 1
            elif info:
                d.version = labels.version or d.version
                d.agent_targets.add((labels.job, labels.instance))
            elif name in _NODE_LINE:
                d.gauges[name] = value
                if name == _CHIPS_HEALTHY:
                    d.rollup_targets.add((labels.job, labels.instance))
            else:
                idx = _chip_index(labels)
                if name == "fleet_health_check_failing":
                    problem = _problem(labels)
                    seen = (idx, problem.check, problem.severity.value, problem.action.value)
                    if seen in d.seen_problems:
                        continue
                    d.seen_problems.add(seen)
                    if idx is None:
                        d.node_problems.append(problem)
                    else:
                        d.chips.setdefault(idx, {}).setdefault("problems", []).append(problem)
                    continue
                if idx is None:
                    continue
                chip = d.chips.setdefault(idx, {})
                # The chip's identity from its status series when labels differ between series (two
                # agent versions), whichever answer came first.
                for key in ("kind", "model", "uuid", "vendor"):
                    label = getattr(labels, key)
                    if label and (status_series or key not in chip):
                        chip[key] = label
                if ranked:
                    d.ranked_targets.add((labels.job, labels.instance))
                    chip["status"] = _worst(chip.get("status"), _OF_RANK.get(value, Status.UNKNOWN))
                elif status_series:
                    chip["status"] = _worst(chip.get("status"), _status(labels.status))
                elif name in _CHIP_GAUGES:
                    if stale:
                        d.chip_targets.add((labels.job, labels.instance))
                    chip[_CHIP_GAUGES[name]] = value


def _worst(current: Status | None, new: Status) -> Status:
    return new if current is None else Status.worst([current, new])


def _problem(labels: Labels) -> Problem:
    check = labels.check or "?"
    # Metrics carry no message; the check's name is the message.
    action = _action(labels.action)
    raw = labels.severity or "warning"
    try:
        return Problem(check=check, severity=Severity(raw), message=check, action=action)
    except ValueError:  # a newer agent's severity: shown, as a warning, rather than dropped
        return Problem(check=check, severity=Severity.WARNING, message=f"{check} (severity {raw!r})",
                       action=action)


def _action(raw: str | None) -> Action:
    """The ``action`` label as the agent's JSON report would decode it: a plausible name this version
    does not know stays as sent (the remediation policy reports it, as it does from the agent itself);
    no label (an agent before it) or a malformed one reads none."""
    if not raw:
        return Action.NONE
    try:
        return Action(raw)
    except ValueError:
        return Action.NONE


def _status(value: str | None) -> Status:
    try:
        return Status(value or "unknown")
    except ValueError:
        return Status.UNKNOWN


def _node(host: Host, d: _HostData, now: float) -> NodeReport:
    chips = []
    for idx in sorted(d.chips):
        c = d.chips[idx]
        util = c.get("utilization_pct")
        chips.append(ChipReport(
            index=idx, kind=c.get("kind", "?"), vendor=c.get("vendor", ""), model=c.get("model", "?"),
            uuid=c.get("uuid", ""), pci_bus_id="", status=c.get("status") or Status.UNKNOWN,
            stale=bool(c.get("stale")), temperature_c=c.get("temperature_c"),
            utilization_pct=None if util is None else util * 100.0,
            memory_used_bytes=None if c.get("memory_used_bytes") is None else int(c["memory_used_bytes"]),
            memory_total_bytes=None if c.get("memory_total_bytes") is None else int(c["memory_total_bytes"]),
            power_w=c.get("power_w"), problems=list(c.get("problems", [])),
        ))
    expected = d.gauges.get("fleet_node_chips_expected")
    return NodeReport(
        host=host.name, agent_version=d.version or "",
        # Without a sample time the verdict says the age is unknown (sample_time_known=False).
        sampled_at=d.gauges.get("fleet_sample_timestamp_seconds", now),
        interval_s=0.0,  # not exported; the controller's stale threshold falls back to its minimum
        status=d.status or Status.UNKNOWN, chips_expected=None if expected is None else int(expected),
        chips=chips, host_metrics=HostMetrics(), problems=d.node_problems,
        drained=bool(d.gauges.get("fleet_node_drained")), schema=SCHEMA_VERSION,
    )


def _query_each(client: PromQuery, queries: Sequence[str], deadline_s: float,
                take: Callable[[str, Any], None], columns: Sequence[str] = (), *,
                whole_s: float | None = None) -> None:
    """Every query, all within ``deadline_s``, each answer handed to ``take`` as it arrives (see
    :class:`_Asking`)."""
    _Asking(client, queries, columns).each(deadline_s, take, whole_s=whole_s)


class _Asking:
    """Queries asked four at a time from the moment this is made; :meth:`each` hands each answer to
    ``take`` in the caller's thread as it arrives and then drops it (the chip detail of 14,000 hosts is
    hundreds of MB decoded: never all held at once). The answers that arrive before :meth:`each` is
    called wait, decoded, in a queue. ``columns`` are decoded as host labels and values alone."""

    def __init__(self, client: PromQuery, queries: Sequence[str], columns: Sequence[str] = ()) -> None:
        # Daemon threads: a server trickling its answer (each read within the timeout) must not hold
        # the command past its deadline, at exit included (concurrent.futures joins its own threads).
        from fleet_agent.sampler import DaemonThreadPool

        self.client, self.queries = client, list(queries)
        self.started = time.monotonic()
        self._pool = DaemonThreadPool(4, "prometheus")
        by_column = client.query_values if isinstance(client, PromColumns) else None
        wide = set(columns)
        arrived: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
        self._arrived = arrived

        def ask(i: int) -> None:
            q = self.queries[i]
            try:
                if q not in wide:
                    answer: Any = client.query(q)
                else:
                    answer = by_column(q) if by_column is not None else columns_of(client.query(q))
            except BaseException as exc:  # noqa: BLE001  # raised again in the caller's thread, as it was
                arrived.put((i, None, exc))
            else:
                arrived.put((i, answer, None))

        self._futures = [self._pool.submit(ask, i) for i in range(len(self.queries))]

    def each(self, deadline_s: float, take: Callable[[str, Any], None], since: float | None = None, *,
             whole_s: float | None = None) -> None:
        """Every answer to ``take``, all within ``deadline_s`` of ``since`` (default: the asking; a round
        asked early has its head start free). The first failure is raised as it failed; past the
        deadline, the message names the queries still unanswered and the whole ``--deadline``
        (``whole_s``, where ``deadline_s`` is what a later round had left of it)."""
        queries = self.queries
        pending = set(range(len(queries)))
        end = (self.started if since is None else since) + max(deadline_s, 0.0)
        try:
            while pending:
                try:
                    i, answer, exc = self._arrived.get(timeout=max(end - time.monotonic(), 0.0))
                except queue.Empty:
                    where = getattr(self.client, "url", "Prometheus")
                    slow = [_shown(queries[i]) for i in sorted(pending)]
                    more = f" and {len(slow) - 2} more" if len(slow) > 2 else ""
                    whole = deadline_s if whole_s is None else whole_s
                    raise PrometheusError(f"{where}: no answer within the {whole:g}s deadline "
                                          f"(--deadline) to query {', '.join(slow[:2])}{more}") from None
                if exc is not None:
                    raise exc
                pending.discard(i)
                take(queries[i], answer)
                del answer
        finally:
            self.close()

    def close(self) -> None:
        """Drop the queries not started; the threads end once idle (`--watch` asks every round:
        nothing may accumulate)."""
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=False)


def _regex_value(name: str) -> str:
    """``name`` as a literal inside a PromQL regex in a double-quoted string (RE2 metacharacters
    escaped, then the string's own escapes)."""
    escaped = "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in name)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def _host_matchers(names: Iterable[str]) -> Iterator[str]:
    """``names`` (sorted, in chunks) as ``host=~"..."`` matchers: a set of literal names in one regex,
    which Prometheus resolves from its index without scanning other hosts' series."""
    ordered = sorted(set(names))
    for i in range(0, len(ordered), _DETAIL_CHUNK):
        yield 'host=~"{}"'.format("|".join(_regex_value(n) for n in ordered[i:i + _DETAIL_CHUNK]))


def detail_queries(names: Iterable[str], metrics: Sequence[tuple[str, str]] = _DETAIL) -> list[str]:
    """The per-chip queries (``metrics``) restricted to ``names``: every chip of those hosts."""
    return [f"{name}{{{matcher}}}{tail}" for matcher in _host_matchers(names) for name, tail in metrics]


def fault_queries(names: Iterable[str]) -> list[str]:
    """The first of a faults-only read of ``names`` (see :func:`_read_faults`): their node status,
    failing checks, agent info, per-host gauges and rollups (one selector: each series says its
    ``__name__``), and their chips that are not healthy (rank above healthy's 0)."""
    node = f'__name__=~"{"|".join(_NODE_LINE)}"'
    return [q for matcher in _host_matchers(names) for q in (
        f"fleet_node_status{{{matcher}}} == 1", f"fleet_health_check_failing{{{matcher}}} == 1",
        f"fleet_agent_info{{{matcher}}}", f"{{{node},{matcher}}}", f"{RANK}{{{matcher}}} > 0")]


def chip_queries(chips: Mapping[int, Iterable[str]]) -> list[str]:
    """The per-chip gauges of chip ``i`` of each host in ``chips[i]``: one selector per chip index (a
    host matcher and ``chip``), whose series say their ``__name__``."""
    gauges = f'__name__=~"{"|".join(_CHIP_GAUGES)}"'
    return [f'{{{gauges},chip="{i}",{matcher}}}'
            for i in sorted(chips) for matcher in _host_matchers(chips[i])]


# A host's summaries as one tuple in SUMMARY_KEYS order, NaN where a summary is missing or unusable.
Line = tuple[float, ...]
_AT = {key: i for i, key in enumerate(SUMMARY_KEYS)}
_HEALTHY, _SAMPLED, _EXPECTED, _PRESENT, _OK, _DRAINED = (
    _AT[k] for k in ("node_healthy", "sample_timestamp_seconds", "chips_expected", "chips_present",
                     "chips_healthy", "drained"))
_TEMP, _UTIL, _USED, _TOTAL, _POWER = (
    _AT[k] for k in ("max_temperature_celsius", "mean_utilization_ratio", "memory_used_bytes",
                     "memory_total_bytes", "power_watts"))
# What a faults-only read of a host (see _read_faults) takes from its own per-host series: the Line
# index each fills (node_healthy comes from its status).
_CHIPS_HEALTHY, _PRESENT_GAUGE = "fleet_node_chips_healthy", "fleet_node_chips_present"
_NODE_LINE: dict[str, int] = {
    "fleet_sample_timestamp_seconds": _SAMPLED, "fleet_node_chips_expected": _EXPECTED,
    "fleet_node_drained": _DRAINED, _PRESENT_GAUGE: _PRESENT, _CHIPS_HEALTHY: _OK,
    "fleet_node_chip_temperature_max_celsius": _TEMP, "fleet_node_chip_utilization_mean_ratio": _UTIL,
    "fleet_node_chip_memory_used_bytes": _USED, "fleet_node_chip_memory_total_bytes": _TOTAL,
    "fleet_node_chip_power_watts": _POWER,
}
# The line index each version-4 reading record fills; the versions 1-3 summary queries.
_READING_AT = {query: _AT[key] for key, query in READINGS.items()}
# A clean host's line is written out in SUMMARY_KEYS order (_SummaryTable._clean_lines): these last.
_READINGS_AT = (_TEMP, _UTIL, _USED, _TOTAL, _POWER)
if (_HEALTHY, _SAMPLED, _EXPECTED, _PRESENT, _OK, _DRAINED, *_READINGS_AT) != tuple(range(len(SUMMARY_KEYS))):
    raise AssertionError("SUMMARY_KEYS reordered: _SummaryTable._clean_lines writes the old order")
_SUMMARY_QUERY_SET = frozenset(SUMMARY_QUERIES)
_FAULT_METRIC_OF = dict(zip(FAULT_QUERIES, FAULT_METRICS, strict=True))


def _known(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summary_line(values: Mapping[str, float]) -> Line:
    """A host's summaries by name as a :data:`Line`."""
    return tuple(values.get(key, math.nan) for key in SUMMARY_KEYS)


class SummaryRow(HostRow):
    """A host whose figures are per-host summaries, not folded from its chips: a clean host (healthy,
    every chip healthy and present, a fresh sample) from the recording rules, no chip listed; or a host
    read faults only (see :func:`_read_faults`) from its agent's rollups, its chips not healthy listed.
    Built with :meth:`of`."""

    line: Line
    models: list[tuple[str, str, str, int]]  # (kind, vendor, model, count) per chip model

    @classmethod
    def of(cls, line: Line, models: list[tuple[str, str, str, int]], **fields: Any) -> SummaryRow:
        """The row from its HostRow fields, its summaries and its chip models."""
        row = cls.__new__(cls)
        HostRow.__init__(row, **fields)
        row.line = line
        row.models = models
        return row

    @property
    def summary_values(self) -> dict[str, float]:
        """The summaries the rules recorded for this host (those with a usable value)."""
        return {key: v for key, v in zip(SUMMARY_KEYS, self.line, strict=True) if math.isfinite(v)}

    @property
    def chips_present(self) -> int:
        return int(_known(self.line[_PRESENT]) or 0)

    @property
    def chips_total(self) -> int:
        return max(self.chips_present, self.chips_expected or 0)

    @property
    def chips_ok(self) -> int:
        return int(_known(self.line[_OK]) or 0)

    @property
    def max_temperature_c(self) -> float | None:
        return _known(self.line[_TEMP])

    @property
    def mean_utilization_pct(self) -> float | None:
        util = _known(self.line[_UTIL])
        return None if util is None else util * 100.0

    @property
    def memory_used_bytes(self) -> int | None:
        used = _known(self.line[_USED])
        return None if used is None else int(used)

    @property
    def memory_total_bytes(self) -> int | None:
        total = _known(self.line[_TOTAL])
        return None if total is None else int(total)

    @property
    def power_w(self) -> float | None:
        return _known(self.line[_POWER])

    def chip_figures(self) -> ChipFigures:
        # As the properties above, in one call: 100,000 summary rows in a JSON report.
        line = self.line
        isfinite = math.isfinite
        present, ok, temp, util, used, total = (line[_PRESENT], line[_OK], line[_TEMP], line[_UTIL],
                                                line[_USED], line[_TOTAL])
        return (int(present) if isfinite(present) else 0, int(ok) if isfinite(ok) else 0,
                temp if isfinite(temp) else None, util * 100.0 if isfinite(util) else None,
                int(used) if isfinite(used) else None, int(total) if isfinite(total) else None)


class _SummaryTable:
    """Each host's summaries (a :data:`Line`), its chip models and agent version, from the rules of
    the version :meth:`finish` is given: from version 4 on, only the clean hosts have a line
    (everything else is read chip by chip anyway).

    Answers are folded in one at a time as they arrive (:meth:`take`), while Prometheus is still
    answering the others, and merged host by host (a server lists each answer's series in its own
    order: a recording rule's output in the order its series were created). A host twice in one answer
    (replicas that a Thanos without deduplication passes on) keeps its usable value: an unusable one
    never replaces it.
    """

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.versions: dict[str, str] = {}
        self._clean: dict[str, tuple[float, str | None]] = {}  # version 4: sample time, chips_expected
        self._readings: dict[int, dict[str | None, float]] = {}  # version 4: line index -> host -> value
        self._old: set[str | None] = set()
        self._summaries: dict[str, Column] = {}  # versions 1-3
        # (kind, vendor, model, count) per host, a model once (the largest count): replicas passed on
        # undeduplicated must not double the chips, which a version-4 clean host is counted by.
        self.models: dict[str, list[tuple[str, str, str, int]]] = {}
        self.lines: dict[str, Line] = {}
        self.clean_records = False

    def take(self, query: str, answer: Any) -> bool:
        """Fold in one answer of the table's queries; False for any other query's (left to the caller)."""
        if query in _READING_AT:
            self._take_reading(_READING_AT[query], answer)
        elif query == CLEAN:
            self._take_clean(answer)
        elif query == MODELS:
            self._take_models(answer)
        elif query == WITHOUT_ROLLUPS:
            self._old.update(labels.host for labels, _ in answer)
        elif query in _SUMMARY_QUERY_SET:
            self._summaries[query] = answer
        else:
            return False
        return True

    def _take_models(self, samples: list[Sample]) -> None:
        models, versions, wanted, isfinite = self.models, self.versions, self.wanted, math.isfinite
        for labels, value in samples:
            host = labels.host
            if host in wanted and isfinite(value):
                count = int(value) if value > 0 else 0
                kind, vendor, model = labels.kind or "?", labels.vendor or "", labels.model or "?"
                per_host = models.get(host)
                if per_host is None:  # nearly every host: one model, in one series
                    models[host] = [(kind, vendor, model, count)]
                else:
                    _add_model(per_host, kind, vendor, model, count)
                if labels.version:
                    versions[host] = labels.version

    def _take_clean(self, samples: list[Sample]) -> None:
        # A host twice (replicas, or rules version 6 while its agent's count was configured a moment
        # ago): the record that says the agent has a count wins, whatever order the server lists them in.
        clean, wanted, isfinite = self._clean, self.wanted, math.isfinite
        for labels, ts in samples:
            host = labels.host
            if host in wanted and isfinite(ts):
                had = clean.get(host)
                if had is None or (had[1] != "agent" and labels.chips_expected == "agent"):
                    clean[host] = (ts, labels.chips_expected)

    def _take_reading(self, i: int, column: Column) -> None:
        # Usable values only: a host twice (replicas passed on) keeps its usable one, a NaN never hides it.
        names, values = column
        if all(map(math.isfinite, values)):
            self._readings[i] = dict(zip(names, values, strict=True))
        else:
            isfinite = math.isfinite
            self._readings[i] = {name: v for name, v in zip(names, values, strict=True) if isfinite(v)}

    def finish(self, version: int) -> None:
        """The lines and models, once every answer is in (rules of ``version``)."""
        self.clean_records = version >= RULES_VERSION_CLEAN
        self.lines = self._clean_lines() if self.clean_records else self._summary_lines(self._summaries)
        # What the lines were made from is not needed again (every host's, at 100,000 hosts).
        self._clean.clear()
        self._readings.clear()
        self._summaries.clear()

    @staticmethod
    def _summary_lines(answers: Mapping[str, Column]) -> dict[str, Line]:
        """Versions 1-3: every summary of every host, one answer per summary."""
        isfinite = math.isfinite
        empty: Column = ([], [])
        merged: dict[str | None, list[float]] = {}
        for i, query in enumerate(SUMMARY_QUERIES):
            names, values = answers.get(query, empty)
            for name, value in zip(names, values, strict=True):
                if isfinite(value):
                    line = merged.get(name)
                    if line is None:
                        line = merged[name] = [math.nan] * len(SUMMARY_KEYS)
                    line[i] = value
        return {name: tuple(line) for name, line in merged.items() if name is not None}

    def _clean_lines(self) -> dict[str, Line]:
        """Version 4 on: the clean hosts' lines, as the summaries would have been (healthy, every chip
        present counted by model and healthy, not drained). Without models, no count: no line."""
        out: dict[str, Line] = {}
        models, nan = self.models, math.nan
        empty: dict[str | None, float] = {}
        temp, util, used, total, power = (self._readings.get(i, empty) for i in _READINGS_AT)
        for host, (ts, chips_expected) in self._clean.items():
            per_model = models.get(host)
            if not per_model:
                continue
            present = float(per_model[0][3] if len(per_model) == 1 else sum(m[3] for m in per_model))
            # In SUMMARY_KEYS order, the readings last (_READINGS_AT); their values are usable ones.
            out[host] = (1.0, ts, present if chips_expected == "agent" else nan, present, present, 0.0,
                         temp.get(host, nan), util.get(host, nan), used.get(host, nan), total.get(host, nan),
                         power.get(host, nan))
        return out

    def clean(self, h: Host, now: float, seen_at: float | None = None) -> bool:
        """A summary that leaves nothing to look at: any doubt sends the host to the per-chip detail.
        The sample must have been fresh when the rules saw it (``seen_at``, default now) and not be
        stamped in the future."""
        line = self.lines.get(h.name)
        if line is None:
            return False
        present, ts = line[_PRESENT], line[_SAMPLED]
        if line[_HEALTHY] != 1.0 or not math.isfinite(present) or not math.isfinite(ts):
            return False
        expected = h.expected_chips if h.expected_chips is not None else _known(line[_EXPECTED])
        ok, drained = _known(line[_OK]), _known(line[_DRAINED])
        seen_at = now if seen_at is None else seen_at
        return ((ok or 0.0) == present and (expected is None or present >= expected) and not drained
                and 0.0 <= now - ts and seen_at - ts < STALE_MIN_S)

    def without_rollups(self, hosts: Iterable[Host]) -> list[str]:
        """The hosts whose agents are older than the rules: the rules' record of them (version 4 on:
        no rollups; version 6 on: no fleet_node_clean), or (version 3) a summary with chips and no
        chips_healthy."""
        if self.clean_records:
            return [h.name for h in hosts if h.name in self._old]
        out = []
        for h in hosts:
            line = self.lines.get(h.name)
            if line is not None and line[_PRESENT] > 0 and math.isnan(line[_OK]):
                out.append(h.name)
        return out

    def row(self, h: Host, now: float) -> SummaryRow:
        """A clean host's row (see :meth:`clean`)."""
        line = self.lines[h.name]
        ts = line[_SAMPLED]
        expected = h.expected_chips
        if expected is None and math.isfinite(line[_EXPECTED]):
            expected = int(line[_EXPECTED])
        return SummaryRow.of(line, self.models.get(h.name, []), name=h.name, address=h.address,
                             port=h.agent_port, groups=h.groups, status=HostHealth.HEALTHY,
                             agent_version=self.versions.get(h.name), sampled_at=ts, age_s=max(0.0, now - ts),
                             chips_expected=expected, vars=h.vars)


def _add_model(models: list[tuple[str, str, str, int]], kind: str, vendor: str, model: str,
               count: int) -> None:
    """``model`` into a host's ``models``: a model listed already keeps the larger count."""
    for i, (k, v, m, n) in enumerate(models):
        if (k, v, m) == (kind, vendor, model):
            if count > n:
                models[i] = (kind, vendor, model, count)
            return
    models.append((kind, vendor, model, count))


@dataclass(frozen=True)
class RulesClock:
    """How far the summaries can be trusted in time.

    ``seen_at``: the instant the last evaluation saw the fleet at; a host's sample must have been
    fresh then (younger than STALE_MIN_S). ``current``: whether that evaluation is recent enough for
    its group interval; if not, ``why`` says so and every selected host is read chip by chip.
    """

    seen_at: float
    current: bool = True
    why: str = ""


def rules_clock(answers: dict[str, list[Sample]], group: RuleGroup | None, now: float) -> RulesClock:
    """The rules' clock from the info series, its timestamp and the rules API's group (if any).

    The evaluation's own ``time()`` (rules version 2) is when its data stood: VictoriaMetrics answers
    vmalert as of its latency offset, so that is earlier than the evaluation itself. Without an
    evaluation time at all, today's rule holds: samples fresh against now.
    """
    stamps = [v for _labels, v in answers.get(RULES_EVALUATED, []) if math.isfinite(v) and v > 0]
    evaluated = group.last_evaluation if group is not None and group.last_evaluation else None
    evaluated = evaluated or (max(stamps) if stamps else None)
    if evaluated is None:
        return RulesClock(seen_at=now)
    interval = group.interval_s if group is not None and group.interval_s else None
    # An evaluation is stamped with its start and counts once it ends, and the one running now can
    # take much longer than the last (a loaded server: 46 s, then over 110 s, at 30,000 hosts on two
    # cores): two intervals and three times the last evaluation's time before the rules count as
    # stopped. Stopped rules are what this catches, not slow ones.
    took = group.evaluation_s if group is not None else 0.0
    allowed = 2 * (interval or ASSUMED_INTERVAL_S) + 3 * took + EVALUATION_SLACK_S
    age = now - evaluated
    if age > allowed:
        every = f"every {interval:g}s" if interval else f"no interval known, {ASSUMED_INTERVAL_S:g}s assumed"
        return RulesClock(seen_at=now, current=False,
                          why=f"the fleetctl-report rules were last evaluated {age:.0f}s ago ({every}): "
                              "reading every selected host chip by chip")
    seen = [v for labels, v in answers.get(RULES_INFO, [])
            if _version(labels.version) >= RULES_VERSION_DATA_TIME and math.isfinite(v)
            and evaluated - 3600 < v <= evaluated + EVALUATION_SLACK_S]
    return RulesClock(seen_at=max(seen) if seen else evaluated)


def rules_version(answers: Mapping[str, list[Sample]]) -> int:
    """The version the recording rules' info series carries (0 without one)."""
    return max((_version(labels.version) for labels, _ in answers.get(RULES_INFO, [])), default=0)


def _version(raw: str | None) -> int:
    try:
        return int(raw or "0")
    except ValueError:
        return 0


# How long a report waits for the rules API once the first round's answers are in (it is asked beside
# them, so it has had that long already).
RULES_API_WAIT_S = 3.0


class FirstRound:
    """The first round: the rules' series (one query each) and, beside them in a thread of its own, the
    rules API. It asks from the moment it is made and needs no inventory, so a command can start it
    before reading the fleet's inventory and Prometheus answers while fleetctl reads it."""

    def __init__(self, client: PromQuery) -> None:
        from fleet_agent.sampler import DaemonThreadPool

        self.client = at_one_instant(client)  # the report's later rounds ask this one too: one instant
        self.asking = _Asking(self.client, RULE_QUERIES, columns=tuple(READINGS.values()))
        self._side = DaemonThreadPool(1, "prometheus-rules")
        # Optional, so it never fails the command (rule_group catches its own errors).
        self._group = (self._side.submit(self.client.rule_group, RULES_GROUP)
                       if isinstance(self.client, PromRules) else None)

    @property
    def started(self) -> float:
        """When it was asked (``time.monotonic()``)."""
        return self.asking.started

    def group(self, timeout_s: float) -> RuleGroup | None:
        """The rules API's view of the group, waited for at most ``timeout_s``; None without one."""
        try:
            return None if self._group is None else self._group.result(timeout=max(0.0, timeout_s))
        except concurrent.futures.TimeoutError:
            return None

    def close(self) -> None:
        """Done with the round, read or not: queries not started are dropped, the threads end once idle."""
        self.asking.close()
        if self._group is not None:
            self._group.cancel()
        self._side.shutdown(wait=False)


def prometheus_report(hosts: Sequence[Host], client: PromQuery, *, inventory: str = "", pattern: str = "all",
                      now: float | None = None, deadline_s: float = 30.0, use_rules: bool = True,
                      detail_all: bool | None = None, first: FirstRound | None = None,
                      notice: Callable[[str], None] | None = None) -> FleetReport:
    """The fleet report for ``hosts`` from what Prometheus scraped last.

    ``detail_all`` (default: a selection of at most :data:`DETAIL_ALL_MAX_HOSTS`) reads every host
    chip by chip; otherwise hosts with a clean summary get a :class:`SummaryRow`. ``first`` is the
    first round if ``client`` was asked it already (while the inventory was read: that time is not
    counted against ``deadline_s``); it is closed here. ``notice`` hears the one line saying the rules
    are missing (stderr by default).
    """
    if not use_rules and first is not None:
        first.close()
        first = None
    # As for direct fan-out: the decoded answers and the rows all stay alive to the end, so the cyclic
    # collector's passes over them (in the decoding threads too) would free nothing. (A round asked
    # early decodes while the inventory is read, which pauses the collector too.)
    with gc_paused():
        if use_rules and first is None:
            first = FirstRound(client)
        client = first.client if first is not None else at_one_instant(client)
        try:
            return _report(hosts, client, inventory, pattern, now, deadline_s, detail_all, first, notice)
        finally:
            if first is not None:  # its threads end (`--watch` reports every round: nothing may pile up)
                first.close()


def _report(hosts: Sequence[Host], client: PromQuery, inventory: str, pattern: str, now: float | None,
            deadline_s: float, detail_all: bool | None, first: FirstRound | None,
            notice: Callable[[str], None] | None) -> FleetReport:
    """The report; ``first`` is the rules' first round, None to read every host's series without them."""
    started = time.monotonic()
    if now is None:  # every sample read is as of the queries' instant: aged against it, not a later now
        pinned = client.when if isinstance(client, PromInstant) else None
        now = time.time() if pinned is None else pinned
    wanted = {h.name for h in hosts}
    rules = False
    version = 0
    group: RuleGroup | None = None
    gathered = _Gathered(wanted)
    copied = _Gathered(wanted)  # the agents' copies of what is read about a host that is not clean
    table = _SummaryTable(wanted)
    answers: dict[str, Any] = {}  # the rules' few small answers (info, its time, agent jobs)
    up_of: dict[str, list[Up]] = {}

    def take_up(answer: list[Sample]) -> None:
        nonlocal up_of
        up_of = _ups(answer, wanted)

    def take(query: str, answer: Any) -> None:
        # With the rules: each answer folded in as it arrives, while Prometheus works on the rest.
        if query == "up":
            take_up(answer)
        elif query in _FAULT_METRIC_OF:
            copied.add(query, answer)
        elif not table.take(query, answer):
            answers[query] = answer

    def left() -> float:
        return deadline_s - (time.monotonic() - started)

    def ask(queries: Sequence[str], take_each: Callable[[str, Any], None],
            columns: Sequence[str] = ()) -> None:
        # A round after the first: within what is left of the deadline, a late one naming the whole.
        _query_each(client, queries, left(), take_each, columns, whole_s=deadline_s)

    def take_every(query: str, answer: Any) -> None:
        # Without them: every host's series.
        if query == "up":
            take_up(answer)
        elif query == IDENTITY:
            answers[query] = answer
        else:
            gathered.add(query, answer)

    if first is not None:
        first.asking.each(deadline_s, take, since=started)
        rules = bool(answers[RULES_INFO])
        version = rules_version(answers)
        if rules and version < RULES_VERSION_CLEAN:  # older rules: their summaries, a second round
            ask(SUMMARY_QUERIES, take, columns=SUMMARY_QUERIES)
        # The rules API is optional: a slow one (a ruler behind a proxy) costs a moment, not the deadline.
        group = first.group(min(left(), RULES_API_WAIT_S))
        if not rules:
            (notice or _stderr)(NO_RULES)
    summary_rows = rules
    if not rules:
        ask((*QUERIES, IDENTITY), take_every)
        detail = wanted
    else:
        table.finish(version)
        if detail_all is None:
            detail_all = len(hosts) <= _detail_max()
        clock = rules_clock(answers, group, now)
        if not detail_all and not clock.current:
            (notice or _stderr)(clock.why)
            detail_all = True
        if version < RULES_VERSION_IDENTITY or not clock.current:
            # Rules without the record, or a record as old as the rest (the rules stopped): the query itself.
            ask((IDENTITY,), take)
        detail = wanted if detail_all else {h.name for h in hosts if not table.clean(h, now, clock.seen_at)}
        old = table.without_rollups(hosts) if version >= RULES_VERSION_ROLLUPS else []
        if not detail_all:
            # An agent that says now that its host is not clean (its fault copies, scraped since the rules
            # last ran) outranks the clean record the rules made before: a host that just failed is read.
            detail.update(name for name, d in copied.data.items() if d.statuses)
            # So does an agent older than the rules behind a second target of a host another calls clean
            # (version 6 leaves it out of the record too, but vmalert's rules see the record a round late).
            detail.update(old)
        # Version 6 on, the record names agents without the verdict, most of which have the rollups (a fleet
        # whose rules were upgraded first): read faults first, as any host that is not clean, where
        # _read_faults sends those without the rollups to every chip. Before, none has rollups.
        verdictless = version >= RULES_VERSION_AGENT_VERDICT
        if old:
            # Correct either way, but slow at scale: say why, once.
            (notice or _stderr)(f"{len(old)} host(s) ({old[0]}{', ...' if len(old) > 1 else ''}) export no "
                                + ("fleet_node_clean: agents older than the fleetctl-report rules (version "
                                   f"{version}), read without a clean summary" if verdictless else
                                   "fleet_node_chips_healthy: agents from before the per-host rollups, read "
                                   "chip by chip")
                                + "; upgrade their fleet-agent")
        # The agent jobs come from the rules: the detail's fleet_agent_info covers the detail hosts only.
        gathered.add("fleet_agent_info", [(labels, 1.0) for labels, _ in answers[AGENT_JOBS]])
        # Past a small selection, a host's chips that are not healthy only: its rollups count the rest.
        # (Hosts whose agents export no rollups, as rules before version 6 say, go straight to every chip.)
        chips: Mapping[int, list[str]] = {}
        every_chip = detail
        if not detail_all:
            # A host whose agent Prometheus does not scrape is a row from its `up` alone: never asked.
            every_chip = scraped = {h.name for h in hosts if h.name in detail
                                    and (agent_up(up_of.get(h.name), gathered.agent_jobs, h) or 0.0) >= 1}
            straight = set() if verdictless else scraped.intersection(old)
            if faults := scraped - straight:
                copies = _trusted_copies([h for h in hosts if h.name in faults], copied, up_of,
                                         gathered.agent_jobs)
                chips, every_chip = _read_faults(ask, faults, gathered, copies)
                every_chip |= straight
        # Those chips' readings, and every chip of the hosts their count sends there, in one round.
        if more := chip_queries(chips) + detail_queries(every_chip):
            ask(more, gathered.add)
            # Hosts whose agents export no rank (older ones; a fleet mid-upgrade): one-hot, them only.
            if unranked := gathered.unranked(every_chip):
                ask(detail_queries(unranked, (ONE_HOT,)), gathered.add)
    if isinstance(client, PromInstant) and (skew := clock_skew_line(client.clock_skew_s)):
        (notice or _stderr)(skew)
    warned = list(client.warnings) if isinstance(client, PromWarned) else []
    if warned:
        (notice or _stderr)(warnings_line(warned))
    # A host missing from a partial `up` is the store's silence, not the host's: not judged either way
    # (an error, which remediation does not act on by default), where `not_scraped` would say unreachable.
    up_partial = any(query == "up" for query, _ in warned)
    data, agent_jobs = gathered.data, gathered.agent_jobs
    rows: list[HostRow] = []
    for h in hosts:
        d = data.get(h.name)
        up = agent_up(up_of.get(h.name), agent_jobs, h)
        if up is None and up_partial:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=True,
                                        kind="prometheus_partial", reason=PARTIAL_UP_REASON,
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif up is None:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=False,
                                        kind="not_scraped", reason="Prometheus has no target for this host",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif up < 1:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=False,
                                        kind="scrape_failed", reason="Prometheus cannot scrape it (up=0)",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif summary_rows and h.name not in detail:
            rows.append(table.row(h, now))
        elif d is None or d.status is None:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=True,
                                        kind="no_metrics", reason="scraped, but no fleet_node_status",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        else:
            row = host_row_from_node(h.name, h.address, h.agent_port, h.groups, _node(h, d, now), now,
                                     expected_chips=h.expected_chips, host_vars=h.vars,
                                     sample_time_known="fleet_sample_timestamp_seconds" in d.gauges,
                                     chips_present=int(d.gauges[_PRESENT_GAUGE]) if d.faults_only else None)
            # What the metrics did not say stays unsaid: no made-up agent version.
            row.agent_version = d.version
            if d.faults_only:  # its figures are its rollups; its chips listed, those not healthy
                row = SummaryRow.of(_rollup_line(d, row.chips), table.models.get(h.name, []),
                                    **{f.name: getattr(row, f.name) for f in dataclasses.fields(HostRow)})
            rows.append(row)
    # The query's own answer where it was asked (rules without the record, or stopped), else the record.
    if mismatched := answers[IDENTITY] if IDENTITY in answers else answers.get(IDENTITY_RECORD):
        _judge_identity(rows, hosts, mismatched)
    return FleetReport(generated_at=now, source="prometheus", hosts=rows, inventory=inventory,
                       pattern=pattern, duration_s=time.monotonic() - started,
                       warnings=report_warnings(warned))


def _judge_identity(rows: list[HostRow], hosts: Sequence[Host], mismatched: list[Sample]) -> None:
    """As direct fan-out judges whose agent answered (fleetctl.report.identity), for the hosts whose
    agents name another host (:data:`IDENTITY`): another inventory host's agent is an error row that
    shows nothing of it (``wrong_agent``); a name the inventory does not have makes the host unknown."""
    from fleet_agent.verdict import worse

    from fleetctl.report.identity import identity_findings
    from fleetctl.report.model import problem_row

    reported: dict[str, str] = {}
    for labels, _ in mismatched:
        if labels.host is not None and labels.hostname:
            reported.setdefault(labels.host, labels.hostname)
    found = identity_findings(hosts, {h.name: reported[h.name] for h in hosts if h.name in reported})
    if not found:
        return
    for i, (h, row) in enumerate(zip(hosts, rows, strict=True)):
        this = found.get(h.name)
        if this is None or row.reason_kind is not None:  # not scraped, no metrics: nothing shown to doubt
            continue
        problem = problem_row(this.problem, None)
        if this.foreign:
            rows[i] = host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=True,
                                      kind=WRONG_AGENT, reason=this.problem.message,
                                      expected_chips=h.expected_chips, host_vars=h.vars, problems=[problem])
        else:
            row.problems.append(problem)
            row.status = worse(row.status, HostHealth.UNKNOWN)


PARTIAL_UP_REASON = "not in a partial answer to `up` (a store behind Prometheus did not answer): not judged"
# A report lists this many (query, warning) pairs at most: each chunk of a detail query may warn alike.
WARNINGS_MAX = 50


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())  # a server's text: no line break may reach a one-line message
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def report_warnings(warned: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The report's ``warnings``: each (query, warning) once, the query clipped as in messages."""
    pairs = dict.fromkeys((_one_line(q if len(q) <= 120 else q[:100] + "...", 200), _one_line(w, 300))
                          for q, w in warned)
    return [{"query": q, "warning": w} for q, w in list(pairs)[:WARNINGS_MAX]]


def warnings_line(warned: Sequence[tuple[str, str]]) -> str:
    """The one line saying some answers came with warnings: their series may be incomplete."""
    queries = len(dict.fromkeys(q for q, _ in warned))
    query, warning = warned[0]
    more = f"; {queries - 1} more such quer{'y' if queries == 2 else 'ies'}" if queries > 1 else ""
    return (f"Prometheus answered {queries} quer{'y' if queries == 1 else 'ies'} with warnings, so series "
            "may be missing (a store, remote read or storage node behind it did not answer): query "
            f"{_shown(query)}: {_one_line(warning, 200)}{more}; see \"warnings\" in health --json")


def _trusted_copies(hosts: Iterable[Host], copied: _Gathered, up_of: Mapping[str, list[Up]],
                    agent_jobs: set[str]) -> dict[str, _HostData]:
    """The agents' copies (``copied``) of those of ``hosts`` that they can speak for: a host whose agent
    one target scrapes (a second may see it otherwise), with one status copy (two at once are one
    scrape's and an older one's that no staleness marker ended: a federating Prometheus keeps a
    vanished series for its lookback)."""
    out = {}
    for h in hosts:
        d = copied.data.get(h.name)
        if d is not None and d.statuses == 1 and len(_agent_ups(up_of.get(h.name, []), agent_jobs, h)) == 1:
            out[h.name] = d
    return out


def _read_faults(ask: Callable[[Sequence[str], Callable[[str, Any], None]], None], names: set[str],
                 gathered: _Gathered, copies: Mapping[str, _HostData] | None = None
                 ) -> tuple[dict[int, list[str]], set[str]]:
    """Read the hosts ``names`` faults only, into ``gathered``: their node-level series, per-host gauges
    and rollups, and which of their chips are not healthy (a faulty host has one bad chip of eight,
    typically: an eighth of the per-chip series to select, encode and decode). Returns the hosts whose
    chips' readings to read, by chip index (those not healthy, or with a failing check), and the hosts
    to read chip by chip instead (their data so far dropped): an agent without the rollups or the
    rank, more than one target, an impossible reading in the rollups, or chips not healthy by its
    count that the rank does not name.

    A host whose agent's copies (``copies``: its ``fleet_fault_detail``, the same series with the
    listed chips' readings; see :func:`_trusted_copies`) pass the same test is taken from them and
    asked nothing more; only the others are asked, in a round of their own."""
    # Here, not at the top: the health checks' import is paid only where there are faults.
    from fleet_agent.health.checks.readings import NAME as invalid_reading

    data = gathered.data
    taken = set()
    for name, copied in (copies or {}).items():
        if name in names and _names_every_fault(copied, invalid_reading):
            _faults_only(copied)
            data[name] = copied
            taken.add(name)
    names = names - taken
    every_chip: set[str] = set()
    chips: dict[int, list[str]] = defaultdict(list)
    if not names:
        return chips, every_chip
    ask(fault_queries(names), gathered.add)
    for name in names:
        d = data.get(name)
        if d is None or d.status is None:
            continue  # no node status: a row without metrics, as reading every chip would give
        if not _names_every_fault(d, invalid_reading):
            every_chip.add(name)
            del data[name]
            continue
        for i in _faults_only(d):
            chips[i].append(name)
    return chips, every_chip


def _faults_only(d: _HostData) -> list[int]:
    """Mark ``d`` read faults only; the indexes of its chips listed."""
    d.faults_only = True
    for chip in d.chips.values():
        chip.setdefault("status", Status.HEALTHY)  # a failing check only (info): its rank is not above 0
    return list(d.chips)


def _names_every_fault(d: _HostData, invalid_reading: str) -> bool:
    """Whether the chips read by their rank are all the host's chips not healthy by its own count (its
    agent's one target sent both), and its rollups fold no impossible reading (the agent's check
    says so; reading every chip lets the controller leave that one value out, as it does for direct
    fan-out)."""
    present, healthy = d.gauges.get(_PRESENT_GAUGE), d.gauges.get(_CHIPS_HEALTHY)
    if present is None or healthy is None or len(d.rollup_targets) != 1:
        return False
    if d.agent_targets != d.rollup_targets:
        return False
    if any(p.check == invalid_reading for chip in d.chips.values() for p in chip.get("problems", ())):
        return False
    return sum(1 for chip in d.chips.values() if "status" in chip) == present - healthy


def _rollup_line(d: _HostData, judged: Sequence[ChipReport]) -> Line:
    """A faults-only host's figures as a :data:`Line`: its own gauges and rollups. A chip listed for a
    failing check, healthy by its rank, that the controller judged otherwise (``judged``: an impossible
    reading the agent let through) is not counted healthy: the fleet's counts take it where listed."""
    line = [math.nan] * len(SUMMARY_KEYS)
    for name, i in _NODE_LINE.items():
        line[i] = d.gauges.get(name, math.nan)
    line[_HEALTHY] = 1.0 if d.status is Status.HEALTHY else 0.0
    line[_OK] -= sum(1 for c in judged if c.status is not Status.HEALTHY
                     and d.chips.get(c.index, {}).get("status") is Status.HEALTHY)
    return tuple(line)


def _detail_max() -> int:
    """Up to this many selected hosts are read chip by chip (``$FLEETCTL_PROMETHEUS_DETAIL_HOSTS``)."""
    raw = os.environ.get(ENV_DETAIL, "")
    try:
        return int(raw) if raw else DETAIL_ALL_MAX_HOSTS
    except ValueError:
        raise PrometheusError(f"${ENV_DETAIL} {raw!r}: expected a number of hosts") from None


def _stderr(line: str) -> None:
    from fleetctl.views.text import visible  # a server's text may be in it: controls escaped

    print(f"fleetctl health: {visible(line)}", file=sys.stderr, flush=True)


def file_sd_targets(hosts: Sequence[Host]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries: one per host, labelled with its inventory name and first group."""
    return [{"targets": [h.agent_endpoint], "labels": {"host": h.name, "group": h.first_group}}
            for h in hosts]
