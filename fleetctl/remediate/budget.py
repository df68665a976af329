"""Which eligible hosts may start a remediation now: max-unavailable per scope and the hourly cap.

Max-unavailable means what it means to ``fleetctl drain`` and ``maintain`` (fleetctl.state.hosts
.reserve): within a pool (here each value of a scope: the whole fleet for ``all``, each rack for
``rack``), a host counts as unavailable when it is out of service in fleetctl's records or its
scheduler's (the caller passes that set); ``N%`` is of the pool's size, rounded down, at least 1;
a start is allowed only while unavailable + started ≤ the limit. A host without a value for a scope
key (no rack) is under no rule of that key.

Hosts are taken oldest-unhealthy first, then by name; one that does not fit waits, with the rule
that stopped it (``budget rack=r07 2/2``, ``hourly cap 10/10``), and later ones may still fit
elsewhere (a full rack does not hold up another rack).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from fleetctl.remediate.flap import Started, in_window
from fleetctl.remediate.policy import SCOPE_ALL, BudgetRule
from fleetctl.report.model import HostRow

HOUR_S = 3600.0
# What group_value gives a host that has no value for a key.
NO_VALUE = "-"

Scopes = Mapping[str, Mapping[str, str]]  # host -> scope key -> its value there


def host_scopes(row: HostRow, keys: Iterable[str]) -> dict[str, str]:
    """``row``'s value for each scope key, as ``--group-by`` files it; keys it has no value for left out."""
    out = {}
    for key in keys:
        value = row.group_key(key)
        if value != NO_VALUE:
            out[key] = value
    return out


def scope_value(scopes: Scopes, host: str, key: str) -> str | None:
    """``host``'s value for ``key`` (``all`` for the fleet-wide scope), None when it has none."""
    if key == SCOPE_ALL:
        return SCOPE_ALL
    return scopes.get(host, {}).get(key)


def pools(scopes: Scopes, key: str) -> dict[str, list[str]]:
    """Each value of ``key`` -> the hosts that have it."""
    out: dict[str, list[str]] = {}
    for host in scopes:
        value = scope_value(scopes, host, key)
        if value is not None:
            out.setdefault(value, []).append(host)
    return out


def label(key: str, value: str) -> str:
    """How a scope value is named in a reason: ``all``, ``rack=r07``."""
    return SCOPE_ALL if key == SCOPE_ALL else f"{key}={value}"


@dataclass(frozen=True)
class Wait:
    host: str
    why: str


@dataclass(frozen=True)
class Choice:
    start: list[str]
    wait: list[Wait]


@dataclass
class _Pool:
    limit: int
    used: int


def choose(candidates: Sequence[str], *, scopes: Scopes, unavailable: Collection[str],
           rules: Sequence[BudgetRule], history: Iterable[Started], cap_per_hour: int,
           now: float) -> Choice:
    """Take ``candidates`` (already in order: oldest unhealthy first, then name) while the budgets
    allow; ``scopes`` holds every host of the fleet (the pools), ``unavailable`` those out of service
    now, ``history`` the remediations started so far (those within the last hour count to the cap)."""
    down = set(unavailable)
    state: dict[tuple[str, str], _Pool] = {}
    for rule in rules:
        for value, members in pools(scopes, rule.scope).items():
            state[(rule.scope, value)] = _Pool(rule.max.of(len(members)), len(down.intersection(members)))
    started = len(in_window(history, now, HOUR_S))
    start: list[str] = []
    wait: list[Wait] = []
    for host in candidates:
        if host not in scopes:
            raise ValueError(f"candidate {host!r} is not in the fleet's scopes")
        if started >= cap_per_hour:
            wait.append(Wait(host, f"hourly cap {started}/{cap_per_hour}"))
            continue
        mine = [(rule.scope, own) for rule in rules
                if (own := scope_value(scopes, host, rule.scope)) is not None]
        full = next((k for k in mine if state[k].used + 1 > state[k].limit), None)
        if full is not None:
            wait.append(Wait(host, f"budget {label(*full)} {state[full].used}/{state[full].limit}"))
            continue
        for k in mine:
            state[k].used += 1
        started += 1
        start.append(host)
    return Choice(start, wait)
