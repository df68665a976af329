"""A recording of every NVML call the collector makes: arguments, answer or error, and latency.

``fleet-agent once --record-nvml FILE`` puts :class:`NvmlRecorder` in front of the real ``pynvml``
module, so what a real GPU answered can travel as a file: attached to a bug report, kept as a test
fixture and played back through the real collector by :mod:`fleet_agent.sim.nvml_replay` (which
reads the same format), and its latencies read as the cost of each NVML call on that host.

Answers are kept as JSON: numbers and text as they are, bytes as ``{"$b": text}``, NVML's
structures (ctypes or plain objects) as ``{"$s": {field: value}}``, and device and event-set handles
as ``{"$h": "h0"}``, a token per handle, so that a later call on the same handle can be matched.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from fleet_agent.atomic import write_atomic
from fleet_agent.collectors.xid import handle_key

FORMAT = "fleet-agent.nvml-recording/v1"

# Functions whose answer is a handle that later calls pass back.
HANDLE_MAKERS = frozenset({
    "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetHandleByPciBusId", "nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleBySerial",
    "nvmlEventSetCreate", "nvmlGpmSampleAlloc",
})
_ARRAY_KEPT = 16  # of a long ctypes array (GPM's 477 metric slots), the first entries are recorded
_PRIMITIVE = (bool, int, float, str, type(None))


class Encoder:
    """Turns NVML's answers into JSON values, naming each handle it has seen once."""

    def __init__(self) -> None:
        self.tokens: dict[int, str] = {}
        self._alive: list[Any] = []  # handles stay referenced, so their ids are never reused

    def new_handle(self, handle: Any) -> dict[str, str]:
        key = handle_key(handle)
        token = self.tokens.get(key)
        if token is None:
            token = self.tokens[key] = f"h{len(self.tokens)}"
            self._alive.append(handle)
        return {"$h": token}

    def encode(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, _PRIMITIVE):
            return value
        if depth > 8:
            return {"$r": repr(value)[:200]}
        if isinstance(value, bytes):
            return {"$b": value.decode("latin-1")}
        if isinstance(value, ctypes.Array) and len(value) > _ARRAY_KEPT:
            kept = [self.encode(v, depth + 1) for v in value[:_ARRAY_KEPT]]
            return [*kept, {"$more": len(value) - _ARRAY_KEPT}]
        if isinstance(value, (list, tuple, ctypes.Array)):
            return [self.encode(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): self.encode(v, depth + 1) for k, v in value.items()}
        token = self.tokens.get(handle_key(value))
        if token is not None:
            return {"$h": token}
        fields = _fields(value)
        if fields is not None:
            return {"$s": {name: self.encode(v, depth + 1) for name, v in fields.items()}}
        return {"$r": repr(value)[:200]}


def _fields(value: Any) -> dict[str, Any] | None:
    """The fields of an NVML structure: a ctypes Structure/Union, or a plain object in fakes."""
    if isinstance(value, (ctypes.Structure, ctypes.Union)):
        return {f[0]: getattr(value, f[0]) for f in value._fields_}
    names: list[str] = []
    for cls in type(value).__mro__:
        names.extend(s for s in getattr(cls, "__slots__", ()) if not s.startswith("_"))
    out = {n: getattr(value, n) for n in names if hasattr(value, n)}
    out.update({k: v for k, v in getattr(value, "__dict__", {}).items() if not k.startswith("_")})
    return out or None


class NvmlRecorder:
    """Stands in for the ``pynvml`` module: every function call goes to ``real`` and is recorded."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._lock = threading.Lock()
        self._enc = Encoder()
        self.calls: list[dict[str, Any]] = []
        self.constants: dict[str, Any] = {}
        self.absent: set[str] = set()
        self.NVMLError = real.NVMLError

    @classmethod
    def install(cls) -> NvmlRecorder:
        """Import the real ``pynvml`` and put a recorder in its place in ``sys.modules``, where
        the collector's ``import pynvml`` finds it. ImportError when nvidia-ml-py is missing."""
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]

        recorder = cls(pynvml)
        sys.modules["pynvml"] = recorder  # type: ignore[assignment]
        return recorder

    def __getattr__(self, name: str) -> Any:
        try:
            value = getattr(self._real, name)
        except AttributeError:
            with self._lock:
                self.absent.add(name)
            raise
        if callable(value) and not isinstance(value, type):
            return self._wrap(name, value)
        if isinstance(value, _PRIMITIVE):
            with self._lock:
                self.constants[name] = value
        return value

    def _wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                result = func(*args)
            except self.NVMLError as exc:
                self._note(name, args, started, error=int(getattr(exc, "value", -1)), message=str(exc))
                raise
            self._note(name, args, started, result=result)
            return result
        return call

    def _note(self, name: str, args: tuple[Any, ...], started: float, **outcome: Any) -> None:
        ms = (time.perf_counter() - started) * 1000.0
        with self._lock:
            entry: dict[str, Any] = {"fn": name, "args": self._enc.encode(list(args))}
            if "result" in outcome:
                result = outcome["result"]
                entry["result"] = (self._enc.new_handle(result) if name in HANDLE_MAKERS
                                   else self._enc.encode(result))
            else:
                entry["error"], entry["message"] = outcome["error"], outcome["message"]
            entry["ms"] = round(ms, 4)
            self.calls.append(entry)

    def document(self) -> dict[str, Any]:
        with self._lock:
            return {
                "format": FORMAT,
                "recorded_at": time.time(),
                "pynvml_version": getattr(self._real, "__version__", None),
                "constants": dict(sorted(self.constants.items())),
                "absent": sorted(self.absent),
                "calls": list(self.calls),
            }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the recording atomically (a temporary file renamed over ``path``)."""
        # 0644: a fixture or a bug-report attachment, no secrets in it
        write_atomic(path, json.dumps(self.document(), indent=1) + "\n", mode=0o644)
