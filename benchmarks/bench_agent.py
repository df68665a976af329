"""Benchmark of one fleet-agent: 8 simulated GPUs sampled every 5 s.

Starts the real ``fleet-agent run`` over a scenario with one 8-GPU host, then measures:
  * RSS of the agent process (target <= 35 MB), against a bare Python interpreter's RSS;
  * CPU share of one core over an idle window (default 60 s; target <= 0.5 %);
  * latency p50/p99 of /metrics and /v1/node at 100 requests/s over a keep-alive connection
    (target p99 <= 5 ms), against /healthz (the server's floor: a constant 3-byte answer).
Prints one JSON object: figures, targets, pass/fail per figure, and ratios to the baselines.

With ``--sim-hosts N`` it also measures how many one-shot requests (fleetctl's shape: one GET
/v1/node with ``Connection: close`` per host) one ``sim-fleet`` process of N agents answers, per
second of wall time and per second of the process's CPU: what bounds ``bench_health`` at 10,000
simulated hosts. No target; a figure to compare server changes by.

    python benchmarks/bench_agent.py [--duration 60] [--rate 100] [--requests 1000] [--quick]
                                     [--sim-hosts 2000 [--sim-base-port 24000]]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from simfleet import stop

SCENARIO = """
description: benchmark host, 8 H100s, no faults
groups:
  - {name: bench, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 1}
"""
TARGET_RSS_MB = 35.0
TARGET_CPU_PCT = 0.5
TARGET_P99_MS = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _latencies(port: int, path: str, rate: float, n: int) -> list[float]:
    """Open-loop at ``rate`` requests/s on one keep-alive connection; seconds per request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    out: list[float] = []
    period = 1.0 / rate
    start = time.perf_counter()
    try:
        for i in range(n):
            due = start + i * period
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            out.append(time.perf_counter() - t0)
            if resp.status != 200 or not body:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
    finally:
        conn.close()
    return out


async def _one_shot_round(base_port: int, hosts: int, concurrency: int) -> int:
    """One GET /v1/node with ``Connection: close`` to every agent; how many answered 200."""
    sem = asyncio.Semaphore(concurrency)

    async def one(port: int) -> bool:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/node HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: bench\r\n"
                         b"Accept: application/json\r\nConnection: close\r\n\r\n" % port)
            data = await reader.read()
            writer.close()
            return data.startswith(b"HTTP/1.1 200")

    return sum(await asyncio.gather(*(one(base_port + i) for i in range(hosts))))


def _sim_fleet_answers(agent_bin: Path, hosts: int, base_port: int, rounds: int = 7) -> dict[str, object]:
    """Answers per second (wall, and per CPU second of the sim-fleet process), median of rounds."""
    proc = subprocess.Popen([str(agent_bin), "sim-fleet", "--hosts", str(hosts), "--base-port",
                             str(base_port), "--interval", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            err = proc.stderr.read() if proc.stderr else ""
            raise SystemExit(f"bench_agent: sim-fleet did not start: {line}{err}")
        p = psutil.Process(proc.pid)
        time.sleep(1.0)
        wall: list[float] = []
        per_cpu: list[float] = []
        for _ in range(rounds):
            cpu0, t0 = sum(p.cpu_times()[:2]), time.perf_counter()
            ok = asyncio.run(_one_shot_round(base_port, hosts, 512))
            dt, cpu = time.perf_counter() - t0, sum(p.cpu_times()[:2]) - cpu0
            if ok != hosts:
                raise SystemExit(f"bench_agent: sim-fleet answered {ok} of {hosts}")
            wall.append(hosts / dt)
            per_cpu.append(hosts / cpu if cpu > 0 else float("inf"))
    finally:
        stop(proc)
    return {"hosts": hosts, "rounds": rounds, "concurrency": 512,
            "answers_per_s": round(_percentile(wall, 0.5)),
            "answers_per_s_range": [round(min(wall)), round(max(wall))],
            "answers_per_cpu_s": round(_percentile(per_cpu, 0.5))}


def _baseline_rss_mb() -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return psutil.Process(proc.pid).memory_info().rss / 1e6
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="CPU measurement window, seconds")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--requests", type=int, default=1000, help="requests per endpoint")
    ap.add_argument("--interval", type=float, default=5.0, help="agent sampling interval")
    ap.add_argument("--quick", action="store_true", help="short run: 10 s window, 300 requests each")
    ap.add_argument("--sim-hosts", type=int, default=0, metavar="N",
                    help="also measure one-shot answers/s of one sim-fleet process of N agents")
    ap.add_argument("--sim-base-port", type=int, default=24000, metavar="P",
                    help="its agents listen on P .. P+N-1 (default 24000)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.requests = min(args.duration, 10.0), min(args.requests, 300)

    agent_bin = Path(sys.executable).with_name("fleet-agent")
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        scen = Path(tmp, "scenario.yaml")
        scen.write_text(SCENARIO)
        port = _free_port()
        cfg = Path(tmp, "config.yaml")
        cfg.write_text(json.dumps({"port": port, "interval_s": args.interval,
                                   "simulation": {"scenario": str(scen)}, "xid": {"kernel_log": False}}))
        proc = subprocess.Popen([str(agent_bin), "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/v1/node")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"bench_agent: the agent did not start: {err}")
                time.sleep(0.1)
            p = psutil.Process(proc.pid)
            time.sleep(min(args.interval * 2, 10))  # past start-up and a couple of samples

            # Idle CPU: only the sampling loop runs.
            t0, cpu0 = time.monotonic(), sum(p.cpu_times()[:2])
            rss_peak = p.memory_info().rss
            end = t0 + args.duration
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                rss_peak = max(rss_peak, p.memory_info().rss)
            cpu_pct = 100.0 * (sum(p.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
            chips_seen = _chips_served(port)

            lat = {path: _latencies(port, path, args.rate, args.requests)
                   for path in ("/healthz", "/metrics", "/v1/node")}
            rss_peak = max(rss_peak, p.memory_info().rss)
        finally:
            stop(proc)

    base_rss = _baseline_rss_mb()
    rss_mb = rss_peak / 1e6
    figures: dict[str, dict[str, object]] = {
        "rss_mb": {"value": round(rss_mb, 1), "target": TARGET_RSS_MB, "pass": rss_mb <= TARGET_RSS_MB,
                   "baseline_python_mb": round(base_rss, 1),
                   "ratio_to_baseline": round(rss_mb / base_rss, 2)},
        "cpu_pct_of_one_core": {"value": round(cpu_pct, 3), "target": TARGET_CPU_PCT,
                                "pass": cpu_pct <= TARGET_CPU_PCT, "window_s": args.duration},
    }
    floor = _percentile(lat["/healthz"], 0.99) * 1e3
    for path, key in (("/metrics", "metrics"), ("/v1/node", "node")):
        p50 = _percentile(lat[path], 0.50) * 1e3
        p99 = _percentile(lat[path], 0.99) * 1e3
        figures[f"{key}_latency_ms"] = {
            "p50": round(p50, 3), "p99": round(p99, 3), "target_p99": TARGET_P99_MS,
            "pass": p99 <= TARGET_P99_MS, "baseline_healthz_p99": round(floor, 3),
            "ratio_p99_to_healthz": round(p99 / floor, 2) if floor else None,
            "requests": len(lat[path]), "rate_per_s": args.rate,
        }
    sim_fleet = (_sim_fleet_answers(agent_bin, args.sim_hosts, args.sim_base_port)
                 if args.sim_hosts > 0 else None)
    result = {
        "benchmark": "fleet-agent",
        "chips": 8,
        "interval_s": args.interval,
        "chips_served": chips_seen,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        # On a shared machine the tail latency is the scheduler's, not the agent's: compare the
        # ratios to /healthz (a constant answer through the same server) when this is true.
        "contended": os.getloadavg()[0] > (os.cpu_count() or 1),
        "figures": figures,
        "pass": all(bool(f["pass"]) for f in figures.values()),
    }
    if sim_fleet is not None:
        result["sim_fleet_one_shot"] = sim_fleet
    print(json.dumps(result, indent=2))
    return 0


def _chips_served(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/v1/node")
        return len(json.loads(c.getresponse().read())["chips"])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
