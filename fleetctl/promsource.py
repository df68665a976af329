"""Build the fleet report from a Prometheus server that scrapes the agents (for very large fleets).

A handful of instant queries (``/api/v1/query``) over the agent's metrics (docs/metrics.md) replace
one request per host. Hosts are matched by the ``host`` label that ``fleetctl prometheus targets``
puts on every file_sd target. The metrics are turned back into node reports, so the controller's
own checks (expected chips, sample age) run exactly as for direct fan-out.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
from fleetctl.report import FleetReport, HostRow, host_row_failed, host_row_from_node

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


class HttpPrometheus:
    """``GET {url}/api/v1/query?query=...`` with a timeout; errors name the URL."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PrometheusError(f"--prometheus-url {url!r}: expected http(s)://host:port")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str) -> list[Sample]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            # The scheme was checked in __init__ (http/https only).
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{self.url}: query {promql!r}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"{self.url}: cannot query Prometheus: {reason}") from None
        except ValueError:
            raise PrometheusError(f"{self.url}: query {promql!r}: the answer is not JSON") from None
        return parse_vector(doc, f"{self.url}: query {promql!r}")


def parse_vector(doc: Any, where: str) -> list[Sample]:
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise PrometheusError(f"{where}: {error or 'not a successful Prometheus answer'}")
    data = doc.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{where}: expected a vector, got {data.get('resultType')!r}")
    out: list[Sample] = []
    for item in data.get("result", []):
        try:
            out.append((dict(item["metric"]), float(item["value"][1])))
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(f"{where}: malformed series {str(item)[:80]}") from None
    return out


@dataclass
class _HostData:
    up: float | None = None
    status: str | None = None
    version: str = "?"
    gauges: dict[str, float] = field(default_factory=dict)
    chips: dict[int, dict[str, Any]] = field(default_factory=dict)
    node_problems: list[Problem] = field(default_factory=list)


def _chip_index(labels: dict[str, str]) -> int | None:
    try:
        return int(labels.get("chip", ""))
    except ValueError:
        return None


def _gather(answers: dict[str, list[Sample]], wanted: set[str]) -> dict[str, _HostData]:
    data: dict[str, _HostData] = defaultdict(_HostData)
    for promql, samples in answers.items():
        name = promql.split(" ", 1)[0]
        for labels, value in samples:
            host = labels.get("host")
            if host is None or host not in wanted:
                continue
            d = data[host]
            if name == "up":
                d.up = value if d.up is None else max(d.up, value)
            elif name == "fleet_node_status":
                d.status = labels.get("status")
            elif name == "fleet_agent_info":
                d.version = labels.get("version", "?")
            elif name in _NODE_GAUGES:
                d.gauges[name] = value
            else:
                idx = _chip_index(labels)
                if name == "fleet_health_check_failing":
                    problem = _problem(labels)
                    if problem is None:
                        continue
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
                    chip["status"] = labels.get("status", "unknown")
                elif name in _CHIP_GAUGES:
                    chip[_CHIP_GAUGES[name]] = value
    return data


def _problem(labels: dict[str, str]) -> Problem | None:
    try:
        severity = Severity(labels.get("severity", "warning"))
    except ValueError:
        return None
    check = labels.get("check", "?")
    # Metrics carry no message nor action; the check's name is the message.
    return Problem(check=check, severity=severity, message=check, action=Action.NONE)


def _status(value: str | None) -> Status:
    try:
        return Status(value or "unknown")
    except ValueError:
        return Status.UNKNOWN


def _node(host: Host, d: _HostData) -> NodeReport:
    chips = []
    for idx in sorted(d.chips):
        c = d.chips[idx]
        util = c.get("utilization_pct")
        chips.append(ChipReport(
            index=idx, kind=c.get("kind", "?"), vendor=c.get("vendor", ""), model=c.get("model", "?"),
            uuid=c.get("uuid", ""), pci_bus_id="", status=_status(c.get("status")),
            stale=bool(c.get("stale")), temperature_c=c.get("temperature_c"),
            utilization_pct=None if util is None else util * 100.0,
            memory_used_bytes=None if c.get("memory_used_bytes") is None else int(c["memory_used_bytes"]),
            memory_total_bytes=None if c.get("memory_total_bytes") is None else int(c["memory_total_bytes"]),
            power_w=c.get("power_w"), problems=list(c.get("problems", [])),
        ))
    expected = d.gauges.get("fleet_node_chips_expected")
    return NodeReport(
        host=host.name, agent_version=d.version,
        sampled_at=d.gauges.get("fleet_sample_timestamp_seconds", 0.0),
        interval_s=0.0,  # not exported; the controller's stale threshold falls back to its minimum
        status=_status(d.status), chips_expected=None if expected is None else int(expected),
        chips=chips, host_metrics=HostMetrics(), problems=d.node_problems,
        drained=bool(d.gauges.get("fleet_node_drained")), schema=SCHEMA_VERSION,
    )


def prometheus_report(hosts: Sequence[Host], client: PromQuery, *, inventory: str = "",
                      pattern: str = "all", now: float | None = None) -> FleetReport:
    """The fleet report for ``hosts`` from what Prometheus scraped last."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = dict(zip(QUERIES, pool.map(client.query, QUERIES), strict=True))
    now = time.time() if now is None else now
    data = _gather(answers, {h.name for h in hosts})
    rows: list[HostRow] = []
    for h in hosts:
        d = data.get(h.name)
        if d is None or d.up is None:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=False,
                                        kind="not_scraped", reason="Prometheus has no target for this host",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif d.up < 1:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=False,
                                        kind="scrape_failed", reason="Prometheus cannot scrape it (up=0)",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        elif d.status is None:
            rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=True,
                                        kind="no_metrics", reason="scraped, but no fleet_node_status",
                                        expected_chips=h.expected_chips, host_vars=h.vars))
        else:
            rows.append(host_row_from_node(h.name, h.address, h.agent_port, h.groups, _node(h, d), now,
                                           expected_chips=h.expected_chips, host_vars=h.vars))
    return FleetReport(generated_at=now, source="prometheus", hosts=rows, inventory=inventory,
                       pattern=pattern, duration_s=time.monotonic() - started)


def file_sd_targets(hosts: Sequence[Host]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries: one per host, labelled with its inventory name and first group."""
    return [{"targets": [h.agent_endpoint], "labels": {"host": h.name, "group": h.first_group}}
            for h in hosts]
