#!/usr/bin/env python3
"""The agent's figures on a real host, as JSON on stdout (part of scripts/hw-validate.sh).

- NVML call latencies, from a recording made by ``fleet-agent once --record-nvml``: per function,
  how many calls, the median and the slowest, in milliseconds;
- ``fleet-agent run`` with the given config for ``--seconds``: its RSS (MB) and CPU (% of one
  core) sampled each second after the first sample, and the latency of ``/metrics`` and
  ``/v1/node`` (p50, p99, ms) with the token.

Runs with the venv's Python: psutil comes with the agent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil


def nvml_latencies(recording: dict[str, Any]) -> dict[str, dict[str, float]]:
    by_fn: dict[str, list[float]] = {}
    for call in recording.get("calls", []):
        if isinstance(call.get("ms"), (int, float)) and not call["fn"].startswith("nvmlEventSetWait"):
            by_fn.setdefault(call["fn"], []).append(float(call["ms"]))
    return {fn: {"calls": len(v), "median_ms": round(statistics.median(v), 4), "max_ms": round(max(v), 4)}
            for fn, v in sorted(by_fn.items())}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fetch(url: str, token: str) -> float:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - our own agent on loopback
        answer.read()
    return (time.perf_counter() - started) * 1000.0


def run_agent(agent: str, config: str, port: int, token: str, seconds: int) -> dict[str, Any]:
    proc = subprocess.Popen([agent, "run", "--config", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(base + "/v1/node", token)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = proc.stderr.read() if proc.stderr else ""
                    raise RuntimeError(f"the agent did not answer: {said}") from None
                time.sleep(0.2)
        ps = psutil.Process(proc.pid)
        ps.cpu_percent(None)
        rss, cpu, metrics_ms, node_ms = [], [], [], []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(1.0)
            rss.append(ps.memory_info().rss / 1e6)
            cpu.append(ps.cpu_percent(None))
            metrics_ms.append(fetch(base + "/metrics", token))
            node_ms.append(fetch(base + "/v1/node", token))
        # The scrapes above cost the agent CPU too; what the agent costs on its own is in the
        # samples before them each second, which is what an SRE pays with one Prometheus scrape.
        return {
            "seconds": seconds,
            "rss_mb_max": round(max(rss), 1),
            "rss_mb_last": round(rss[-1], 1),
            "cpu_pct_mean": round(statistics.mean(cpu), 2),
            "metrics_ms_p50": round(percentile(metrics_ms, 0.5), 2),
            "metrics_ms_p99": round(percentile(metrics_ms, 0.99), 2),
            "node_ms_p50": round(percentile(node_ms, 0.5), 2),
            "node_ms_p99": round(percentile(node_ms, 0.99), 2),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agent", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--recording", required=True)
    args = p.parse_args()
    recording = json.loads(Path(args.recording).read_text(encoding="utf-8"))
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    try:
        agent = run_agent(args.agent, args.config, args.port, token, args.seconds)
    except (RuntimeError, OSError) as exc:
        print(f"hw_figures: {exc}", file=sys.stderr)
        return 2
    json.dump({"nvml_calls": nvml_latencies(recording), "agent": agent}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
