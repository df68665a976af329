"""NVIDIA's own dcgm-exporter Grafana dashboard, panel by panel, against fleet-agent.

A real Prometheus (Debian's /usr/bin/prometheus) scrapes real ``fleet-agent run`` processes over
simulated chips: an H100 host, an A100 host and a TPU host. The dashboard's variables are filled as
Grafana fills them (their own ``label_values`` queries; "All" as the alternation of every value),
then each panel's expression is evaluated: every panel returns data, one series per GPU, carrying
the labels the panel groups by and names in its legend. The two profiling panels (DCGM's DCP
fields) are fed from NVML's GPM, which Hopper and later GPUs have: the H100 host's GPUs show there,
the A100 host's do not, as with dcgm-exporter where DCGM's profiling is unavailable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import free_port_block, http_get

pytestmark = pytest.mark.integration

FLEET_AGENT = str(Path(sys.executable).with_name("fleet-agent"))
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PORTS = (37000, 37999)

SCENARIO = """\
seed: 11
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 1}
  - {name: a100, kind: gpu, model: A100-SXM4-80GB, chips: 4, count: 1}
  - {name: v5e, kind: tpu, model: v5e, chips: 4, count: 1}
"""
GPU_HOSTS = {"h100-0000": 8, "a100-0000": 4}

# The panels of NVIDIA's dashboard, as read from NVIDIA/dcgm-exporter, grafana/dcgm-exporter-dashboard.json
# at commit 068798b0a1cb23d7764fa30f6f305d322ede87e2 ("NVIDIA DCGM Exporter Dashboard", uid Oxed_c6Wz,
# Grafana 9.1.5, schemaVersion 37). The list is written here; the file was read for the facts only.
SEL = '{Hostname=~"$Hostname", gpu=~"$gpu"}'
VAR_HOSTNAME = "label_values(DCGM_FI_DEV_FB_FREE, Hostname)"
VAR_GPU = 'label_values(DCGM_FI_DEV_FB_FREE{Hostname=~"$Hostname"}, gpu)'


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    # Labels every series must carry: those of the panel's "by (...)" and legend that dcgm-exporter
    # sets on every GPU. Two panels also group by "uuid" (lower case), which no dcgm-exporter series
    # carries (its label is UUID), and some by GPU_I_ID / GPU_I_PROFILE, set on MIG instances only:
    # those group nothing here, as with dcgm-exporter on GPUs without MIG.
    labels: tuple[str, ...]
    # Hosts whose GPUs feed the panel: NVML's GPM (the two profiling panels) exists on Hopper and
    # later only, so the A100 host has none of those series, as with dcgm-exporter without DCP.
    hosts: tuple[str, ...] = ("h100-0000", "a100-0000")


PANELS = [
    Panel("GPU Temperature", f"max(DCGM_FI_DEV_GPU_TEMP{SEL}) by (Hostname, gpu, uuid)", ("Hostname", "gpu")),
    Panel("GPU Avg. Temp", f"avg(DCGM_FI_DEV_GPU_TEMP{SEL})", ()),
    Panel("GPU Power Usage", f"max(DCGM_FI_DEV_POWER_USAGE{SEL}) by (Hostname, gpu, uuid)",
          ("Hostname", "gpu")),
    Panel("GPU Power Total", f"sum(max(DCGM_FI_DEV_POWER_USAGE{SEL}) by (gpu))", ()),
    Panel("GPU SM Clocks", f"max(DCGM_FI_DEV_SM_CLOCK{SEL} * 1000000) by (Hostname, UUID, gpu)",
          ("Hostname", "UUID", "gpu")),
    Panel("GPU Framebuffer Mem Used",
          f"max(DCGM_FI_DEV_FB_USED{SEL}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)", ("Hostname", "gpu")),
    # DCGM profiling fields, fed from NVML's GPM (NVML_GPM_METRIC_GRAPHICS_UTIL, _ANY_TENSOR_UTIL).
    Panel("GPU Utilization",
          f"max(DCGM_FI_PROF_GR_ENGINE_ACTIVE{SEL}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)",
          ("Hostname", "gpu"), hosts=("h100-0000",)),
    Panel("Tensor Core Utilization",
          f"max(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{SEL}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)",
          ("Hostname", "gpu"), hosts=("h100-0000",)),
]

_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]])")


def all_value(values: list[str]) -> str:
    """What Grafana puts for an "All" multi-value variable in a =~ matcher: escaped values, alternated."""
    return "(" + "|".join(_REGEX_SPECIAL.sub(r"\\\\\1", v) for v in sorted(values)) + ")"


def fill(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


@dataclass
class Lab:
    url: str
    at: float  # every query is evaluated at this one instant: panels can be compared with each other
    gpus: dict[tuple[str, str], str]  # (Hostname, gpu) -> UUID, from the agents' own /v1/node


def api(url: str, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]


def instant(lab: Lab, promql: str) -> list[dict[str, Any]]:
    data = api(lab.url, "query", query=promql, time=f"{lab.at:.3f}")
    assert data["resultType"] == "vector", data
    return list(data["result"])


def label_values(lab: Lab, label: str, match: str) -> list[str]:
    """Grafana's ``label_values(match, label)`` variable query."""
    return list(api(lab.url, f"label/{label}/values", **{"match[]": match, "end": f"{lab.at:.3f}"}))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus (make system-deps)")
    work = tmp_path_factory.mktemp("dcgm")
    (work / "scenario.yaml").write_text(SCENARIO)
    base = free_port_block(4, *PORTS)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = []
        for i in range(3):
            d = work / f"agent{i}"
            d.mkdir()
            cfg = {"simulation": {"scenario": str(work / "scenario.yaml"), "host_index": i},
                   "interval_s": 2, "collector_timeout_s": 1.5, "port": base + i,
                   "listen_address": "127.0.0.1", "state_dir": str(d / "state")}
            (d / "config.yaml").write_text(yaml.safe_dump(cfg))
            with (d / "stderr").open("wb") as err:
                procs.append(subprocess.Popen([FLEET_AGENT, "run", "--config", str(d / "config.yaml")],
                                              stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                              cwd=d, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
            ports.append(base + i)
        prom_port = base + 3
        targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
        (work / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: fleet\n    static_configs: [{{targets: [{targets}]}}]\n")
        log = work / "prometheus.log"
        with log.open("wb") as out:
            procs.append(subprocess.Popen(
                [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                 f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                 "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{prom_port}"
        gpu_series = sum(GPU_HOSTS.values())
        deadline = time.monotonic() + 90
        while True:  # every agent scraped, every GPU's series in
            for p in procs:
                assert p.poll() is None, (p.args, (work / "prometheus.log").read_text(),
                                          [(work / f"agent{i}" / "stderr").read_text() for i in range(3)])
            try:
                now = time.time()
                probe = Lab(url, now, {})
                up = instant(probe, "up == 1")
                fb = instant(probe, "DCGM_FI_DEV_FB_FREE")
                gpm = instant(probe, "DCGM_FI_PROF_GR_ENGINE_ACTIVE")  # from an agent's second sample on
                if len(up) == 3 and len(fb) == gpu_series and len(gpm) == GPU_HOSTS["h100-0000"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Prometheus never scraped the agents:\n{log.read_text()}"
            time.sleep(0.5)
        gpus = {}
        for port in ports[:2]:
            node = http_get(port, "/v1/node").json()
            for chip in node["chips"]:
                gpus[(node["host"], str(chip["index"]))] = chip["uuid"]
        assert len(gpus) == gpu_series
        yield Lab(url, now, gpus)
    finally:
        for p in reversed(procs):
            _stop(p)


def dashboard_variables(lab: Lab) -> dict[str, str]:
    hosts = label_values(lab, "Hostname", "DCGM_FI_DEV_FB_FREE")
    gpus = label_values(lab, "gpu", fill('DCGM_FI_DEV_FB_FREE{Hostname=~"$Hostname"}',
                                          {"Hostname": all_value(hosts)}))
    return {"Hostname": all_value(hosts), "gpu": all_value(gpus)}


def test_variables_list_the_gpu_hosts_and_their_gpus(lab: Lab) -> None:
    hosts = label_values(lab, "Hostname", "DCGM_FI_DEV_FB_FREE")
    assert sorted(hosts) == sorted(GPU_HOSTS)  # the TPU host has no DCGM series
    gpus = label_values(lab, "gpu", fill('DCGM_FI_DEV_FB_FREE{Hostname=~"$Hostname"}',
                                          {"Hostname": all_value(hosts)}))
    assert sorted(gpus, key=int) == [str(i) for i in range(max(GPU_HOSTS.values()))]
    one = label_values(lab, "gpu", 'DCGM_FI_DEV_FB_FREE{Hostname=~"a100-0000"}')
    assert sorted(one, key=int) == ["0", "1", "2", "3"]


@pytest.mark.parametrize("panel", PANELS, ids=[p.title for p in PANELS])
def test_panel_shows_every_gpu_with_its_labels(lab: Lab, panel: Panel) -> None:
    result = instant(lab, fill(panel.expr, dashboard_variables(lab)))
    assert result, f"{panel.title}: no data for {panel.expr}"
    if not panel.labels:  # a single aggregate over every selected GPU
        assert len(result) == 1 and result[0]["metric"] == {}
        return
    keys = {tuple(s["metric"].get(k, "") for k in panel.labels) for s in result}
    assert len(keys) == len(result)  # one series per GPU, none merged
    gpus = {(host, gpu): uuid for (host, gpu), uuid in lab.gpus.items() if host in panel.hosts}
    if "UUID" in panel.labels:
        want = {(host, uuid, gpu) for (host, gpu), uuid in gpus.items()}
        assert keys == want
    else:
        assert keys == set(gpus)


def values(lab: Lab, title: str) -> dict[tuple[str, str], float]:
    panel = next(p for p in PANELS if p.title == title)
    result = instant(lab, fill(panel.expr, dashboard_variables(lab)))
    return {(s["metric"].get("Hostname", ""), s["metric"].get("gpu", "")): float(s["value"][1])
            for s in result}


def test_panel_values_are_in_the_panels_units_and_agree(lab: Lab) -> None:
    temps = values(lab, "GPU Temperature")
    assert all(15 <= t <= 110 for t in temps.values()), temps  # celsius
    [avg] = values(lab, "GPU Avg. Temp").values()
    assert avg == pytest.approx(sum(temps.values()) / len(temps))
    power = values(lab, "GPU Power Usage")
    assert all(5 <= w <= 1000 for w in power.values()), power  # watt
    # The total takes, per GPU index, the highest of the hosts' readings, then sums them.
    per_index: dict[str, float] = {}
    for (_, gpu), w in power.items():
        per_index[gpu] = max(per_index.get(gpu, 0.0), w)
    [total] = values(lab, "GPU Power Total").values()
    assert total == pytest.approx(sum(per_index.values()))
    clocks = values(lab, "GPU SM Clocks")
    assert all(100e6 <= hz <= 3e9 for hz in clocks.values()), clocks  # hertz (the panel scales MHz)
    used = values(lab, "GPU Framebuffer Mem Used")
    assert all(0 < mib <= 82000 for mib in used.values()), used  # decmbytes: MiB as dcgm-exporter gives
    busy = values(lab, "GPU Utilization")
    tensor = values(lab, "Tensor Core Utilization")
    assert all(0.05 <= r <= 1.0 for r in busy.values()), busy  # percentunit: a ratio, not percent
    assert all(0 < tensor[k] <= busy[k] for k in busy), (busy, tensor)  # tensor time is part of busy time


def test_choosing_one_host_narrows_every_panel(lab: Lab) -> None:
    variables = dashboard_variables(lab)
    variables["Hostname"] = all_value(["a100-0000"])
    for panel in PANELS:
        result = instant(lab, fill(panel.expr, variables))
        if "a100-0000" not in panel.hosts:
            assert result == [], panel.title
        elif panel.labels:
            assert {s["metric"]["Hostname"] for s in result} == {"a100-0000"}, panel.title
            assert len(result) == GPU_HOSTS["a100-0000"], panel.title
        else:
            assert len(result) == 1, panel.title

