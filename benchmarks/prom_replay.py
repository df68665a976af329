"""A real Prometheus's answers to fleetctl's rule queries, captured once and served again for a larger
fleet (for ``bench_prometheus.py --replay-sizes``); not a benchmark itself.

What it measures is fleetctl's own share of ``health --source prometheus`` at a size the machine cannot
hold a Prometheus for: the answers are the real server's, each host's series repeated under the names
of its copies (as ``bench_prometheus.add_copies`` names them), in the server's order (sorted by labels),
times moved to the moment of serving as if the rules had just run. They come at once: the server's own
time to select and encode them is not in the figure.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import msgspec

# Queries whose values are times (epoch seconds): moved with the capture's timestamps.
TIME_VALUED = ("fleetctl:clean_host_sample_timestamp_seconds",
               'fleetctl:host_summary{summary="sample_timestamp_seconds"}', "fleetctl:report_rules:info",
               "timestamp(fleetctl:report_rules:info)",
               # the agents' copies of a faulty host's sample time: unmoved, every faulty host read as stale
               'fleet_fault_detail{metric="fleet_sample_timestamp_seconds"}')
Copies = dict[str, list[tuple[str, str, str]]]  # real host -> its copies' (name, group, endpoint)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=120) as r:  # the benchmark's own server
        return json.loads(r.read())


class Replay:
    """The answers of ``url`` to ``queries`` (and its rules API), captured at construction."""

    def __init__(self, url: str, queries: tuple[str, ...]) -> None:
        self.captured = time.time()
        self.answers = {q: _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
                        for q in queries}
        self.rules = _get(f"{url}/api/v1/rules?type=record")
        self.served: dict[str, bytes] = {}
        self.rules_served = b""

    def build(self, copies: Copies) -> int:
        """The answers for the real hosts plus ``copies``, timed as of now; returns their bytes."""
        shift = time.time() - self.captured
        served: dict[str, bytes] = {}
        for q, doc in self.answers.items():
            result = []
            for series in doc["data"]["result"]:
                ts, value = series["value"]
                if q in TIME_VALUED:
                    value = repr(float(value) + shift)
                result.append({"metric": series["metric"], "value": [ts + shift, value]})
                host = series["metric"].get("host")
                for name, group, endpoint in copies.get(host, []) if host else []:
                    metric = {**series["metric"], "host": name}
                    if "instance" in metric:
                        metric["instance"] = endpoint
                    if "group" in metric:
                        metric["group"] = group
                    result.append({"metric": metric, "value": [ts + shift, value]})
            # Each copy right after its host: in label order where the server answered in label order
            # (``h`` < ``h-r1`` < ``h-r9`` < the next host), in its own order where it did not.
            answer = {"status": "success", "data": {"resultType": "vector", "result": result}}
            served[q] = json.dumps(answer, separators=(",", ":")).encode()
        rules = json.loads(json.dumps(self.rules))
        for group in rules["data"]["groups"]:
            group["lastEvaluation"] = _moved(group.get("lastEvaluation"), shift)
        self.served, self.rules_served = served, json.dumps(rules).encode()  # whole, for a server running
        return sum(len(b) for b in served.values())

    def serve(self, port: int) -> http.server.ThreadingHTTPServer:
        """An HTTP server on 127.0.0.1:``port`` answering the captured queries; any other is a 400."""
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, query: str | None) -> None:
                if self.path.startswith("/api/v1/rules"):
                    self._send(200, replay.rules_served)
                elif query is not None and query in replay.served:
                    self._send(200, replay.served[query])
                else:
                    error = {"status": "error", "errorType": "bad_data",
                             "error": f"query not captured by the replay: {str(query)[:80]}"}
                    self._send(400, json.dumps(error).encode())

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [None])[0]
                self._answer(query)

            def do_POST(self) -> None:
                form = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                self._answer(urllib.parse.parse_qs(form).get("query", [None])[0])

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _moved(stamp: str | None, shift: float) -> str | None:
    """An RFC 3339 time from the rules API (any offset, nanoseconds), ``shift`` seconds later, in
    UTC; None and Prometheus's year-1 "never" stay as they are."""
    if not stamp:
        return stamp
    when = msgspec.convert(stamp, datetime.datetime)
    if when.year < 1970:
        return stamp
    moved = when.astimezone(datetime.UTC) + datetime.timedelta(seconds=shift)
    return moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
