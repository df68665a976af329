"""``dcgmi diag -r <level> -j`` output as typed results: per test, per GPU, and one verdict.

DCGM has printed two layouts (docs/burn-in.md says where each fact comes from):

- 2.x/3.x: the top key ``"DCGM GPU Diagnostic"``; a result names its GPU as ``"gpu_ids"`` (an
  index as a string, a comma-separated list for the deployment checks, or a number), or names none;
  ``"version"`` and ``"Driver Version Detected"`` sit beside ``"test_categories"``;
- 4.x: the top key ``"DCGM Diagnostic"``; a result names an entity (``"entity_group": "GPU"``,
  ``"entity_id"``), each test carries a ``"test_summary"``, and ``"metadata"`` holds the versions.

Both spell statuses ``Pass``/``Fail``/``Warn``/``Skip`` (older NVVS output: upper case, ``SKIPPED``),
attach warnings as objects (``warning``, ``error_id``, ``error_category``, ``error_severity``) or
plain strings, and replace the results by ``"runtime_error"`` when the diagnostic could not run.

Nothing here passes silently: a status the parser does not know is ``unknown``, a piece it cannot
read becomes a note and makes the verdict ``unknown``, and output that is no diagnostic at all (the
error line dcgmi prints instead, broken JSON, another layout) is a :class:`DiagParseError` of one
line naming the host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fleetctl.views.text import visible

MAX_CHARS = 16 * 1024 * 1024  # a level-4 run on 8 GPUs prints well under 1 MB
LAYOUT_3 = "DCGM GPU Diagnostic"
LAYOUT_4 = "DCGM Diagnostic"
_SNIPPET = 200  # characters of outside text an error line quotes


class DiagParseError(ValueError):
    """Output that is not a DCGM diagnostic result; the message is one line naming the host."""


class Status(str, Enum):
    PASS = "pass"  # noqa: S105 - a status word
    SKIP = "skip"
    WARN = "warn"
    UNKNOWN = "unknown"
    FAIL = "fail"


_RANK = {Status.PASS: 0, Status.SKIP: 1, Status.WARN: 2, Status.UNKNOWN: 3, Status.FAIL: 4}
_WORDS = {
    "pass": Status.PASS, "passed": Status.PASS,
    "fail": Status.FAIL, "failed": Status.FAIL,
    "warn": Status.WARN, "warning": Status.WARN,
    "skip": Status.SKIP, "skipped": Status.SKIP,
}


def worst(statuses: Iterable[Status]) -> Status | None:
    """The worst of ``statuses`` (fail > unknown > warn > skip > pass); None for none."""
    found = list(statuses)
    return max(found, key=_RANK.__getitem__) if found else None


def status_of(raw: object) -> Status:
    """DCGM's status word as a :class:`Status`; anything else is ``unknown``, never a pass."""
    if not isinstance(raw, str):
        return Status.UNKNOWN
    return _WORDS.get(raw.strip().lower(), Status.UNKNOWN)


# The 2.x/3.x deployment checks are the parts of what 4.x reports as one "software" test.
_SOFTWARE_CHECKS = frozenset({
    "software", "denylist", "blacklist", "nvml library", "cuda main library", "cuda toolkit library",
    "cuda toolkit libraries", "permissions and os blocks", "permissions and os-related blocks",
    "persistence mode", "environment variables", "environmental variables", "page retirement/row remap",
    "page retirement", "graphics processes", "inforom",
})
_ALIASES = {
    "gpu memory": "memory", "sm stress": "sm_stress", "targeted stress": "targeted_stress",
    "targeted power": "targeted_power", "memory bandwidth": "memory_bandwidth", "pulse test": "pulse_test",
    "eud test": "eud", "cpu eud test": "cpu_eud", "context create": "context_create",
}


def plugin_key(name: str) -> str:
    """One key per test whatever the DCGM version calls it: ``GPU Memory`` and ``memory`` are
    ``memory``, ``Targeted Stress`` is ``targeted_stress``, every deployment check is ``software``."""
    low = " ".join(name.lower().split())
    if low in _SOFTWARE_CHECKS:
        return "software"
    if low in _ALIASES:
        return _ALIASES[low]
    return re.sub(r"[^a-z0-9]+", "_", low).strip("_") or "unnamed"


@dataclass(frozen=True)
class DiagMessage:
    """A warning DCGM attached to a result, with its DCGM_FR_* code, category and severity if given."""

    text: str
    error_id: int | None = None
    category: int | None = None
    severity: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "error_id": self.error_id, "category": self.category,
                "severity": self.severity}


@dataclass(frozen=True)
class EntityResult:
    """One result of one test: for a GPU (``entity_group`` "GPU"), another entity (4.x: "CPU"),
    several GPUs (2.x/3.x deployment checks), or the whole host (``entity_group`` None)."""

    status: Status
    raw_status: str
    entity_group: str | None
    entity_ids: tuple[int, ...] = ()
    warnings: tuple[DiagMessage, ...] = ()
    info: tuple[str, ...] = ()

    @property
    def gpus(self) -> tuple[int, ...]:
        return self.entity_ids if self.entity_group == "GPU" else ()

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "raw_status": self.raw_status,
                "entity_group": self.entity_group, "entity_ids": list(self.entity_ids),
                "warnings": [w.to_dict() for w in self.warnings], "info": list(self.info)}


@dataclass(frozen=True)
class TestResult:
    """One test (plugin) of the run, as DCGM named it, with its key and category."""

    __test__ = False  # not a pytest class, whatever its name

    name: str
    key: str
    category: str
    results: tuple[EntityResult, ...]
    summary: Status | None = None  # 4.x test_summary
    summary_warnings: tuple[DiagMessage, ...] = ()

    @property
    def status(self) -> Status:
        found = worst([r.status for r in self.results] + ([self.summary] if self.summary else []))
        return found if found is not None else Status.UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "category": self.category, "status": self.status.value,
                "summary": self.summary.value if self.summary else None,
                "summary_warnings": [w.to_dict() for w in self.summary_warnings],
                "results": [r.to_dict() for r in self.results]}


@dataclass(frozen=True)
class Finding:
    """A test result that is not a pass: what ``fleetctl`` shows and records per host."""

    test: str
    gpu: int | None  # None: the whole host, or another entity
    status: Status
    messages: tuple[DiagMessage, ...]

    def line(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "host"
        text = "; ".join(m.text for m in self.messages)
        return f"{self.test} {where}: {self.status.value}" + (f" ({text})" if text else "")


@dataclass(frozen=True)
class DiagReport:
    """One ``dcgmi diag -j`` answer. :attr:`status` is the verdict; :attr:`notes` list what could
    not be read (each makes the verdict ``unknown`` unless something failed outright)."""

    host: str
    layout: str  # "2.x/3.x" or "4.x"
    version: str | None
    driver_version: str | None
    tests: tuple[TestResult, ...]
    runtime_error: str | None = None
    gpus: tuple[int, ...] = ()  # the GPUs DCGM listed (4.x entity_groups, 3.x "GPU Device IDs")
    notes: tuple[str, ...] = field(default=())
    extra_text: tuple[str, ...] = ()  # lines dcgmi printed around the JSON document (not judged)

    @property
    def status(self) -> Status:
        statuses = [t.status for t in self.tests]
        if Status.FAIL in statuses:
            return Status.FAIL
        if self.runtime_error or self.notes or not statuses or Status.UNKNOWN in statuses:
            return Status.UNKNOWN
        if Status.PASS not in statuses:  # every test skipped: nothing was checked
            return Status.UNKNOWN
        return Status.WARN if Status.WARN in statuses else Status.PASS

    @property
    def gpus_tested(self) -> frozenset[int]:
        return frozenset(g for t in self.tests for r in t.results for g in r.gpus)

    def per_gpu(self) -> dict[int, dict[str, Status]]:
        """GPU index -> test key -> the worst status that test gave that GPU."""
        table: dict[int, dict[str, Status]] = {}
        for test in self.tests:
            for result in test.results:
                for gpu in result.gpus:
                    row = table.setdefault(gpu, {})
                    row[test.key] = worst([row.get(test.key, result.status), result.status]) or result.status
        return table

    def findings(self) -> list[Finding]:
        """Every result that is not a pass or a skip, in DCGM's order."""
        found: list[Finding] = []
        for test in self.tests:
            for result in test.results:
                if result.status in (Status.PASS, Status.SKIP):
                    continue
                targets: tuple[int | None, ...] = result.gpus or (None,)
                found.extend(Finding(test.key, gpu, result.status, result.warnings) for gpu in targets)
            if test.summary not in (None, Status.PASS, Status.SKIP) and not any(
                    r.status not in (Status.PASS, Status.SKIP) for r in test.results):
                assert test.summary is not None
                found.append(Finding(test.key, None, test.summary, test.summary_warnings))
        return found

    def reason(self) -> str:
        """One line: why the verdict is what it is."""
        if self.runtime_error:
            return f"diagnostic could not run: {visible(self.runtime_error, limit=_SNIPPET)}"
        bad = self.findings()
        if bad:
            return "; ".join(visible(f.line(), limit=_SNIPPET) for f in bad[:8]) + (
                f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
        if self.notes:
            return "; ".join(self.notes[:4])
        if not self.tests:
            return "no test results"
        if self.status is Status.UNKNOWN:
            return "every test was skipped"
        n = len(self.tests)
        return "the one test passed" if n == 1 else f"{n} tests passed"

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "version": self.version, "driver_version": self.driver_version,
                "status": self.status.value, "runtime_error": self.runtime_error, "gpus": list(self.gpus),
                "notes": list(self.notes), "extra_text": list(self.extra_text),
                "tests": [t.to_dict() for t in self.tests]}


def parse_diag(text: str | bytes, *, host: str = "-") -> DiagReport:
    """Parse what ``dcgmi diag -j`` printed on ``host``.

    Raises :class:`DiagParseError` (one line naming ``host``) when the output holds no diagnostic
    result: dcgmi's own error line, broken JSON, or a layout this parser does not know.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    who = visible(host, limit=64) or "-"
    if len(text) > MAX_CHARS:
        raise DiagParseError(f"{who}: dcgmi output is {len(text)} characters, over the {MAX_CHARS} read")
    start = text.find("{")
    if start < 0:
        said = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if not said:
            raise DiagParseError(f"{who}: dcgmi printed nothing")
        raise DiagParseError(f"{who}: dcgmi printed no JSON: {visible(said, limit=_SNIPPET)}")
    # dcgmi may print a line before the document (DCGM's own tests strip it): kept, not judged.
    extra = [visible(line.strip(), limit=_SNIPPET) for line in text[:start].splitlines() if line.strip()]
    try:
        doc, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise DiagParseError(f"{who}: dcgmi output is not valid JSON: {visible(str(exc), limit=_SNIPPET)}"
                             ) from None
    extra += [visible(line.strip(), limit=_SNIPPET) for line in text[end:].splitlines() if line.strip()]
    if not isinstance(doc, dict):
        raise DiagParseError(f"{who}: dcgmi output is JSON but not an object ({type(doc).__name__})")
    return _report(doc, who, tuple(extra[:8]))


def _report(doc: dict[str, Any], who: str, extra: tuple[str, ...]) -> DiagReport:
    if LAYOUT_4 in doc:
        layout, root = "4.x", doc[LAYOUT_4]
    elif LAYOUT_3 in doc:
        layout, root = "2.x/3.x", doc[LAYOUT_3]
    elif "iterations" in doc:
        raise DiagParseError(f"{who}: dcgmi output holds several iterations (--iterations); run one")
    else:
        keys = ", ".join(visible(k, limit=40) for k in list(doc)[:6]) or "none"
        raise DiagParseError(f"{who}: not a DCGM diagnostic result (top-level keys: {keys})")
    if not isinstance(root, dict):
        raise DiagParseError(f"{who}: {layout} result: expected an object under the top key")
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    # 4.x: under "metadata"; dcgmi 3.x: beside the top key; NVVS and dcgmi's error output: inside it.
    version = _first_text("version", meta, doc, root)
    driver = _first_text("Driver Version Detected", meta, doc, root)
    runtime_error = _text(root.get("runtime_error"))
    notes: list[str] = []
    tests = _tests(root.get("test_categories"), notes, runtime_error is not None)
    return DiagReport(host=who, layout=layout, version=version, driver_version=driver, tests=tuple(tests),
                      runtime_error=runtime_error, gpus=_gpus(doc, root), notes=tuple(notes),
                      extra_text=extra)


def _tests(categories: object, notes: list[str], errored: bool) -> list[TestResult]:
    if categories is None:
        if not errored:
            notes.append("no test_categories in the result")
        return []
    if not isinstance(categories, list):
        notes.append(f"test_categories: expected a list, got {type(categories).__name__}")
        return []
    tests: list[TestResult] = []
    for ci, cat in enumerate(categories):
        if not isinstance(cat, dict):
            notes.append(f"test_categories[{ci}]: expected an object")
            continue
        category = _text(cat.get("category")) or "?"
        entries = cat.get("tests")
        if not isinstance(entries, list):
            notes.append(f"test_categories[{ci}] ({visible(category, limit=40)}): no list of tests")
            continue
        for ti, entry in enumerate(entries):
            if entry is None:  # real 3.1 output has nulls between tests
                continue
            where = f"test_categories[{ci}].tests[{ti}]"
            if not isinstance(entry, dict) or not _text(entry.get("name")):
                notes.append(f"{where}: a test without a name")
                continue
            tests.append(_test(entry, category, where, notes))
    return tests


def _test(entry: dict[str, Any], category: str, where: str, notes: list[str]) -> TestResult:
    name = _text(entry.get("name")) or "?"
    results: list[EntityResult] = []
    raw = entry.get("results")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        notes.append(f"{where} ({visible(name, limit=40)}): results is not a list")
        raw = []
    for ri, item in enumerate(raw):
        if not isinstance(item, dict):
            notes.append(f"{where}.results[{ri}] ({visible(name, limit=40)}): expected an object")
            continue
        results.append(_result(item, f"{where}.results[{ri}]", notes))
    summary: Status | None = None
    summary_warnings: tuple[DiagMessage, ...] = ()
    raw_summary = entry.get("test_summary")
    if isinstance(raw_summary, dict):
        summary = status_of(raw_summary.get("status"))
        summary_warnings = _warnings(raw_summary.get("warnings"), f"{where}.test_summary", notes)
    elif raw_summary is not None:
        notes.append(f"{where}.test_summary: expected an object")
    if not results and summary is None:
        notes.append(f"{where} ({visible(name, limit=40)}): no results")
    return TestResult(name=name, key=plugin_key(name), category=category, results=tuple(results),
                      summary=summary, summary_warnings=summary_warnings)


def _result(item: dict[str, Any], where: str, notes: list[str]) -> EntityResult:
    raw_status = item.get("status")
    status = status_of(raw_status)
    group: str | None = None
    ids: tuple[int, ...] = ()
    if "entity_group" in item or "entity_id" in item:
        group = _text(item.get("entity_group")) or ("GPU" if item.get("entity_group_id") == 1 else "?")
        eid = item.get("entity_id")
        if isinstance(eid, int) and _is_int(eid):
            ids = (eid,)
        else:
            notes.append(f"{where}: entity_id {visible(repr(eid), limit=40)} is not a number")
    elif "gpu_ids" in item or "gpu_id" in item:
        group = "GPU"
        value = item.get("gpu_ids", item.get("gpu_id"))
        parsed = _gpu_ids(value)
        if parsed is None:
            notes.append(f"{where}: gpu_ids {visible(repr(value), limit=40)} is not a GPU list")
        else:
            ids = parsed
    shown = visible(raw_status, limit=40) if raw_status is not None else ""
    return EntityResult(status=status, raw_status=shown, entity_group=group, entity_ids=ids,
                        warnings=_warnings(item.get("warnings"), where, notes), info=_info(item.get("info")))


def _gpu_ids(value: object) -> tuple[int, ...] | None:
    if isinstance(value, int) and _is_int(value):
        return (value,)
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):
            return tuple(int(p) for p in parts)
    return None


def _warnings(value: object, where: str, notes: list[str]) -> tuple[DiagMessage, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    found: list[DiagMessage] = []
    for item in items:
        if isinstance(item, str):
            found.append(DiagMessage(item))
        elif isinstance(item, dict):
            # 3.x deployment checks spell the text "warnings" (dcgmi's Diag.cpp), the others "warning".
            text = _text(item.get("warning")) or _text(item.get("warnings")) or _text(item.get("message"))
            found.append(DiagMessage(text or "(no text)", _int(item.get("error_id")),
                                     _int(item.get("error_category")), _int(item.get("error_severity"))))
        elif item is not None:
            notes.append(f"{where}: a warning that is neither text nor an object")
    return tuple(found)


def _info(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _gpus(doc: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[int, ...]:
    groups = doc.get("entity_groups")
    if isinstance(groups, list):
        for group in groups:
            if isinstance(group, dict) and group.get("entity_group") == "GPU":
                ents = group.get("entities")
                if isinstance(ents, list):
                    return tuple(sorted(int(e["entity_id"]) for e in ents
                                        if isinstance(e, dict) and _is_int(e.get("entity_id"))))
    dev_ids = doc.get("GPU Device IDs", root.get("GPU Device IDs"))
    if isinstance(dev_ids, list):
        return tuple(range(len(dev_ids)))
    return ()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_text(key: str, *where: Mapping[str, Any]) -> str | None:
    return next((t for t in (_text(m.get(key)) for m in where) if t), None)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
