"""Soak of one fleet-agent under honest and abusive clients: does anything grow?

Starts the real ``fleet-agent run`` over one simulated 8-GPU host (with a token, and a connection
cap below the number of abusive connections, so that the cap and eviction are exercised all the
time), then for ``--duration`` seconds keeps up a steady mix:
  * honest: /metrics scrapes on keep-alive connections, one-shot /v1/node requests (fleetctl's
    shape), and a /healthz probe each second, all with the token where it is needed;
  * abusive: connections that send part of a request and stall (reconnecting when dropped),
    garbage bytes, and connect-and-close.
RSS and open file descriptors of the agent are sampled each second; after a warm-up, a least-squares
slope (bytes/s, fds/s) is fitted to each. A figure passes when the growth its slope projects over
the window stays within the noise bound: a floor, or three standard deviations of the samples
around the fitted line, whichever is larger. Honest requests must all be answered, and the agent
must print no traceback. Prints one JSON object.

    python benchmarks/bench_soak.py [--duration 600] [--quick] [--port P] [--stalled 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from simfleet import stop

SCENARIO = """
description: soak host, 8 H100s, no faults
groups:
  - {name: soak, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 1}
"""
TOKEN = "soak-token"
# Growth over the window that counts as noise whatever the samples' spread: allocator arenas and
# the connections in flight at the moment of a sample move these without anything leaking.
RSS_FLOOR_BYTES = 2 << 20
FDS_FLOOR = 8.0


@dataclass
class Tally:
    """Answers to one kind of honest request."""

    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def good(self, seconds: float) -> None:
        self.ok += 1
        self.latencies.append(seconds)

    def bad(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies)

        def pick(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] * 1e3, 3) if lat else None

        return {"ok": self.ok, "failed": self.failed, "errors": self.errors,
                "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next((int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                   if k.strip().lower() == b"content-length"), 0)
    return status, await reader.readexactly(length)


class Load:
    """The client side of the soak, on one event loop."""

    def __init__(self, port: int, rates: argparse.Namespace) -> None:
        self.port = port
        self.rates = rates
        self.stop_at = 0.0
        self.tallies = {"metrics": Tally(), "node": Tally(), "healthz": Tally()}
        self.abuse = {"stalled_opened": 0, "stalled_dropped_by_agent": 0, "garbage": 0,
                      "garbage_answered_400": 0, "connect_close": 0}
        self.auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    async def _paced(self, rate: float, one: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``one()`` ``rate`` times a second (open loop: a slow answer does not slow the pace)."""
        period, due = 1.0 / rate, time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        while self.running():
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # --- honest ----------------------------------------------------------------------------------

    async def scraper(self, rate: float) -> None:
        """/metrics on one keep-alive connection, reconnecting when the agent closes it."""
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        period, due = 1.0 / rate, time.monotonic()
        tally = self.tallies["metrics"]
        while self.running():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
                reader, writer = conn
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n" + self.auth + b"\r\n")
                status, body = await asyncio.wait_for(_read_answer(reader), 5)
                if status == 200 and body:
                    tally.good(time.monotonic() - t0)
                else:
                    tally.bad(f"HTTP {status}")
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                tally.bad(type(exc).__name__)
                if conn is not None:
                    conn[1].close()
                conn = None
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        if conn is not None:
            conn[1].close()

    async def one_shot(self, path: str, tally: Tally, auth: bool) -> None:
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            try:
                writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: soak\r\n"
                             + (self.auth if auth else b"") + b"Connection: close\r\n\r\n")
                status, body = await asyncio.wait_for(_read_answer(reader), 5)
            finally:
                writer.close()
            if status == 200 and body:
                tally.good(time.monotonic() - t0)
            else:
                tally.bad(f"HTTP {status}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            tally.bad(type(exc).__name__)

    # --- abusive ---------------------------------------------------------------------------------

    async def stalled(self) -> None:
        """One connection that sends part of a request and waits; again a second after it is dropped."""
        while self.running():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(1.0)
                continue
            self.abuse["stalled_opened"] += 1
            writer.write(b"GET /v1/node HTTP/1.1\r\nHost: soak\r\nUser-Agent: sl")
            try:
                left = self.stop_at - time.monotonic()
                if left > 0 and await asyncio.wait_for(reader.read(65536), left) == b"":
                    self.abuse["stalled_dropped_by_agent"] += 1
            except (TimeoutError, OSError):
                pass
            writer.close()
            await asyncio.sleep(1.0)

    async def garbage(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            self.abuse["garbage"] += 1
            writer.write(os.urandom(300).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 5)
            self.abuse["garbage_answered_400"] += reply.startswith(b"HTTP/1.1 400")
            writer.close()
        except (TimeoutError, OSError):
            pass

    async def connect_close(self) -> None:
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            self.abuse["connect_close"] += 1
            writer.close()
        except (TimeoutError, OSError):
            pass

    # --- the whole mix, and the samples ------------------------------------------------------------

    async def run(self, duration: float, proc: psutil.Process) -> list[tuple[float, int, int]]:
        r = self.rates
        self.stop_at = time.monotonic() + duration
        tasks = [asyncio.create_task(self.scraper(r.scrape_rate / r.scrapers)) for _ in range(r.scrapers)]
        tasks += [asyncio.create_task(self.stalled()) for _ in range(r.stalled)]
        tasks.append(asyncio.create_task(self._paced(r.node_rate, lambda: self.one_shot(
            "/v1/node", self.tallies["node"], True))))
        tasks.append(asyncio.create_task(self._paced(1.0, lambda: self.one_shot(
            "/healthz", self.tallies["healthz"], False))))
        tasks.append(asyncio.create_task(self._paced(r.garbage_rate, self.garbage)))
        tasks.append(asyncio.create_task(self._paced(r.churn_rate, self.connect_close)))
        samples: list[tuple[float, int, int]] = []
        t0 = time.monotonic()
        while self.running():
            samples.append((time.monotonic() - t0, proc.memory_info().rss, proc.num_fds()))
            await asyncio.sleep(max(0.0, len(samples) - (time.monotonic() - t0)))
        await asyncio.wait(tasks, timeout=15)
        return samples


def slope_figure(points: list[tuple[float, float]], floor: float, unit: str) -> dict[str, object]:
    """Least-squares slope of ``points`` (t, value), the growth it projects over their window, and
    whether that stays within the noise bound (``floor``, or 3 standard deviations of the residuals)."""
    ts = [t for t, _ in points]
    vs = [v for _, v in points]
    slope, intercept = statistics.linear_regression(ts, vs)
    residuals = [v - (slope * t + intercept) for t, v in points]
    spread = statistics.pstdev(residuals)
    window = ts[-1] - ts[0]
    growth = slope * window
    bound = max(floor, 3 * spread)
    return {f"slope_{unit}_per_s": round(slope, 3), f"growth_over_window_{unit}": round(growth, 1),
            f"noise_bound_{unit}": round(bound, 1), f"residual_stdev_{unit}": round(spread, 1),
            "first": vs[0], "last": vs[-1], "max": max(vs), "samples": len(points),
            "window_s": round(window, 1), "pass": growth <= bound}


def _start_agent(tmp: str, port: int, interval: float, max_connections: int) -> subprocess.Popen[bytes]:
    scen = Path(tmp, "scenario.yaml")
    scen.write_text(SCENARIO)
    token = Path(tmp, "token")
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    cfg = Path(tmp, "config.yaml")
    cfg.write_text(json.dumps({"port": port, "listen_address": "127.0.0.1", "interval_s": interval,
                               "token_file": str(token), "max_connections": max_connections,
                               "simulation": {"scenario": str(scen)}, "xid": {"kernel_log": False}}))
    agent_bin = Path(sys.executable).with_name("fleet-agent")
    with Path(tmp, "agent.stderr").open("wb") as err:
        proc = subprocess.Popen([str(agent_bin), "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 30
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/v1/node", headers={"Authorization": f"Bearer {TOKEN}"})
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"bench_soak: the agent did not start: {Path(tmp, 'agent.stderr').read_text()}")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="soak length, seconds")
    ap.add_argument("--quick", action="store_true", help="a 60 s soak")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds left out of the slopes (default: a tenth of the run, at least 10)")
    ap.add_argument("--port", type=int, default=0, help="the agent's port (default: a free one)")
    ap.add_argument("--interval", type=float, default=5.0, help="agent sampling interval")
    ap.add_argument("--max-connections", type=int, default=64, help="the agent's connection cap")
    ap.add_argument("--scrapers", type=int, default=2, help="keep-alive /metrics connections")
    ap.add_argument("--scrape-rate", type=float, default=10.0, help="/metrics requests/s, all scrapers")
    ap.add_argument("--node-rate", type=float, default=10.0, help="one-shot /v1/node requests/s")
    ap.add_argument("--stalled", type=int, default=200, help="stalled partial requests kept open")
    ap.add_argument("--garbage-rate", type=float, default=5.0, help="garbage connections/s")
    ap.add_argument("--churn-rate", type=float, default=20.0, help="connect-and-close/s")
    args = ap.parse_args()
    if args.quick:
        args.duration = min(args.duration, 60.0)
    warmup = args.warmup if args.warmup is not None else max(10.0, args.duration / 10)
    if args.duration - warmup < 10:
        raise SystemExit("bench_soak: --duration must leave at least 10 s after the warm-up")

    port = args.port or _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        proc = _start_agent(tmp, port, args.interval, args.max_connections)
        try:
            p = psutil.Process(proc.pid)
            load = Load(port, args)
            cpu0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
            samples = asyncio.run(load.run(args.duration, p))
            cpu_pct = 100.0 * (sum(p.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        finally:
            stop(proc)
        stderr = Path(tmp, "agent.stderr").read_text(errors="replace")

    kept = [s for s in samples if s[0] >= warmup]
    rss = slope_figure([(t, float(r)) for t, r, _ in kept], RSS_FLOOR_BYTES, "bytes")
    fds = slope_figure([(t, float(f)) for t, _, f in kept], FDS_FLOOR, "fds")
    honest = {k: t.summary() for k, t in load.tallies.items()}
    failed = sum(t.failed for t in load.tallies.values())
    figures: dict[str, dict[str, object]] = {
        "rss": rss,
        "open_fds": fds,
        "honest_requests": {"failed": failed, "target": 0, "pass": failed == 0, **honest},
        "agent_stderr": {"tracebacks": stderr.count("Traceback"), "exit_code": proc.returncode,
                         "pass": "Traceback" not in stderr and proc.returncode == 0},
    }
    result = {
        "benchmark": "fleet-agent-soak",
        "duration_s": args.duration,
        "warmup_s": warmup,
        "chips": 8,
        "mix": {"scrape_rate": args.scrape_rate, "scrapers": args.scrapers, "node_rate": args.node_rate,
                "healthz_rate": 1.0, "stalled": args.stalled, "garbage_rate": args.garbage_rate,
                "churn_rate": args.churn_rate, "max_connections": args.max_connections},
        "abusive": load.abuse,
        "agent_cpu_pct_of_one_core": round(cpu_pct, 2),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "contended": os.getloadavg()[0] > (os.cpu_count() or 1),
        "figures": figures,
        "pass": all(bool(f["pass"]) for f in figures.values()),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
