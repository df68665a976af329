"""Scenario files: a simulated fleet (host groups, chip models, load) and the faults aimed at it.

A scenario is validated strictly on load: an unknown key or a bad value raises
:class:`ScenarioError` naming the file and the key path (``faults[2].code``), so a typo never
silently turns a fault off. Group sizes are given as ``count`` or ``share``; shares split whatever
the fleet size is (``hosts`` in the file, or ``load_scenario(..., hosts=N)``), so one file serves
the 64-host demo and a 10,000-host benchmark. Faults aim at hosts by index within their group
(``hosts: [3]``) or by stride (``every: 48``, ``offset: 5``) — a stride keeps its share of the
fleet when the fleet grows.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from fleet_agent.sim.fake_nvml import DEVICE_FUNCTIONS, ERROR_NAMES
from fleet_agent.sim.host import HostSim
from fleet_agent.sim.models import GPU_MODELS, TPU_MODELS
from fleet_agent.sim.resets import ResetLog
from fleet_agent.sim.specs import (
    FAULT_KINDS,
    FAULT_PARAMS,
    PER_CHIP_KINDS,
    TIMING_KEYS,
    Clock,
    FaultSpec,
    GroupSpec,
    Load,
    ScenarioError,
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")

class _Reader:
    """Typed access to a YAML mapping that reports ``file: key.path: problem``."""

    def __init__(self, path: str, doc: Any, where: str) -> None:
        self.path = path
        self.where = where
        if not isinstance(doc, dict):
            self.fail(where or "(top level)", "expected a mapping")
        self.doc: dict[str, Any] = doc

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ScenarioError(f"{self.path}: {key}: {problem}")

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def only(self, allowed: set[str] | frozenset[str]) -> None:
        for k in self.doc:
            if k not in allowed:
                self.fail(self.key(str(k)), f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def has(self, name: str) -> bool:
        return name in self.doc

    def get_int(self, name: str, default: int | None = None, *, lo: int | None = None,
            hi: int | None = None, required: bool = False) -> int | None:
        if name not in self.doc:
            if required:
                self.fail(self.key(name), "missing")
            return default
        v = self.doc[name]
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(self.key(name), f"expected an integer, got {v!r}")
        self._range(name, v, lo, hi)
        return int(v)

    def get_num(self, name: str, default: float | None = None, *, lo: float | None = None,
            hi: float | None = None, positive: bool = False) -> float | None:
        if name not in self.doc:
            return default
        v = self.doc[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            self.fail(self.key(name), f"expected a number, got {v!r}")
        if positive and v <= 0:
            self.fail(self.key(name), f"must be > 0, got {v!r}")
        self._range(name, v, lo, hi)
        return float(v)

    def get_str(self, name: str, default: str | None = None, *, required: bool = False,
            choices: Mapping[str, Any] | tuple[str, ...] | None = None) -> str | None:
        if name not in self.doc:
            if required:
                self.fail(self.key(name), "missing")
            return default
        v = self.doc[name]
        if not isinstance(v, str) or not v:
            self.fail(self.key(name), f"expected a non-empty string, got {v!r}")
        if choices is not None and v not in choices:
            self.fail(self.key(name), f"{v!r} is not one of {', '.join(choices)}")
        return str(v)

    def get_bool(self, name: str, default: bool) -> bool:
        if name not in self.doc:
            return default
        v = self.doc[name]
        if not isinstance(v, bool):
            self.fail(self.key(name), f"expected true or false, got {v!r}")
        return bool(v)

    def int_list(self, name: str, *, lo: int = 0, hi: int | None = None) -> tuple[int, ...] | None:
        if name not in self.doc:
            return None
        v = self.doc[name]
        if not isinstance(v, list) or not v:
            self.fail(self.key(name), f"expected a non-empty list of integers, got {v!r}")
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, int):
                self.fail(f"{self.key(name)}[{i}]", f"expected an integer, got {item!r}")
            if item < lo or (hi is not None and item > hi):
                bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                self.fail(f"{self.key(name)}[{i}]", f"{item} is out of range ({bound})")
        return tuple(v)

    def _range(self, name: str, v: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and v < lo:
            self.fail(self.key(name), f"{v!r} is below the minimum {lo}")
        if hi is not None and v > hi:
            self.fail(self.key(name), f"{v!r} is above the maximum {hi}")


def _group(path: str, doc: Any, where: str) -> GroupSpec:
    r = _Reader(path, doc, where)
    r.only({"name", "count", "share", "kind", "model", "chips", "load", "driver_version",
            "runtime_metrics"})
    name = r.get_str("name", required=True)
    assert name is not None
    if not _NAME_RE.match(name):
        r.fail(r.key("name"), f"{name!r} must be lower-case letters, digits and '-'")
    kind = r.get_str("kind", required=True, choices=("gpu", "tpu"))
    models: Mapping[str, Any] = GPU_MODELS if kind == "gpu" else TPU_MODELS
    model = r.get_str("model", required=True, choices=models)
    chips = r.get_int("chips", 8, lo=1, hi=16)
    if r.has("count") == r.has("share"):
        r.fail(where, "give exactly one of count or share")
    count = r.get_int("count", lo=0)
    share = r.get_num("share", positive=True)
    load = Load()
    if r.has("load"):
        lr = _Reader(path, r.doc["load"], r.key("load"))
        lr.only({"base_pct", "amplitude_pct", "period_s", "memory_used_pct"})
        load = Load(
            base_pct=lr.get_num("base_pct", load.base_pct, lo=0, hi=100) or 0.0,
            amplitude_pct=lr.get_num("amplitude_pct", load.amplitude_pct, lo=0, hi=100) or 0.0,
            period_s=lr.get_num("period_s", load.period_s, positive=True) or load.period_s,
            memory_used_pct=lr.get_num("memory_used_pct", load.memory_used_pct, lo=0, hi=100) or 0.0,
        )
    if kind == "tpu" and r.has("driver_version"):
        r.fail(r.key("driver_version"), "only for gpu groups")
    if kind == "gpu" and r.has("runtime_metrics"):
        r.fail(r.key("runtime_metrics"), "only for tpu groups")
    return GroupSpec(
        name=name, kind=kind or "gpu", model=model or "", chips=chips or 1, count=count,
        share=share, load=load,
        driver_version=r.get_str("driver_version", "535.183.06") or "",
        runtime_metrics=r.get_bool("runtime_metrics", True),
    )


def _fault(path: str, doc: Any, where: str, groups: dict[str, GroupSpec]) -> FaultSpec:
    r = _Reader(path, doc, where)
    kind = r.get_str("kind", required=True, choices=FAULT_KINDS)
    assert kind is not None
    chip_kinds, per_chip, params = FAULT_PARAMS[kind]
    r.only({"kind", "group", "hosts", "every", "offset", "chips"} | TIMING_KEYS | params)
    gname = r.get_str("group", required=True, choices=tuple(groups))
    assert gname is not None
    group = groups[gname]
    if group.kind not in chip_kinds:
        r.fail(r.key("kind"), f"{kind} does not apply to {group.kind} group {gname!r}")
    if r.has("hosts") == r.has("every"):
        r.fail(where, "give exactly one of hosts or every")
    hosts = r.int_list("hosts")
    every = r.get_int("every", lo=1)
    offset = r.get_int("offset", 0, lo=0) or 0
    if r.has("offset") and every is None:
        r.fail(r.key("offset"), "only together with every")
    if every is not None and offset >= every:
        r.fail(r.key("offset"), f"must be below every ({every})")
    chips: tuple[int, ...] | None = None
    if per_chip:
        raw = r.doc.get("chips")
        if raw == "all":
            chips = None
        elif raw is None:
            r.fail(r.key("chips"), "missing (a list of chip indices, or 'all')")
        else:
            chips = r.int_list("chips", hi=group.chips - 1)
    elif r.has("chips"):
        r.fail(r.key("chips"), f"{kind} is a host-level fault; it takes no chips")
    at = r.get_num("at", 0.0, lo=0) or 0.0
    until = r.get_num("until", positive=True)
    if until is not None and until <= at:
        r.fail(r.key("until"), f"must be after at ({at:g}), got {until:g}")
    repeat_every = r.get_num("repeat_every", positive=True)
    for_s = r.get_num("for_s", positive=True)
    reset_override = r.get_bool("reset_clears", True) if r.has("reset_clears") else None
    boot = r.get_str("boot")
    if repeat_every is not None and for_s is not None and for_s >= repeat_every:
        r.fail(r.key("for_s"), f"must be below repeat_every ({repeat_every:g}), or the fault never goes off")

    p: dict[str, Any] = {}
    if kind == "xid":
        p["code"] = r.get_int("code", lo=1, hi=1023, required=True)
        p["count"] = r.get_int("count", 1, lo=1)
        p["interval_s"] = r.get_num("interval_s", 60.0, positive=True)
    elif kind == "ecc_uncorrectable":
        p["count"] = r.get_int("count", 1, lo=1)
    elif kind == "thermal_throttle":
        p["temperature_c"] = r.get_num("temperature_c", lo=0, hi=130)
    elif kind == "pcie_downgrade":
        if not (r.has("gen") or r.has("width")):
            r.fail(where, "pcie_downgrade needs gen or width (or both)")
        p["gen"] = r.get_int("gen", lo=1, hi=6)
        p["width"] = r.get_int("width", lo=1, hi=32)
    elif kind == "nvlink_down":
        nvlinks = GPU_MODELS[group.model].nvlinks
        if nvlinks == 0:
            r.fail(r.key("kind"), f"model {group.model} has no NVLink")
        links = r.int_list("links", hi=nvlinks - 1)
        if links is None:
            r.fail(r.key("links"), "missing")
        p["links"] = links
    elif kind == "hang":
        p["seconds"] = r.get_num("seconds", positive=True)
    elif kind in ("not_supported", "nvml_error"):
        if kind == "nvml_error":
            p["error"] = r.get_str("error", required=True, choices=ERROR_NAMES)

        fns = r.doc.get("functions")
        if not isinstance(fns, list) or not fns or not all(isinstance(f, str) for f in fns):
            r.fail(r.key("functions"), f"expected a non-empty list of NVML function names, got {fns!r}")
        for i, f in enumerate(fns):
            if f not in DEVICE_FUNCTIONS:
                r.fail(f"{r.key('functions')}[{i}]", f"{f!r} is not an NVML device function the "
                       "simulation implements")
        p["functions"] = frozenset(fns)
    return FaultSpec(kind=kind, group=gname, hosts=hosts, every=every, offset=offset, chips=chips,
                     at=at, params=p, where=where, until=until, repeat_every=repeat_every, for_s=for_s,
                     reset_override=reset_override, boot=boot)


def _split(total: int, groups: list[GroupSpec], path: str) -> list[int]:
    """Host count per group: fixed counts first, the rest by share (largest remainder)."""
    fixed = sum(g.count or 0 for g in groups if g.count is not None)
    shares = [(i, g.share) for i, g in enumerate(groups) if g.share is not None]
    counts = [g.count or 0 for g in groups]
    if not shares:
        if total != fixed:
            raise ScenarioError(f"{path}: hosts: {total} hosts asked, but the groups have fixed "
                                f"counts adding up to {fixed}; use share to let groups scale")
        return counts
    rest = total - fixed
    if rest < 0:
        raise ScenarioError(f"{path}: hosts: {total} is fewer than the fixed counts ({fixed})")
    weight = sum(s for _, s in shares)
    exact = [(i, rest * s / weight) for i, s in shares]
    for i, x in exact:
        counts[i] = int(x)
    left = rest - sum(int(x) for _, x in exact)
    for i, _ in sorted(exact, key=lambda e: (int(e[1]) - e[1], e[0]))[:left]:
        counts[i] += 1
    return counts


def parse_scenario(doc: Any, path: str = "<scenario>", *, hosts: int | None = None,
                   clock: Clock | None = None) -> Scenario:
    """Validate a decoded YAML document and build a :class:`Scenario`."""
    r = _Reader(path, doc, "")
    r.only({"description", "seed", "hosts", "groups", "faults"})
    r.get_str("description")
    seed = r.get_int("seed", 0, lo=0) or 0
    file_hosts = r.get_int("hosts", lo=1)
    raw_groups = r.doc.get("groups")
    if not isinstance(raw_groups, list) or not raw_groups:
        r.fail("groups", "expected a non-empty list of host groups")
    groups: dict[str, GroupSpec] = {}
    for i, g in enumerate(raw_groups):
        spec = _group(path, g, f"groups[{i}]")
        if spec.name in groups:
            r.fail(f"groups[{i}].name", f"duplicate group name {spec.name!r}")
        groups[spec.name] = spec
    raw_faults = r.doc.get("faults", [])
    if not isinstance(raw_faults, list):
        r.fail("faults", "expected a list")
    faults = tuple(_fault(path, f, f"faults[{i}]", groups) for i, f in enumerate(raw_faults))
    glist = list(groups.values())
    if hosts is not None and hosts < 1:
        raise ScenarioError(f"{path}: hosts: must be at least 1, got {hosts}")
    total = hosts or file_hosts or sum(g.count or 0 for g in glist)
    if total < 1:
        r.fail("hosts", "missing (needed when groups are given by share)")
    counts = _split(total, glist, path)
    return Scenario(path=path, seed=seed, groups=tuple(glist), counts=tuple(counts), faults=faults,
                    clock=clock or time.monotonic)


def load_scenario(path: str | Path, *, hosts: int | None = None,
                  clock: Clock | None = None) -> Scenario:
    """Read and validate a scenario file; ``hosts`` overrides the fleet size (groups scale by share)."""
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScenarioError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    return parse_scenario(doc, p, hosts=hosts, clock=clock)


def builtin_scenario(name: str) -> Path:
    """The path of a scenario shipped with the agent (``demo``, ``healthy``, ``faults``)."""
    path = Path(__file__).resolve().parent.parent / "scenarios" / f"{name}.yaml"
    if not path.is_file():
        raise ScenarioError(f"{name}: no such built-in scenario")
    return path


@dataclass(frozen=True)
class _Slot:
    group: GroupSpec
    index_in_group: int
    width: int


class Scenario:
    """A validated fleet. ``host(i)`` builds host ``i`` on first use (cheap; nothing per chip runs)."""

    def __init__(self, *, path: str, seed: int, groups: tuple[GroupSpec, ...], counts: tuple[int, ...],
                 faults: tuple[FaultSpec, ...], clock: Clock, start: float | None = None,
                 resets: ResetLog | None = None) -> None:
        self.path = path
        self.seed = seed
        self.groups = groups
        self.counts = counts
        self.faults = faults
        self.clock = clock
        # Fault times (``at``) count from here: now, or the start another process recorded (the
        # sim fleet's, for its stand-ins).
        self.start = clock() if start is None else start
        # GPU resets the chips honour (a fault that a reset clears ends then); None: no resets.
        self.resets = resets
        self._faults_by_group = {g.name: [f for f in faults if f.group == g.name] for g in groups}
        self._hosts: dict[int, HostSim] = {}
        self._hosts_lock = threading.Lock()  # sim-fleet asks for hosts from many threads

    def __len__(self) -> int:
        return sum(self.counts)

    def with_hosts(self, hosts: int) -> Scenario:
        """The same scenario over a fleet of ``hosts`` hosts (groups given by share scale)."""
        return Scenario(path=self.path, seed=self.seed, groups=self.groups,
                        counts=tuple(_split(hosts, list(self.groups), self.path)),
                        faults=self.faults, clock=self.clock, start=self.start, resets=self.resets)

    def sharing(self, resets: ResetLog | None, *, start: float | None = None,
                clock: Clock | None = None) -> Scenario:
        """The same fleet whose chips honour ``resets``, its clock and start shared with the process
        that recorded them (``start``: the sim fleet's; default this scenario's)."""
        return Scenario(path=self.path, seed=self.seed, groups=self.groups, counts=self.counts,
                        faults=self.faults, clock=clock or self.clock,
                        start=self.start if start is None else start, resets=resets)

    def _slot(self, i: int) -> _Slot:
        if not 0 <= i < len(self):
            raise IndexError(f"host {i} is outside this fleet of {len(self)} hosts")
        for g, n in zip(self.groups, self.counts, strict=True):
            if i < n:
                return _Slot(g, i, max(4, len(str(n - 1))))
            i -= n
        raise AssertionError("unreachable")

    def host(self, i: int) -> HostSim:
        h = self._hosts.get(i)
        if h is not None:
            return h
        with self._hosts_lock:
            h = self._hosts.get(i)
            if h is not None:
                return h
            s = self._slot(i)
            faults = [f for f in self._faults_by_group[s.group.name] if f.applies_to_host(s.index_in_group)]
            name = f"{s.group.name}-{s.index_in_group:0{s.width}d}"
            h = HostSim(seed=self.seed, clock=self.clock, start=self.start, index=i, group=s.group,
                        index_in_group=s.index_in_group, name=name, faults=faults,
                        reset_at=self.resets.lookup(name) if self.resets is not None else None)
            self._hosts[i] = h
        return h

    def hosts(self) -> list[HostSim]:
        return [self.host(i) for i in range(len(self))]


__all__ = ["FAULT_KINDS", "PER_CHIP_KINDS", "FaultSpec", "GroupSpec", "Load", "Scenario", "ScenarioError",
           "builtin_scenario", "load_scenario", "parse_scenario"]
