"""Build the fleet report from a Prometheus server that scrapes the agents (for very large fleets).

A handful of instant queries (``/api/v1/query``) over the agent's metrics (docs/metrics.md) replace
one request per host. Hosts are matched by the ``host`` label that ``fleetctl prometheus targets``
puts on every file_sd target. The metrics are turned back into node reports, so the controller's
own checks (expected chips, sample age) run exactly as for direct fan-out.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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

from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.report import FleetReport, HostRow
from fleetctl.report.build import host_row_failed, host_row_from_node

ENV_URL = "FLEETCTL_PROMETHEUS_URL"

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
QUERIES: tuple[str, ...] = (
    "up", "fleet_node_status == 1", "fleet_chip_status == 1", "fleet_health_check_failing == 1",
    "fleet_agent_info", *_NODE_GAUGES, *_CHIP_GAUGES,
)


class PrometheusError(UsageError):
    """Prometheus could not be queried (exit 2: the URL or the server is misconfigured)."""


Sample = tuple[dict[str, str], float]


class PromQuery(Protocol):
    """The one call this module needs; a fake in unit tests, HTTP in real use."""

    def query(self, promql: str) -> list[Sample]:
        """An instant query's vector: (labels, value) per series."""
        ...


# An instant query's answer for 10,000 hosts x 8 chips is tens of MB; past this, something is wrong.
MAX_ANSWER_BYTES = 512 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


class HttpPrometheus:
    """``GET {url}/api/v1/query?query=...`` with a timeout; errors name the URL (without credentials).

    ``user:password@`` in the URL is sent as HTTP basic auth (urllib would take it for the host).
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        shown = _without_credentials(parsed)
        try:
            port_ok = parsed.hostname is not None and (parsed.port is None or parsed.port > 0)
        except ValueError:  # a port that is not a number, or out of range
            port_ok = False
        if parsed.scheme not in ("http", "https") or not port_ok:
            raise PrometheusError(f"--prometheus-url {shown!r}: expected http(s)://host[:port][/prefix]")
        self.url = shown.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json"}
        if parsed.username is not None:
            user = urllib.parse.unquote(parsed.username)
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def query(self, promql: str) -> list[Sample]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        request = urllib.request.Request(url, headers=self._headers)  # noqa: S310 - http(s) only, see __init__
        try:
            # The scheme was checked in __init__ (http/https only).
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                body = resp.read(MAX_ANSWER_BYTES + 1)
                missing = resp.length  # what Content-Length promised and the connection did not bring
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{self.url}: query {promql!r}: HTTP {exc.code} {exc.reason}"
                                  + _error_text(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"{self.url}: cannot query Prometheus: {reason}") from None
        except http.client.HTTPException as exc:  # not HTTP, or the answer cut short
            raise PrometheusError(f"{self.url}: query {promql!r}: broken HTTP answer "
                                  f"({type(exc).__name__})") from None
        if missing:
            raise PrometheusError(f"{self.url}: query {promql!r}: broken HTTP answer (cut short, "
                                  f"{missing} bytes missing)")
        if len(body) > MAX_ANSWER_BYTES:
            raise PrometheusError(f"{self.url}: query {promql!r}: answer over {MAX_ANSWER_BYTES} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{self.url}: query {promql!r}: the answer is not JSON") from None
        return parse_vector(doc, f"{self.url}: query {promql!r}")


def _without_credentials(parsed: urllib.parse.SplitResult) -> str:
    if "@" not in parsed.netloc:
        return parsed.geturl()
    return parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()


def _error_text(exc: urllib.error.HTTPError) -> str:
    """Prometheus's own ``error`` text from an error answer (a bad query: HTTP 400), if any."""
    try:
        doc = json.loads(exc.read(64 * 1024))
    except (ValueError, OSError, http.client.HTTPException):
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    return f": {str(error)[:200]}" if error else ""


def parse_vector(doc: Any, where: str) -> list[Sample]:
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise PrometheusError(f"{where}: {error or 'not a successful Prometheus answer'}")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise PrometheusError(f"{where}: expected a vector, got {got!r}")
    result = data.get("result")
    if not isinstance(result, list):
        raise PrometheusError(f"{where}: expected a list of series, got {type(result).__name__}")
    out: list[Sample] = []
    for item in result:
        try:
            out.append((dict(item["metric"]), float(item["value"][1])))
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(f"{where}: malformed series {str(item)[:80]}") from None
    return out


@dataclass
class _HostData:
    ups: list[tuple[str | None, str | None, float]] = field(default_factory=list)  # (job, instance, up)
    status: Status | None = None
    version: str | None = None
    gauges: dict[str, float] = field(default_factory=dict)
    chips: dict[int, dict[str, Any]] = field(default_factory=dict)
    node_problems: list[Problem] = field(default_factory=list)
    seen_problems: set[tuple[int | None, str, str]] = field(default_factory=set)

    def up(self, agent_jobs: set[str], endpoint: str) -> float | None:
        """The agent's own ``up``: other jobs scraping the same host (node_exporter, say) do not count.
        The agent's target is the one at its endpoint (as ``prometheus targets`` writes it) or in a
        job that scrapes agents; when no series tells, every ``up`` of the host counts."""
        own = [v for job, instance, v in self.ups if instance == endpoint or job in agent_jobs]
        ups = own or [v for _job, _instance, v in self.ups]
        return max(ups) if ups else None


def _chip_index(labels: dict[str, str]) -> int | None:
    try:
        return int(labels.get("chip", ""))
    except ValueError:
        return None


def _gather(answers: dict[str, list[Sample]], wanted: set[str]) -> tuple[dict[str, _HostData], set[str]]:
    """Per-host data, and the jobs that scrape agents (those with ``fleet_agent_info`` series).

    A host may be scraped by more than one job or instance (a second Prometheus job, a stale
    target): statuses take the worst series, problems count once, gauges the last series.
    NaN and infinite samples are left out: a value we cannot use is absent, never made up.
    """
    data: dict[str, _HostData] = defaultdict(_HostData)
    agent_jobs: set[str] = set()
    for promql, samples in answers.items():
        name = promql.split(" ", 1)[0]
        for labels, value in samples:
            host = labels.get("host")
            if host is None or host not in wanted or not math.isfinite(value):
                continue
            d = data[host]
            if name == "up":
                d.ups.append((labels.get("job"), labels.get("instance"), value))
            elif name == "fleet_node_status":
                d.status = _worst(d.status, labels.get("status"))
            elif name == "fleet_agent_info":
                d.version = labels.get("version") or d.version
                if "job" in labels:
                    agent_jobs.add(labels["job"])
            elif name in _NODE_GAUGES:
                d.gauges[name] = value
            else:
                idx = _chip_index(labels)
                if name == "fleet_health_check_failing":
                    problem = _problem(labels)
                    seen = (idx, problem.check, problem.severity.value)
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
                for key in ("kind", "model", "uuid", "vendor"):
                    if labels.get(key):
                        chip.setdefault(key, labels[key])
                if name == "fleet_chip_status":
                    chip["status"] = _worst(chip.get("status"), labels.get("status"))
                elif name in _CHIP_GAUGES:
                    chip[_CHIP_GAUGES[name]] = value
    return data, agent_jobs


def _worst(current: Status | None, label: str | None) -> Status:
    new = _status(label)
    return new if current is None else Status.worst([current, new])


def _problem(labels: dict[str, str]) -> Problem:
    check = labels.get("check", "?")
    # Metrics carry no message nor action; the check's name is the message.
    raw = labels.get("severity", "warning")
    try:
        return Problem(check=check, severity=Severity(raw), message=check, action=Action.NONE)
    except ValueError:  # a newer agent's severity: shown, as a warning, rather than dropped
        return Problem(check=check, severity=Severity.WARNING, message=f"{check} (severity {raw!r})",
                       action=Action.NONE)


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


def _query_all(client: PromQuery, deadline_s: float) -> dict[str, list[Sample]]:
    """Every query of :data:`QUERIES`, four at a time, all within ``deadline_s``."""
    # Daemon threads: a server trickling its answer (each read within the timeout) must not hold
    # the command past its deadline, at exit included (concurrent.futures joins its own threads).
    from fleet_agent.sampler import DaemonThreadPool

    pool = DaemonThreadPool(4, "prometheus")
    futures = [pool.submit(client.query, q) for q in QUERIES]
    try:
        done, late = concurrent.futures.wait(futures, timeout=deadline_s,
                                             return_when=concurrent.futures.FIRST_EXCEPTION)
        for f in futures:
            if f in done and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]  # the first query that failed, as it failed
        if late:
            where = getattr(client, "url", "Prometheus")
            raise PrometheusError(f"{where}: no complete answer within the {deadline_s:g}s deadline")
        return {q: f.result() for q, f in zip(QUERIES, futures, strict=True)}
    finally:
        # Queries not started are dropped and the threads end once idle (`--watch` calls this
        # every round: nothing may accumulate).
        for f in futures:
            f.cancel()
        pool.shutdown(wait=False)


def prometheus_report(hosts: Sequence[Host], client: PromQuery, *, inventory: str = "", pattern: str = "all",
                      now: float | None = None, deadline_s: float = 30.0) -> FleetReport:
    """The fleet report for ``hosts`` from what Prometheus scraped last."""
    started = time.monotonic()
    answers = _query_all(client, deadline_s)
    now = time.time() if now is None else now
    data, agent_jobs = _gather(answers, {h.name for h in hosts})
    rows: list[HostRow] = []
    for h in hosts:
        d = data.get(h.name)
        up = d.up(agent_jobs, h.agent_endpoint) if d is not None else None
        if d is None or up is None:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=False,
                                        kind="not_scraped", reason="Prometheus has no target for this host",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif up < 1:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=False,
                                        kind="scrape_failed", reason="Prometheus cannot scrape it (up=0)",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif d.status is None:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=True,
                                        kind="no_metrics", reason="scraped, but no fleet_node_status",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        else:
            row = host_row_from_node(h.name, h.address, h.agent_port, h.groups, _node(h, d, now), now,
                                     expected_chips=h.expected_chips, host_vars=h.vars,
                                     sample_time_known="fleet_sample_timestamp_seconds" in d.gauges)
            # What the metrics did not say stays unsaid: no made-up agent version.
            row.agent_version = d.version
            rows.append(row)
    return FleetReport(generated_at=now, source="prometheus", hosts=rows, inventory=inventory,
                       pattern=pattern, duration_s=time.monotonic() - started)


def file_sd_targets(hosts: Sequence[Host]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries: one per host, labelled with its inventory name and first group."""
    return [{"targets": [h.agent_endpoint], "labels": {"host": h.name, "group": h.first_group}}
            for h in hosts]
