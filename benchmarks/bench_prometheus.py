"""Benchmark ``fleetctl health --json --source prometheus`` against direct fan-out; prints one JSON document.

For each fleet size (1,000 and 10,000 hosts x 8 chips; ``fleet-agent sim-fleet`` in its own process) the
agents' ``/metrics`` are read once, their ``fleet_*`` series kept with the ``job``/``instance``/``host``/
``group`` labels the scrape config adds (``fleetctl prometheus targets``) plus a synthetic ``up``, and
written as OpenMetrics with one recent timestamp per part of 5,000 hosts (each part a block range older
than the last, so no two blocks overlap and Prometheus merges none while it is timed);
``promtool tsdb create-blocks-from openmetrics`` turns that into TSDB blocks and Debian's Prometheus
serves them with the fleetctl-report recording rules loaded. Two adjustments keep one backfilled
sample per series usable for the whole measurement:
``--query.lookback-delta`` is long (the backfilled samples stay visible), and the one series that a
real agent refreshes every few seconds, ``fleet_sample_timestamp_seconds``, is scraped live from a
small feeder in this process (the value is the time of the scrape, as with an agent sampling every
few seconds); without it every host would look stale to fleetctl after 30 s.

Whole commands (interpreter start to exit), warm inventory cache, median of ``--runs``, with the
child's peak RSS (GNU time's %M): direct fan-out over the same agents, through Prometheus, and through
Prometheus with the code before the recording rules (``--before REF``, default d1d88ca~1, in a
temporary ``git worktree`` put first on PYTHONPATH; removed at the end; where it fails at its default
timeout, it is timed again with ``--timeout 300`` as issue 20 did). Prometheus's own CPU seconds per
run are reported beside (it shares the machine's cores here, its background work included: the
rules every 10 s and the feeder's scrape); each run through Prometheus starts between two of the
rules' evaluations where the interval leaves room (``runs_between_evaluations``: at 100,000 hosts one
evaluation is tens of seconds of a core); direct fan-out is timed before Prometheus starts, so that
this work does not slow it down. Every report is checked: the status
of each host equal across the three ways, one row per host. Up to 1,000 hosts fleetctl reads every
host chip by chip; ``prometheus_summary_rows`` is the same command with
``FLEETCTL_PROMETHEUS_DETAIL_HOSTS=0``, the summary rows larger fleets get.

The agents need as many ports as they are, from ``--base-port`` (default 20000): keep them below the
kernel's ephemeral range (32768 and up here), where outgoing connections would take some of them. So
at most ``--real-hosts`` (default 10,000) agents run; a larger size reuses their exposition: host
``h`` of the fleet also stands for ``h-r1``, ``h-r2``, ... (an inventory host each, with an address
of its own that nothing answers), whose series are h's under the copy's labels, so the copy's
expected status is h's. Direct fan-out is timed only at sizes made of real agents alone; at larger
sizes its figure is absent and the statuses are checked against direct fan-out over the real agents.
With ``--evaluation-interval`` the rules run less often (60 s keeps Prometheus's rule work over
millions of series from taking both cores; fleetctl's trust window follows the interval).
``--replay-sizes N[,N...]`` times fleetctl alone at sizes past what this machine can hold a Prometheus
for (100,000 hosts are 30 million series): after the largest size made of real agents, that server's
answers to fleetctl's rule queries are captured, each host's series repeated under its copies' names
(right after it, as a server answering in label order lists them; times moved to the moment of each
run), and served at once from this process once Prometheus and the agents are stopped
(benchmarks/prom_replay.py); with ``--before`` the old code's runs alternate with the new. It is
fleetctl's share of the command: the server's own time to select and encode the answers is not in it.
``--rules FILE`` loads another rules file (an older version, say); ``--hold FILE`` keeps Prometheus and
the agents up after each size, their URL and inventory written to FILE, until FILE is removed, for
measurements by hand against the same server (rules swapped with SIGHUP, in-process timers).

Targets (issue 20): through Prometheus not slower per host than direct fan-out at 10,000 hosts, and
10,000 hosts <= 1 s whole command; ``before_vs_after`` is the old path's time over the new one's.

    python benchmarks/bench_prometheus.py            # 1,000 and 10,000 hosts, 3 runs, with --before
    python benchmarks/bench_prometheus.py --quick    # 1,000 hosts, 1 run, no before (CI smoke)
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures
import datetime
import http.client
import http.server
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from prom_replay import Replay
from simfleet import raise_nofile, start_fleet, stop

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLEETCTL = str(BIN / "fleetctl")
RULES = REPO / "deploy/prometheus/rules/fleetctl-report.rules.yml"
JOB = "fleet"
TARGET_10K_S = 1.0  # issue 20: 10,000 hosts through Prometheus, whole command
BEFORE_REF = "d1d88ca~1"  # the code before the recording rules
LONG_TIMEOUT = ["--timeout", "300"]
GNU_TIME = "/usr/bin/time"  # the peak RSS of fleetctl alone (Debian's package 'time')
# fleetctl/promsource.py: up to this many selected hosts are read chip by chip, unless the variable says
DETAIL_ALL_MAX_HOSTS = 1000
ENV_DETAIL = "FLEETCTL_PROMETHEUS_DETAIL_HOSTS"


def log(msg: str) -> None:
    print(f"[bench_prometheus] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def missing_tools() -> str | None:
    """Why this benchmark cannot run here (one line), or None."""
    for tool in ("promtool", "prometheus"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            return f"{tool} is not installed (apt-get install prometheus; make system-deps)"
    return None


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/bin/{name}"


# --- the data: the agents' exposition, labelled as scraped -----------------------------------------------


def targets_of(inv: Path, work: Path, env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(host, group, endpoint) per host, from ``fleetctl prometheus targets`` (what file_sd would get)."""
    out = work / "targets.json"
    subprocess.run([FLEETCTL, "prometheus", "targets", "-i", str(inv), "-o", str(out)], check=True,
                   capture_output=True, env=env)
    return [(t["labels"]["host"], t["labels"]["group"], t["targets"][0]) for t in json.loads(out.read_text())]


def _fetch(endpoint: str) -> str:
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise SystemExit(f"bench_prometheus: {endpoint}/metrics answered HTTP {resp.status}")
        return body
    finally:
        conn.close()


# The agent's copy of its sample time in fleet_fault_detail (a host that is not clean): served live by
# the Feeder beside the original, so it is left out of the backfill.
LIVE_COPY = 'metric="fleet_sample_timestamp_seconds"'
_EMPTY_LABEL = re.compile(r'(?<=[{,])[A-Za-z_][A-Za-z0-9_]*="",?')


def _labelled(line: str, extra: str, ts: str) -> str:
    """``name{labels} value`` with the scrape's labels first and a timestamp, labels with an empty value
    dropped as a scrape drops them; '' for other lines."""
    if not line.startswith("fleet_") or LIVE_COPY in line:
        return ""
    head, _, value = line.rpartition(" ")
    if head.endswith("}"):
        name, _, labels = head.partition("{")
        if '=""' in labels:
            labels = _EMPTY_LABEL.sub("", "{" + labels)[1:].replace(",}", "}")
        if labels == "}":
            return f"{name}{{{extra}}} {value} {ts}\n"
        return f"{name}{{{extra},{labels} {value} {ts}\n"
    return f"{head}{{{extra}}} {value} {ts}\n"


# Hosts per OpenMetrics file: promtool holds a file's series in memory while it builds blocks (about
# 2 KB each: 18 GB for 30,000 hosts in one file), so large fleets are backfilled a part at a time.
BACKFILL_HOSTS = 5000
# Each part is stamped one block range (2 h) before the previous one, so that its block overlaps no
# other: overlapping blocks make Prometheus merge them all at start (a vertical compaction), and at
# 100,000 hosts that merge of 30 million series kept 1.5 of the 2 cores busy through every timed run.
# Prometheus runs with one block range (no merging of neighbours either) and a lookback that reaches
# the oldest part (`start_prometheus`).
BLOCK_S = 7200


def write_openmetrics(targets: list[tuple[str, str, str]], prefix: Path, ts: float,
                      copies: dict[str, list[tuple[str, str, str]]] | None = None
                      ) -> tuple[int, list[Path], set[str]]:
    """Every agent's fleet_* series plus ``up`` as of ``ts``, and the same again under the labels of
    each of its copies (``copies``: real host -> its copies' targets), in files of BACKFILL_HOSTS
    hosts; returns the number of series, the files, and the hosts whose agent copies its sample time
    (:data:`LIVE_COPY`)."""
    series, hosts = 0, 0
    files: list[Path] = []
    live: set[str] = set()
    out = None
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for (host, group, endpoint), text in zip(targets, pool.map(_fetch, [t[2] for t in targets]),
                                                 strict=True):
            for h, g, e in [(host, group, endpoint), *(copies or {}).get(host, [])]:
                if hosts % BACKFILL_HOSTS == 0:
                    if out is not None:
                        out.write("# EOF\n")
                        out.close()
                    stamp = f"{ts - len(files) * BLOCK_S:.3f}"  # a block range of its own
                    files.append(prefix.with_name(f"{prefix.name}-{len(files)}.om"))
                    out = files[-1].open("w")
                hosts += 1
                extra = f'group="{g}",host="{h}",instance="{e}",job="{JOB}"'
                if LIVE_COPY in text:
                    live.add(h)
                # A copy's agent names the copy (fleet_agent_info's hostname), as a real one names its
                # own host: otherwise fleetctl rightly sees another host's agent behind the copy's target.
                own = text if h == host else text.replace(f'hostname="{host}"', f'hostname="{h}"')
                lines = [_labelled(line, extra, stamp) for line in own.splitlines()]
                lines = [line for line in lines if line]
                lines.append(f"up{{{extra}}} 1 {stamp}\n")
                out.writelines(lines)  # type: ignore[union-attr]  # opened at the first host
                series += len(lines)
    if out is not None:
        out.write("# EOF\n")
        out.close()
    return series, files, live


def add_copies(inv: Path, targets: list[tuple[str, str, str]], hosts: int
               ) -> tuple[Path, dict[str, list[tuple[str, str, str]]], dict[str, str]]:
    """An inventory of ``hosts``: the real ones plus copies (``name-rK``, group ``replicas``, an
    address of 10/8 no one answers); the copies' targets per real host, and each copy's source."""
    copies: dict[str, list[tuple[str, str, str]]] = {}
    source: dict[str, str] = {}
    lines = ["\n# copies of the real agents' exposition (--real-hosts)\nreplicas:\n  hosts:\n"]
    for i in range(hosts - len(targets)):
        host, _group, _endpoint = targets[i % len(targets)]
        name, address = f"{host}-r{i // len(targets) + 1}", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        copies.setdefault(host, []).append((name, "replicas", f"{address}:10400"))
        source[name] = host
        lines.append(f"    {name}: {{ansible_host: {address}, fleet_agent_port: 10400, "
                     "fleet_agent_expected_chips: 8}\n")
    out = inv.with_name(f"{inv.stem}-{hosts}.yml")
    out.write_text(inv.read_text() + "".join(lines))
    return out, copies, source


class Feeder:
    """Serves ``fleet_sample_timestamp_seconds`` of every host, valued at the time of the scrape, and
    its copy in ``fleet_fault_detail`` for the hosts in ``live`` (those whose agent copies it)."""

    def __init__(self, targets: list[tuple[str, str, str]], port: int, live: set[str] = frozenset()) -> None:
        self.labels = [f'group="{g}",host="{h}",instance="{e}",job="{JOB}"' for h, g, e in targets]
        self.copies = [f'{LIVE_COPY},group="{g}",host="{h}",instance="{e}",job="{JOB}"'
                       for h, g, e in targets if h in live]
        feeder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                now = f"{time.time():.3f}"
                body = ("".join(f"fleet_sample_timestamp_seconds{{{lb}}} {now}\n" for lb in feeder.labels)
                        + "".join(f"fleet_fault_detail{{{lb}}} {now}\n" for lb in feeder.copies)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Prometheus ------------------------------------------------------------------------------------------


def query(url: str, promql: str, when: float | None = None, timeout_s: float = 60) -> list[dict[str, Any]]:
    """An instant query's result, evaluated now or at ``when`` (epoch seconds)."""
    form = {"query": promql} if when is None else {"query": promql, "time": f"{when:.3f}"}
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode(form)
    with urllib.request.urlopen(address, timeout=timeout_s) as r:
        return json.loads(r.read())["data"]["result"]  # type: ignore[no-any-return]


def rule_groups(url: str) -> list[dict[str, Any]]:
    """The recording rule groups as ``/api/v1/rules`` reports them."""
    with urllib.request.urlopen(f"{url}/api/v1/rules?type=record", timeout=60) as r:
        return json.loads(r.read())["data"]["groups"]  # type: ignore[no-any-return]


def report_group(groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((g for g in groups if g["name"] == "fleetctl-report"), None)


def rule_times(url: str) -> dict[str, float]:
    """The fleetctl-report group's last evaluation time ("group"), its costliest rules', and any other
    group's loaded beside it ("group NAME"), in seconds."""
    groups = rule_groups(url)
    rules: dict[str, float] = {}
    out: dict[str, float] = {}
    for g in groups:
        if g["name"] != "fleetctl-report":
            out[f"group {g['name']}"] = round(g["evaluationTime"], 2)
            continue
        out["group"] = round(g["evaluationTime"], 2)
        for rule in g["rules"]:
            key = rule["name"] + "".join(f" {v}" for v in rule.get("labels", {}).values())
            rules[key] = round(rules.get(key, 0.0) + rule["evaluationTime"], 2)
    return out | dict(sorted(rules.items(), key=lambda kv: -kv[1])[:7])


def rules_quiet_s(groups: list[dict[str, Any]], now: float) -> float:
    """Seconds left before the fleetctl-report group evaluates again, from ``/api/v1/rules``'s groups
    (0: one is running or due). At 100,000 hosts an evaluation takes tens of seconds of a core: a timed
    run that meets one measures the rules as much as fleetctl's queries."""
    g = report_group(groups)
    if g is None:
        return math.inf
    # RFC 3339 with up to nanoseconds; fromisoformat takes microseconds.
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", g["lastEvaluation"]).replace("Z", "+00:00")
    return max(datetime.datetime.fromisoformat(stamp).timestamp() + g["interval"] - now, 0.0)


def wait_for_quiet(url: str, need_s: float) -> bool:
    """Wait (10 minutes at most) until the next rules evaluation is ``need_s`` seconds away or more;
    False when the group leaves no such window (evaluations nearly as long as the interval)."""
    give_up = time.monotonic() + 600.0
    while time.monotonic() < give_up:
        groups = rule_groups(url)
        if rules_quiet_s(groups, time.time()) >= need_s:
            return True
        g = report_group(groups)
        if g is not None and g["interval"] - g["evaluationTime"] < need_s:
            return False  # no window that long: measured as it comes
        time.sleep(0.5)
    return False


def compactions(url: str) -> int:
    """Block compactions Prometheus has run and is running (its own /metrics): a merge during the timed
    runs would be the benchmark's backfill, not fleetctl's queries, competing for the cores."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=60) as r:
        text = r.read().decode()
    names = ("prometheus_tsdb_compactions_total ", "prometheus_tsdb_vertical_compactions_total ",
             "prometheus_tsdb_compaction_populating_block ")
    return sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(names))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_prometheus(work: Path, openmetrics: list[Path], port: int, feeder_port: int, hosts: int,
                     evaluation_s: int = 10, rules: Path = RULES
                     ) -> tuple[subprocess.Popen[bytes], str, dict[str, Any]]:
    data = work / "data"
    started = time.perf_counter()
    for part in openmetrics:  # one block per part, each in a block range of its own (BLOCK_S)
        out = subprocess.run([tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(part),
                              str(data)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench_prometheus: promtool create-blocks-from openmetrics failed: "
                             f"{(out.stdout + out.stderr).strip()[-300:]}")
        part.unlink()
    blocks_s = time.perf_counter() - started
    small = hosts <= 10000
    (work / "prometheus.yml").write_text(
        # The feeder's answer grows with the fleet (3.6 MB at 30,000 hosts): a scrape that times out
        # would mark every sample time stale. Its interval stays well inside the stale window.
        f"global: {{scrape_interval: {5 if small else 15}s, scrape_timeout: {4 if small else 10}s, "
        f"evaluation_interval: {evaluation_s}s}}\n"
        f"rule_files: ['{rules}']\n"
        "scrape_configs:\n"
        "  - job_name: feeder\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{feeder_port}']}}]\n")
    url = f"http://127.0.0.1:{port}"
    logf = work / "prometheus.log"
    prom = subprocess.Popen(
        [tool("prometheus"), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", f"--query.lookback-delta={len(openmetrics) * 2 + 2}h",
         # One block range, 2 h (hidden flags, as Prometheus's own tests set them): the backfilled
         # blocks, one range each, are never merged while the benchmark runs (see BLOCK_S).
         f"--storage.tsdb.min-block-duration={BLOCK_S // 3600}h",
         f"--storage.tsdb.max-block-duration={BLOCK_S // 3600}h", "--log.level=warn"],
        stdout=logf.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started = time.perf_counter()
    deadline = time.monotonic() + 600 + 3 * evaluation_s
    while True:  # the rules evaluated over the backfilled series and a fresh sample time
        if prom.poll() is not None:
            raise SystemExit(f"bench_prometheus: prometheus exited: {logf.read_text()[-500:]}")
        try:
            if (query(url, "fleetctl:report_rules:info")
                    and (n := query(url, "count(count by (host) (fleetctl:host_chip_models))"))
                    and int(n[0]["value"][1]) == hosts
                    # every sample fresh when the rules saw it (their info's value: the evaluation's time);
                    # rules of version 4 record clean hosts' sample times, earlier ones every host's
                    and (age := query(url, "scalar(fleetctl:report_rules:info) - min("
                                           "fleetctl:clean_host_sample_timestamp_seconds or "
                                           'fleetctl:host_summary{summary="sample_timestamp_seconds"})'))
                    and float(age[0]["value"][1]) < 20):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            prom.kill()
            raise SystemExit(f"bench_prometheus: the recording rules never covered the {hosts} hosts")
        time.sleep(1)
    return prom, url, {"create_blocks_s": round(blocks_s, 1),
                       "ready_s": round(time.perf_counter() - started, 1)}


# --- one whole fleetctl command ------------------------------------------------------------------------


class CommandFailed(Exception):
    """fleetctl ended with neither 0 nor 1 (the message is its stderr's end)."""


class Run:
    """``fleetctl ARGS`` timed from start to exit, with its peak RSS and parsed JSON."""

    def __init__(self, args: list[str], env: dict[str, str], prom_pid: int | None = None) -> None:
        prom_before = cpu_s(prom_pid) if prom_pid else 0.0
        started = time.perf_counter()
        # Output to files, not pipes: the child is reaped by wait4 (its own rusage), not by Popen.
        # The peak RSS comes from GNU time: a child forked from this (large) process carries this
        # process's high-water mark through exec into its own ru_maxrss.
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f, \
                tempfile.NamedTemporaryFile("r") as rss_f:
            cmd = [FLEETCTL, *args]
            if Path(GNU_TIME).exists():
                cmd = [GNU_TIME, "-f", "%M", "-o", rss_f.name, *cmd]
            proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            self.wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            out_f.seek(0)
            err_f.seek(0)
            out, err = out_f.read(), err_f.read()
            kb = rss_f.read().strip().splitlines()
        self.rss_mb = round(int(kb[-1]) / 1024 if kb and kb[-1].isdigit() else usage.ru_maxrss / 1024, 1)
        self.cpu = usage.ru_utime + usage.ru_stime
        self.prom_cpu = (cpu_s(prom_pid) - prom_before) if prom_pid else 0.0
        self.stderr = err.decode(errors="replace").strip()
        if proc.returncode not in (0, 1):
            log(f"fleetctl stderr: {self.stderr[:2000]}")
            raise CommandFailed(f"fleetctl {' '.join(args[:6])} failed after {self.wall:.1f}s "
                                f"(exit {proc.returncode}): {self.stderr[-300:]}")
        self.doc: dict[str, Any] = json.loads(out)
        self.statuses = {h["name"]: h["status"] for h in self.doc["hosts"]}


def measure(name: str, args: list[str], env: dict[str, str], runs: int, prom_pid: int | None,
            url: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Figures of ``runs`` warm runs (0: the warm-up's statuses only); a failed command fails the
    benchmark. With Prometheus's ``url``, each timed run starts between two rules evaluations, with
    half as long again as the run before it left before the next."""
    warm = Run(args, env, prom_pid)  # warm: the inventory cache, the page cache
    if runs == 0:
        return {}, warm.statuses
    rs: list[Run] = []
    quiet = 0
    for _ in range(runs):
        if url is not None:
            quiet += wait_for_quiet(url, 1.5 * (rs[-1] if rs else warm).wall + 1.0)
        rs.append(Run(args, env, prom_pid))
    for i, r in enumerate(rs):
        log(f"  {name} run {i + 1}: {r.wall:.2f}s, RSS {r.rss_mb:.0f} MB, fleetctl CPU {r.cpu:.2f}s"
            + (f", Prometheus CPU {r.prom_cpu:.2f}s" if prom_pid else ""))
    notes = sorted({r.stderr for r in rs if r.stderr})
    fig: dict[str, Any] = {
        "whole_command_s": median([r.wall for r in rs]), "runs_s": [round(r.wall, 3) for r in rs],
        "fleetctl_rss_mb": median([r.rss_mb for r in rs]), "fleetctl_cpu_s": median([r.cpu for r in rs]),
        "statuses": dict(Counter(rs[-1].statuses.values())),
    }
    if prom_pid:
        fig["prometheus_cpu_s"] = median([r.prom_cpu for r in rs])
    if url is not None:
        fig["runs_between_evaluations"] = quiet
    if notes:
        fig["stderr"] = notes[0][:300]
    return fig, rs[-1].statuses


def bench_size(work: Path, hosts: int, runs: int, base_port: int, prom_port: int,
               before: Path | None, real_hosts: int = 10000, evaluation_s: int = 10,
               rules: Path = RULES, hold: Path | None = None, replay_sizes: tuple[int, ...] = (),
               scenario: str = "healthy") -> dict[str, Any]:
    d = work / f"n{hosts}"
    d.mkdir()
    real = min(hosts, real_hosts)
    log(f"{hosts} hosts: starting sim-fleet of {real} on {base_port}..{base_port + real - 1}")
    fleet, inv = start_fleet(d, real, base_port, scenario=scenario)
    feeder: Feeder | None = None
    prom: subprocess.Popen[bytes] | None = None
    replay: tuple[Replay, Path, list[tuple[str, str, str]], dict[str, str], dict[str, str]] | None = None
    try:
        env = {**os.environ, "FLEETCTL_CACHE_DIR": str(d / "cache")}
        targets = targets_of(inv, d, env)
        try:
            # Before Prometheus starts: its rule evaluations over every series would share the cores.
            direct, want = measure("direct", ["health", "-i", str(inv), "--json"], env,
                                   runs if real == hosts else 0, None)
        except CommandFailed as exc:
            raise SystemExit(f"bench_prometheus: {hosts} hosts: {exc}") from None
        copies: dict[str, list[tuple[str, str, str]]] = {}
        if real < hosts:
            inv, copies, source = add_copies(inv, targets, hosts)
            want = {**want, **{name: want[src] for name, src in source.items()}}
        started = time.perf_counter()
        series, parts, live = write_openmetrics(targets, d / "fleet", time.time(), copies)
        size = sum(part.stat().st_size for part in parts)
        log(f"{hosts} hosts: {series} series ({size / 1e6:.0f} MB OpenMetrics in {len(parts)} parts) in "
            f"{time.perf_counter() - started:.1f}s; building blocks")
        feeder = Feeder(targets + [c for cs in copies.values() for c in cs], prom_port + 1, live)
        prom, url, setup = start_prometheus(d, parts, prom_port, prom_port + 1, hosts, evaluation_s, rules)
        # Its background work (rules, the feeder's scrape) over one evaluation interval, no query:
        # the part of each run's Prometheus CPU that is not the queries'.
        idle_from = cpu_s(prom.pid)
        time.sleep(10)
        setup["idle_cpu_per_s"] = round((cpu_s(prom.pid) - idle_from) / 10, 3)
        setup["rule_evaluation_s"] = rule_times(url)
        log(f"{hosts} hosts: Prometheus ready ({setup})")
        via = ["health", "-i", str(inv), "--json", "--source", "prometheus", "--prometheus-url", url]
        merges = compactions(url)
        try:
            after, got = measure("prometheus", via, env, runs, prom.pid, url)
        except CommandFailed as exc:
            raise SystemExit(f"bench_prometheus: {hosts} hosts: {exc}") from None
        # Compactions run or running, at the first run and after the last: 0 and 0 when none competed.
        setup["compactions_at_runs"] = [merges, compactions(url)]
        result: dict[str, Any] = {
            "hosts": hosts, "scenario": scenario, "real_agents": real, "chips_per_host": 8, "runs": runs,
            "series": series,
            "evaluation_interval_s": evaluation_s, "setup": setup, "prometheus": after,
            "prometheus_per_host_ms": round(after["whole_command_s"] / hosts * 1000, 4),
            "statuses_agree": got == want and len(got) == hosts,
        }
        if real == hosts:
            result["direct"] = direct
            result["direct_per_host_ms"] = round(direct["whole_command_s"] / hosts * 1000, 4)
            result["prometheus_not_slower_than_direct"] = (after["whole_command_s"]
                                                           <= direct["whole_command_s"])
        if hosts <= DETAIL_ALL_MAX_HOSTS:
            # A selection this small is read chip by chip; the summary rows are what larger ones get.
            rows, rows_got = measure("prometheus summary rows", via, {**env, ENV_DETAIL: "0"}, runs, prom.pid,
                                     url)
            rows["statuses_agree"] = rows_got == want
            result["prometheus_summary_rows"] = rows
        if hosts == 10000:
            result["target_s"] = TARGET_10K_S
            result["meets_target"] = after["whole_command_s"] <= TARGET_10K_S
        if before is not None:
            path = os.pathsep.join([str(before), str(before / "agents"), env.get("PYTHONPATH", "")])
            old_env = {**env, "PYTHONPATH": path.rstrip(os.pathsep)}
            # The old code failing (its query timeout was the per-host --timeout) is a figure, not a
            # broken benchmark; then it is timed again with a long --timeout, as the issue did.
            for key, extra in (("prometheus_before", []), ("prometheus_before_timeout_300", LONG_TIMEOUT)):
                try:
                    old, old_got = measure(key.replace("_", " "), via + extra, old_env, runs, prom.pid, url)
                except CommandFailed as exc:
                    log(f"  {key}: {exc}")
                    result[key] = {"failed": str(exc)}
                    continue
                old["statuses_agree"] = old_got == want
                result[key] = old
                result["before_vs_after"] = round(old["whole_command_s"] / after["whole_command_s"], 2)
                break
            else:
                result["before_vs_after"] = None
        if replay_sizes and real == hosts:
            # Captured now, timed once Prometheus and the agents are gone (their background work, the
            # rules' above all, would share the cores with fleetctl alone).
            from fleetctl.promsource import RULE_QUERIES

            kept = shutil.copy(inv, work / inv.name)
            replay = (Replay(url, RULE_QUERIES), Path(kept), targets, want, env)
        if hold is not None:
            # For measurements by hand against the same Prometheus (rules swapped with SIGHUP, say).
            hold.write_text(json.dumps({"url": url, "inventory": str(inv), "prometheus_pid": prom.pid,
                                        "cache_dir": env["FLEETCTL_CACHE_DIR"], "rules": str(rules)}))
            log(f"{hosts} hosts: holding Prometheus until {hold} is removed")
            while hold.exists():
                time.sleep(1)
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(60)
        if feeder is not None:
            feeder.close()
        stop(fleet)
        shutil.rmtree(d, ignore_errors=True)
    if replay is not None:
        captured, kept_inv, targets, want, env = replay
        env = {**env, "FLEETCTL_CACHE_DIR": str(work / "replay-cache")}
        result["replayed"] = bench_replay(captured, kept_inv, targets, want, replay_sizes, runs, env,
                                          prom_port + 2, before)
    return result


def bench_replay(replay: Replay, inv: Path, targets: list[tuple[str, str, str]], want: dict[str, str],
                 sizes: tuple[int, ...], runs: int, env: dict[str, str], port: int,
                 before: Path | None = None) -> list[dict[str, Any]]:
    """fleetctl's own share at fleet sizes past what this machine holds a Prometheus for: a live
    server's answers to the rule queries (``replay``), repeated for each host's copies and served at
    once (benchmarks/prom_replay.py); rebuilt before each run, timed as if the rules had just run.
    With ``before``, that code's runs alternate with this code's (each with its own cache)."""
    server = replay.serve(port)
    arms = {"after": env}
    if before is not None:
        path = os.pathsep.join([str(before), str(before / "agents"), env.get("PYTHONPATH", "")])
        arms["before"] = {**env, "PYTHONPATH": path.rstrip(os.pathsep),
                          "FLEETCTL_CACHE_DIR": env["FLEETCTL_CACHE_DIR"] + "-before"}
    out: list[dict[str, Any]] = []
    try:
        for n in sizes:
            big, copies, source = add_copies(inv, targets, n)
            expected = {**want, **{name: want[src] for name, src in source.items()}}
            via = ["health", "-i", str(big), "--json", "--source", "prometheus",
                   "--prometheus-url", f"http://127.0.0.1:{port}"]
            rs: dict[str, list[Run]] = {arm: [] for arm in arms}
            for i in range(runs + 1):  # the first run parses the inventory (cold): not counted
                for arm, arm_env in arms.items():
                    answer_bytes = replay.build(copies)
                    try:
                        r = Run(via, arm_env)
                    except CommandFailed as exc:
                        raise SystemExit(f"bench_prometheus: replay of {n} hosts ({arm}): {exc}") from None
                    if i:
                        rs[arm].append(r)
                        log(f"  replay {n} hosts {arm} run {i}: {r.wall:.2f}s, RSS {r.rss_mb:.0f} MB, "
                            f"fleetctl CPU {r.cpu:.2f}s")
            figures: dict[str, Any] = {"hosts": n, "answers_mb": round(answer_bytes / 1e6, 1)}
            for arm, arm_runs in rs.items():
                figures[arm] = {
                    "whole_command_s": median([r.wall for r in arm_runs]),
                    "runs_s": [round(r.wall, 3) for r in arm_runs],
                    "fleetctl_rss_mb": median([r.rss_mb for r in arm_runs]),
                    "fleetctl_cpu_s": median([r.cpu for r in arm_runs]),
                    "statuses": dict(Counter(arm_runs[-1].statuses.values())),
                    "statuses_agree": arm_runs[-1].statuses == expected and len(arm_runs[-1].statuses) == n,
                }
            out.append(figures)
            big.unlink()
    finally:
        server.shutdown()
        server.server_close()
    return out


def table(sizes: list[dict[str, Any]]) -> list[str]:
    """The figures side by side, one line per fleet size (medians: whole command, fleetctl's RSS)."""
    def cell(fig: dict[str, Any] | None) -> str:
        if not fig or "whole_command_s" not in fig:
            return "-"
        agree = "" if fig.get("statuses_agree", True) else " (statuses differ)"
        return f"{fig['whole_command_s']:.2f} s, {fig['fleetctl_rss_mb']:.0f} MB{agree}"

    rows: dict[int, list[str]] = {}
    for size in sizes:
        rows[size["hosts"]] = [cell(size.get("direct")), cell(size.get("prometheus")),
                               cell(size.get("prometheus_before")), "-", "-"]
        for rep in size.get("replayed", []):
            line = rows.setdefault(rep["hosts"], ["-"] * 5)
            line[3], line[4] = cell(rep.get("after")), cell(rep.get("before"))
    head = ["hosts", "direct fan-out", "through Prometheus", "same, before", "fleetctl alone (replayed)",
            "same, before"]
    lines = [" | ".join(head)]
    lines += [" | ".join([f"{n:,}", *cells]) for n, cells in sorted(rows.items())]
    return lines


def make_worktree(ref: str, path: Path) -> Path:
    out = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_prometheus: git worktree add {ref} failed: {out.stderr.strip()[-200:]}")
    # From "/": `python -c` puts its working directory first on sys.path, the fleetctl script does not.
    probe = subprocess.run([sys.executable, "-c", "import fleetctl.promsource as m; print(m.__file__)"],
                           capture_output=True, text=True, cwd="/",
                           env={**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{path / 'agents'}"})
    if not probe.stdout.strip().startswith(str(path)):  # the editable install must not win
        remove_worktree(path)
        raise SystemExit(f"bench_prometheus: PYTHONPATH={path} does not override fleetctl: {probe.stdout}")
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 hosts, 1 run, no --before")
    p.add_argument("--sizes", help="comma-separated fleet sizes (default 1000,10000)")
    p.add_argument("--runs", type=int, help="runs per measurement (default 3, --quick 1)")
    p.add_argument("--before", default=None,
                   help=f"git ref of the code to compare with (default {BEFORE_REF}; 'none' to skip; "
                        "--quick skips it)")
    p.add_argument("--base-port", type=int, default=20000,
                   help="first port of the simulated agents (as many as the largest size has hosts)")
    p.add_argument("--prometheus-port", type=int, default=19190, help="Prometheus; the feeder uses the next")
    p.add_argument("--real-hosts", type=int, default=10000,
                   help="at most this many real agents; larger sizes copy their exposition (default 10000)")
    p.add_argument("--evaluation-interval", type=int, default=10,
                   help="the recording rules' evaluation interval in seconds (default 10)")
    p.add_argument("--rules", type=Path, default=RULES,
                   help="the recording rules file Prometheus loads (default: the shipped one)")
    p.add_argument("--scenario", default="healthy",
                   help="the simulated agents' scenario (default healthy; demo: about 1 host in 6 with a "
                        "fault, each checked against direct fan-out; copies carry their source's faults)")
    p.add_argument("--hold", type=Path,
                   help="after each size, write its URL and inventory to this file and keep Prometheus and "
                        "the agents running until the file is removed")
    p.add_argument("--replay-sizes", default="",
                   help="after the largest size made of real agents, fleetctl alone at these sizes against "
                        "that server's answers replayed (comma-separated; benchmarks/prom_replay.py)")
    args = p.parse_args()
    if (problem := missing_tools()) is not None:
        print(f"bench_prometheus: {problem}", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [1000] if args.quick else [1000, 10000]
    runs = args.runs or (1 if args.quick else 3)
    replay = tuple(int(n) for n in args.replay_sizes.split(",") if n)
    made_of_agents = [n for n in sizes if n <= args.real_hosts]
    if replay and not made_of_agents:
        p.error("--replay-sizes needs a size made of real agents alone (<= --real-hosts) to replay")
    replay_from = max(made_of_agents, default=0)
    before_ref = args.before or ("none" if args.quick else BEFORE_REF)
    raise_nofile()
    for package in (REPO / "fleetctl", REPO / "agents" / "fleet_agent"):
        compileall.compile_dir(str(package), quiet=1)  # as a wheel install would have
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-prom-") as tmp:
        work = Path(tmp)
        before = None if before_ref == "none" else make_worktree(before_ref, work / "before")
        try:
            result: dict[str, Any] = {
                "benchmark": "fleetctl health --source prometheus", "cpus": os.cpu_count(),
                "load_avg_at_start": os.getloadavg()[0], "before_ref": None if before is None else before_ref,
                "sizes": [bench_size(work, n, runs, args.base_port, args.prometheus_port, before,
                                     args.real_hosts, args.evaluation_interval, args.rules.resolve(),
                                     args.hold, replay if n == replay_from else (), args.scenario)
                          for n in sizes],
            }
        finally:
            if before is not None:
                remove_worktree(before)
        result["load_avg_at_end"] = os.getloadavg()[0]
        result["elapsed_s"] = round(time.time() - started, 1)
    for line in table(result["sizes"]):
        log(line)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
