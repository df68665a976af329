"""The remediation policy: a YAML file mapping each problem action to a remediation, with the
hysteresis, flap damping, budgets and fleet-wide stop that bound automatic action.

:func:`parse_policy` checks every field and refuses anything it does not know with one line that
names the file and the field path (``policy.yaml: actions.reboot.steps[2]: unknown step "rebot"
(did you mean reboot?)``), so a typo never falls back to a default silently. The shipped default is
``default-policy.yaml`` beside this module (:func:`default_policy`). docs/remediation.md is the
reference.

An action this fleetctl does not know (a newer agent's) maps to :data:`REPORT`: no automatic
action, the host is reported. So does a known action the file leaves out.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from fleet_agent.schema import Action
from fleet_agent.verdict import HostHealth

from fleetctl.errors import UsageError
from fleetctl.validation import Size

POLICY_VERSION = 1
DEFAULT_POLICY = "default-policy.yaml"

# Repair steps, in the order a remediation may use them; drain and undrain bracket the others.
STEPS = ("drain", "reset_gpu", "reboot", "reprovision", "burn_in", "undrain")
# The heavier a step, the more a remediation that uses it disrupts (see Remediation.weight).
_STEP_WEIGHT = {"reset_gpu": 1, "reboot": 2, "reprovision": 3}
TERMINALS = ("quarantine", "rma")
# Pseudo-actions for hosts without a report: the agent did not answer, or what answered was not one.
NO_REPORT_ACTIONS = (HostHealth.UNREACHABLE.value, HostHealth.ERROR.value)
KNOWN_ACTIONS: tuple[str, ...] = tuple(a.value for a in Action) + NO_REPORT_ACTIONS
# Host states that may count as unhealthy (act_on); healthy never does.
ACT_ON_STATES: tuple[str, ...] = tuple(h.value for h in HostHealth if h is not HostHealth.HEALTHY)
SCOPE_ALL = "all"


class PolicyError(UsageError):
    """The policy file is not valid: one line naming the file and the field (exit 2)."""


class Kind(enum.StrEnum):
    """What a remediation does: nothing but report, repair and return, or take the host out."""

    REPORT = "report"
    REPAIR = "repair"
    QUARANTINE = "quarantine"
    RMA = "rma"


_KIND_WEIGHT = {Kind.REPORT: 0, Kind.REPAIR: 1, Kind.QUARANTINE: 2, Kind.RMA: 3}


@dataclass(frozen=True)
class Hysteresis:
    """Act only after ``count`` consecutive unhealthy observations spanning at least ``span_s``."""

    count: int = 3
    span_s: float = 120.0


@dataclass(frozen=True)
class Remediation:
    """What one action maps to. A terminal remediation drains and marks the host (quarantine, rma);
    ``hysteresis`` overrides the policy's for this action."""

    kind: Kind
    steps: tuple[str, ...] = ()
    hysteresis: Hysteresis | None = None

    @property
    def acts(self) -> bool:
        return self.kind is not Kind.REPORT

    @property
    def weight(self) -> tuple[int, int]:
        """Heavier is more disruptive: a host with several problems gets its heaviest remediation."""
        return _KIND_WEIGHT[self.kind], max((_STEP_WEIGHT.get(s, 0) for s in self.steps), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "steps": list(self.steps)}


REPORT = Remediation(Kind.REPORT)


@dataclass(frozen=True)
class FlapDamping:
    """A host that already had ``max_remediations`` started within ``window_s`` is quarantined
    instead of repaired again."""

    max_remediations: int = 3
    window_s: float = 86400.0


@dataclass(frozen=True)
class BudgetRule:
    """At most ``max`` hosts unavailable per value of ``scope`` (``all``, or a group key such as
    ``rack`` as ``--group-by`` reads it), counted as ``fleetctl drain --max-unavailable`` counts."""

    scope: str
    max: Size


@dataclass(frozen=True)
class StopRule:
    """Stop automatic action in a scope value where at least ``fraction`` of the hosts, and at least
    ``min_hosts`` of them, are unhealthy at once."""

    scope: str
    fraction: float
    min_hosts: int = 2


@dataclass(frozen=True)
class Policy:
    source: str
    act_on: frozenset[str] = frozenset({HostHealth.UNHEALTHY.value, HostHealth.UNREACHABLE.value})
    hysteresis: Hysteresis = Hysteresis()
    flap: FlapDamping = FlapDamping()
    max_unavailable: tuple[BudgetRule, ...] = (BudgetRule(SCOPE_ALL, Size(1)),)
    max_starts_per_hour: int = 10
    stops: tuple[StopRule, ...] = (StopRule(SCOPE_ALL, 0.33),)
    actions: Mapping[str, Remediation] = field(default_factory=dict)

    def remediation(self, action: str) -> Remediation:
        """The remediation for ``action``; :data:`REPORT` for one the file leaves out or this
        fleetctl does not know (never an error: a newer agent may send it)."""
        return self.actions.get(action, REPORT)

    def hysteresis_for(self, remediation: Remediation) -> Hysteresis:
        return remediation.hysteresis or self.hysteresis

    def scope_keys(self) -> list[str]:
        """The group keys the budgets and stops use (``all`` left out), each once."""
        keys = [r.scope for r in self.max_unavailable] + [r.scope for r in self.stops]
        return [k for k in dict.fromkeys(keys) if k != SCOPE_ALL]


# --- loading ------------------------------------------------------------------------------------


def default_policy() -> Policy:
    """The shipped policy (``default-policy.yaml`` beside this module)."""
    text = resources.files(__package__).joinpath(DEFAULT_POLICY).read_text(encoding="utf-8")
    return parse_policy(text, DEFAULT_POLICY)


def load_policy(path: Path) -> Policy:
    """The policy in ``path``; a :class:`PolicyError` naming it when it cannot be read or is not valid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"{path}: cannot read the policy file: {reason}") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str) -> Policy:
    """A :class:`Policy` from YAML ``text``; ``source`` names the file in every error."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PolicyError(f"{source}: {where}not valid YAML: {problem}") from None
    return _Reader(source).policy(doc)


class _Reader:
    """Walks the document; every error goes through :meth:`fail` with its field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> PolicyError:
        return PolicyError(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def mapping(self, value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str) or key not in known:
                raise self.fail(_join(path, str(key)), f"unknown key{_hint(str(key), known)}")
        return value

    def number(self, value: Any, path: str, *, low: float, high: float = math.inf,
               low_open: bool = False, integer: bool = False) -> float:
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise self.fail(path, f"expected {'an integer' if integer else 'a number'}, got {_shown(value)}")
        if value < low or (low_open and value == low) or value > high:
            lower = f"> {low:g}" if low_open else f">= {low:g}"
            upper = f" and <= {high:g}" if math.isfinite(high) else ""
            raise self.fail(path, f"{_shown(value)} is out of range: expected {lower}{upper}")
        return float(value)

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a name, got {_shown(value)}")
        return value

    def policy(self, doc: Any) -> Policy:
        if doc is None:
            raise self.fail("", "empty policy file")
        doc = self.mapping(doc, "", ("version", "act_on", "hysteresis", "flap_damping", "budgets",
                                     "fleet_stop", "actions"))
        version = doc.get("version", POLICY_VERSION)
        if version != POLICY_VERSION:
            raise self.fail("version", f"{_shown(version)} is not supported (this fleetctl reads "
                                       f"version {POLICY_VERSION})")
        base = Policy(self.source)
        budgets = self.mapping(doc.get("budgets", {}), "budgets", ("max_unavailable", "max_starts_per_hour"))
        return Policy(
            source=self.source,
            act_on=self.act_on(doc["act_on"]) if "act_on" in doc else base.act_on,
            hysteresis=self.hysteresis(doc["hysteresis"], "hysteresis") if "hysteresis" in doc
            else base.hysteresis,
            flap=self.flap(doc["flap_damping"]) if "flap_damping" in doc else base.flap,
            max_unavailable=self.budget_rules(budgets["max_unavailable"]) if "max_unavailable" in budgets
            else base.max_unavailable,
            max_starts_per_hour=int(self.number(budgets["max_starts_per_hour"],
                                                "budgets.max_starts_per_hour", low=1, integer=True))
            if "max_starts_per_hour" in budgets else base.max_starts_per_hour,
            stops=self.stop_rules(doc["fleet_stop"]) if "fleet_stop" in doc else base.stops,
            actions=self.actions(doc.get("actions", {})),
        )

    def act_on(self, value: Any) -> frozenset[str]:
        if not isinstance(value, list) or not value:
            raise self.fail("act_on", f"expected a list of host states, got {_shown(value)}")
        for i, state in enumerate(value):
            if state == HostHealth.HEALTHY.value:
                raise self.fail(f"act_on[{i}]", "healthy hosts are never acted on")
            if state not in ACT_ON_STATES:
                raise self.fail(f"act_on[{i}]", f"{_quoted(state)} is not a host state to act on"
                                                f"{_hint(str(state), ACT_ON_STATES)}; expected some of "
                                                f"{', '.join(ACT_ON_STATES)}")
        return frozenset(value)

    def hysteresis(self, value: Any, path: str) -> Hysteresis:
        doc = self.mapping(value, path, ("count", "span_s"))
        base = Hysteresis()
        count = (self.number(doc["count"], f"{path}.count", low=1, integer=True) if "count" in doc
                 else base.count)
        span = self.number(doc["span_s"], f"{path}.span_s", low=0) if "span_s" in doc else base.span_s
        return Hysteresis(int(count), span)

    def flap(self, value: Any) -> FlapDamping:
        doc = self.mapping(value, "flap_damping", ("max_remediations", "window_s"))
        base = FlapDamping()
        most = (self.number(doc["max_remediations"], "flap_damping.max_remediations", low=1, integer=True)
                if "max_remediations" in doc else base.max_remediations)
        window = (self.number(doc["window_s"], "flap_damping.window_s", low=0, low_open=True)
                  if "window_s" in doc else base.window_s)
        return FlapDamping(int(most), window)

    def rules(self, value: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
        """``(path of the item, item)`` for a non-empty list of mappings with a ``scope`` each,
        no scope twice."""
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a list of rules, got {_shown(value)}")
        seen: set[str] = set()
        out = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if not isinstance(item, dict) or "scope" not in item:
                raise self.fail(where, "expected a mapping with a scope (all, or a group key such as rack)")
            scope = self.name(item["scope"], f"{where}.scope")
            if scope in seen:
                raise self.fail(f"{where}.scope", f"{_quoted(scope)} given twice")
            seen.add(scope)
            out.append((where, item))
        return out

    def budget_rules(self, value: Any) -> tuple[BudgetRule, ...]:
        out = []
        for where, item in self.rules(value, "budgets.max_unavailable"):
            self.mapping(item, where, ("scope", "max"))
            if "max" not in item:
                raise self.fail(where, "missing max (N hosts or N%)")
            raw = item["max"]
            text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else None
            try:
                size = Size.parse(text, "max") if text is not None else None
            except UsageError:
                size = None
            if size is None:
                raise self.fail(f"{where}.max", f"{_shown(raw)}: expected a number of hosts N >= 1 or a "
                                                "percentage 1%..100%")
            out.append(BudgetRule(item["scope"], size))
        return tuple(out)

    def stop_rules(self, value: Any) -> tuple[StopRule, ...]:
        out = []
        for where, item in self.rules(value, "fleet_stop"):
            self.mapping(item, where, ("scope", "fraction", "min_hosts"))
            if "fraction" not in item:
                raise self.fail(where, "missing fraction (of the hosts unhealthy at once, e.g. 0.33)")
            fraction = self.number(item["fraction"], f"{where}.fraction", low=0, high=1, low_open=True)
            least = (self.number(item["min_hosts"], f"{where}.min_hosts", low=1, integer=True)
                     if "min_hosts" in item else StopRule("", 0).min_hosts)
            out.append(StopRule(item["scope"], fraction, int(least)))
        return tuple(out)

    def actions(self, value: Any) -> dict[str, Remediation]:
        if not isinstance(value, dict):
            raise self.fail("actions", f"expected a mapping of action to remediation, got {_kind(value)}")
        out = {}
        for action, entry in value.items():
            if not isinstance(action, str) or action not in KNOWN_ACTIONS:
                raise self.fail(f"actions.{action}", f"unknown action{_hint(str(action), KNOWN_ACTIONS)}")
            out[action] = self.remediation(entry, f"actions.{action}")
        return out

    def remediation(self, value: Any, path: str) -> Remediation:
        doc = self.mapping(value, path, ("steps", "terminal", "report", "hysteresis"))
        forms = [k for k in ("steps", "terminal", "report") if k in doc]
        if len(forms) != 1:
            raise self.fail(path, "expected exactly one of steps, terminal, report" +
                            (f" (got {', '.join(forms)})" if forms else ""))
        own = self.hysteresis(doc["hysteresis"], f"{path}.hysteresis") if "hysteresis" in doc else None
        if "report" in doc:
            if doc["report"] is not True:
                raise self.fail(f"{path}.report", f"expected true, got {_shown(doc['report'])}")
            return Remediation(Kind.REPORT, (), own)
        if "terminal" in doc:
            terminal = doc["terminal"]
            if terminal not in TERMINALS:
                raise self.fail(f"{path}.terminal", f"unknown terminal {_quoted(terminal)}"
                                                    f"{_hint(str(terminal), TERMINALS)}")
            return Remediation(Kind(terminal), ("drain", terminal), own)
        return Remediation(Kind.REPAIR, self.steps(doc["steps"], f"{path}.steps"), own)

    def steps(self, value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a list of steps, got {_shown(value)}")
        for i, step in enumerate(value):
            where = f"{path}[{i}]"
            if step not in STEPS:
                extra = " (a terminal: use terminal: instead of steps:)" if step in TERMINALS else ""
                raise self.fail(where, f"unknown step {_quoted(step)}{_hint(str(step), STEPS) or extra}")
            if step in value[:i]:
                raise self.fail(where, f"step {_quoted(step)} given twice")
        # The safety rules: no repair on a host that still runs work, none back to work untested.
        if value[0] != "drain":
            raise self.fail(f"{path}[0]", "the first step must be drain: no repair while the host runs work")
        repairs = [i for i, s in enumerate(value) if s in _STEP_WEIGHT]
        if not repairs:
            raise self.fail(path, f"no repair step ({', '.join(_STEP_WEIGHT)}); for none, use "
                                  "terminal: quarantine or report: true")
        if "burn_in" in value and value.index("burn_in") < repairs[-1]:
            at = value.index("burn_in")
            raise self.fail(f"{path}[{at}]", f"burn_in before {value[repairs[-1]]}: burn-in tests the "
                                             "repaired host, so it comes after every repair step")
        if "undrain" in value:
            at = value.index("undrain")
            if at != len(value) - 1:
                raise self.fail(f"{path}[{at}]", "undrain must be the last step")
            if "burn_in" not in value:
                raise self.fail(f"{path}[{at}]", "undrain without burn_in before it: a repaired host goes "
                                                 "back to work only after burn-in")
        return tuple(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _hint(value: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _quoted(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else _shown(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__)
