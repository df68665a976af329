"""Plays an NVML recording (:mod:`fleet_agent.collectors.nvml_record`) back as a ``pynvml`` stand-in.

The real collector runs on top of it, as it does on top of :class:`~fleet_agent.sim.fake_nvml.FakeNvml`:
what a real GPU answered once is parsed by the production code again, here, without the GPU
(``fleet-agent once --replay-nvml FILE``; the recorded fixtures under tests/fixtures/hw/).

A call is matched by its function and arguments. Answers recorded for the same call are given in
order, the last one again once they run out (a second sample sees the same chip). A call that was
never recorded answers NVML's "Not Supported", so a collector that learned a new field still runs
against an old recording (the field stays empty); :attr:`NvmlReplay.unmatched` lists such calls.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

from fleet_agent.collectors.nvml_record import FORMAT, Encoder

_NOT_SUPPORTED = 3


class RecordingError(ValueError):
    """The file is not a readable NVML recording (the message names the file and why)."""


class NVMLError(Exception):
    """pynvml's error: ``value`` is NVML's return code."""

    def __init__(self, value: int, message: str | None = None) -> None:
        super().__init__(value)
        self.value = value
        self._message = message or f"NVML Error with code {value}"

    def __str__(self) -> str:
        return self._message


class Handle:
    """A handle from the recording: only its token, so later calls on it can be matched."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"<replayed handle {self.token}>"


class _Struct:
    """An NVML structure from the recording, its fields as attributes."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


class NvmlReplay:
    """A ``pynvml`` stand-in answering from a recording."""

    def __init__(self, doc: dict[str, Any], source: str = "<recording>") -> None:
        self.NVMLError = NVMLError
        self.source = source
        self._constants: dict[str, Any] = dict(doc.get("constants") or {})
        self._absent = set(doc.get("absent") or ())
        self._handles: dict[str, Handle] = {}
        self._enc = Encoder()
        self._answers: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        self._functions: set[str] = set()
        for call in doc.get("calls") or ():
            key = (call["fn"], json.dumps(call["args"], sort_keys=True))
            self._answers.setdefault(key, deque()).append(call)
            self._functions.add(call["fn"])
        self.unmatched: list[str] = []

    @classmethod
    def load(cls, path: str | Path) -> NvmlReplay:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordingError(f"{path}: not a JSON NVML recording: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise RecordingError(f"{path}: format: expected {FORMAT!r}")
        if not isinstance(doc.get("calls"), list) or not all(
                isinstance(c, dict) and isinstance(c.get("fn"), str) and "args" in c for c in doc["calls"]):
            raise RecordingError(f"{path}: calls: expected a list of {{fn, args, result|error}}")
        return cls(doc, str(path))

    def install(self) -> None:
        """Stand in for ``pynvml`` in ``sys.modules``, where the collector's import finds it."""
        sys.modules["pynvml"] = self  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in self._absent:
            raise AttributeError(name)
        if name in self._constants:
            return self._constants[name]
        if name.startswith("nvml") and name[4:5].isupper():
            return lambda *args: self._call(name, args)
        raise AttributeError(f"{name} was not recorded")

    def _call(self, fn: str, args: tuple[Any, ...]) -> Any:
        key = (fn, json.dumps(self._enc.encode([self._arg(a) for a in args]), sort_keys=True))
        queue = self._answers.get(key)
        if not queue:
            self.unmatched.append(f"{fn}{key[1]}")
            raise NVMLError(_NOT_SUPPORTED, "Not Supported")
        call = queue.popleft() if len(queue) > 1 else queue[0]
        if "error" in call:
            raise NVMLError(int(call["error"]), call.get("message"))
        return self._decode(call.get("result"))

    def _arg(self, value: Any) -> Any:
        return {"$h": value.token} if isinstance(value, Handle) else value

    def _decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$h" in value:
            token = value["$h"]
            return self._handles.setdefault(token, Handle(token))
        if "$b" in value:
            return str(value["$b"]).encode("latin-1")
        if "$s" in value:
            return _Struct({k: self._decode(v) for k, v in value["$s"].items()})
        if "$r" in value:
            return value["$r"]
        return {k: self._decode(v) for k, v in value.items()}
