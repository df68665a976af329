"""Each host's place in its life, who moved it there and why, and the hooks the verbs call.

    new → burn_in → in_service ⇄ suspect → repairing → burn_in | in_service
    suspect | repairing | in_service → quarantined → rma → burn_in (returned) | retired

(docs/lifecycle.md has the whole diagram and who moves a host where.) This is not the drain state
of :mod:`fleetctl.state.hosts`, which says what fleetctl is doing to a host right now; the
lifecycle says what the host is for. A drain moves both, each in its own table.

A host with no row is ``new``, or ``in_service`` when a provision run recorded here succeeded on
it (a fleet that had fleetctl before lifecycles existed does not show every host as new): such a
state is *implied*; the first transition writes it down.

Transitions are written inside one writing transaction with an audit row (who as ``user@machine``,
why, when, from → to, the source: a person, drain, undrain, provision, maintain, burn_in). A person's
transition that the table below does not allow is refused with one line naming both states, unless
``force``. The verbs' hooks (``on_*``) never force and never fail their verb: each names the states
it moves a host from, and a host in any other state (retired, rma, one a newer fleetctl wrote) is
left as it is. A state this fleetctl does not know is kept as written and shown; only ``force``
replaces it.

The audit rows live in ``lifecycle_audit``, not in ``host_audit``: readers of ``host_audit``
(``status --history``, an older fleetctl reading this file) take its states for drain states.
"""

from __future__ import annotations

import difflib
import enum
import json
import socket
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fleetctl.errors import StateConflict, UsageError
from fleetctl.state.db import Connection, Row, transaction

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS host_lifecycle (
        host        TEXT PRIMARY KEY,
        state       TEXT NOT NULL,
        reason      TEXT,
        actor       TEXT NOT NULL,     -- user@machine
        since       REAL NOT NULL,
        source      TEXT NOT NULL      -- person, drain, undrain, provision, maintain
    )""",
    """CREATE TABLE IF NOT EXISTS lifecycle_audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        host        TEXT NOT NULL,
        at          REAL NOT NULL,
        actor       TEXT NOT NULL,
        from_state  TEXT NOT NULL,
        to_state    TEXT NOT NULL,
        reason      TEXT,
        source      TEXT NOT NULL,
        forced      INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS lifecycle_audit_host ON lifecycle_audit (host, id)",
    # The last agent verdict fleetctl saw for a host (undrain's check, maintain's verify).
    """CREATE TABLE IF NOT EXISTS host_health (
        host        TEXT PRIMARY KEY,
        healthy     INTEGER NOT NULL,
        detail      TEXT,
        at          REAL NOT NULL,
        source      TEXT NOT NULL
    )""",
)


class LifeState(enum.StrEnum):
    NEW = "new"
    BURN_IN = "burn_in"
    IN_SERVICE = "in_service"
    SUSPECT = "suspect"
    REPAIRING = "repairing"
    QUARANTINED = "quarantined"
    RMA = "rma"
    RETIRED = "retired"
    UNKNOWN = "unknown"  # written by a newer fleetctl; LifeRecord.stored holds the text


L = LifeState
ALLOWED: dict[LifeState, frozenset[LifeState]] = {
    L.NEW: frozenset({L.BURN_IN, L.IN_SERVICE, L.SUSPECT, L.QUARANTINED, L.RETIRED}),
    L.BURN_IN: frozenset({L.IN_SERVICE, L.SUSPECT, L.REPAIRING, L.QUARANTINED, L.RETIRED}),
    L.IN_SERVICE: frozenset({L.SUSPECT, L.REPAIRING, L.QUARANTINED, L.RETIRED}),
    L.SUSPECT: frozenset({L.IN_SERVICE, L.REPAIRING, L.BURN_IN, L.QUARANTINED}),
    L.REPAIRING: frozenset({L.BURN_IN, L.IN_SERVICE, L.SUSPECT, L.QUARANTINED}),
    L.QUARANTINED: frozenset({L.REPAIRING, L.RMA, L.RETIRED}),
    L.RMA: frozenset({L.BURN_IN, L.RETIRED}),  # a board back from the vendor is burned in again
    L.RETIRED: frozenset(),
    L.UNKNOWN: frozenset(),
}
KNOWN = tuple(s.value for s in LifeState if s is not L.UNKNOWN)
_BY_VALUE = {s.value: s for s in LifeState if s is not L.UNKNOWN}


class LifecycleError(StateConflict):
    """A transition the lifecycle does not allow (exit 1: refused)."""


@dataclass(frozen=True)
class LifeRecord:
    host: str
    state: LifeState
    reason: str | None = None
    actor: str | None = None
    since: float | None = None
    source: str | None = None
    stored: str | None = None  # the text of a state this fleetctl does not know
    implied: bool = False  # no row: derived (new, or in_service from a successful provision run)

    @property
    def label(self) -> str:
        return self.stored if self.state is L.UNKNOWN and self.stored else self.state.value

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "state": self.label, "reason": self.reason, "actor": self.actor,
                "since": self.since, "source": self.source, "implied": self.implied,
                "known": self.state is not L.UNKNOWN}


@dataclass(frozen=True)
class LifeEntry:
    host: str
    at: float
    actor: str
    from_state: str
    to_state: str
    reason: str | None
    source: str
    forced: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Health:
    host: str
    healthy: bool
    detail: str | None
    at: float
    source: str

    @property
    def label(self) -> str:
        return "healthy" if self.healthy else f"unfit: {self.detail or '?'}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HostRun:
    """One provision run that touched a host, with the host's result in it."""

    run_id: str
    status: str
    playbook: str
    user: str
    started_at: str
    ended_at: str | None
    result: str  # the host's: ok, changed, failed, unreachable, pending

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def who(user: str) -> str:
    """``user@machine``: a team's audit log names the bastion too."""
    return user if "@" in user else f"{user}@{socket.gethostname()}"


def parse_state(text: str) -> LifeState:
    """A state a person typed; a usage error with the closest name otherwise."""
    value = text.strip().lower().replace("-", "_")
    if value in _BY_VALUE:
        return _BY_VALUE[value]
    close = difflib.get_close_matches(value, KNOWN, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UsageError(f"STATE {text!r}: not a lifecycle state; {hint}expected one of {', '.join(KNOWN)}")


def _record(row: Row) -> LifeRecord:
    raw = str(row["state"])
    state = _BY_VALUE.get(raw, L.UNKNOWN)
    return LifeRecord(row["host"], state, row["reason"], row["actor"], row["since"], row["source"],
                      stored=raw if state is L.UNKNOWN else None)


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):  # stay under SQLite's bound-parameter limit
        yield items[i:i + size]


def _provisioned(conn: Connection, hosts: Sequence[str], *,
                 exclude_run: str | None = None) -> dict[str, tuple[str, str | None]]:
    """Hosts with a provision run here that succeeded on them: host -> (run id, ended at) of the last
    such run (``exclude_run`` left out)."""
    found: dict[str, tuple[str, str | None]] = {}
    for chunk in _chunks(hosts):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT h.host, h.result, r.id, r.ended_at, r.options FROM provision_run_hosts h "  # noqa: S608
            f"JOIN provision_runs r ON r.id = h.run_id WHERE h.host IN ({marks}) "
            "AND r.status IN ('successful', 'failed') ORDER BY r.started_at", list(chunk)).fetchall()
        for row in rows:
            if row["id"] == exclude_run:
                continue
            if _host_result(row["result"]) in ("ok", "changed") and _whole_run(row["options"]):
                found[row["host"]] = (row["id"], row["ended_at"])
    return found


def _whole_run(options: str) -> bool:
    """A run that did the whole playbook for real: not --check, no --tags/--skip-tags, and not one of
    fleetctl's internal runs (maintain's reboot, a remediation's repair playbook)."""
    try:
        o = json.loads(options)
    except ValueError:
        return False
    return (isinstance(o, dict) and not o.get("check") and not o.get("tags") and not o.get("skip_tags")
            and not o.get("internal"))


def _host_result(text: str) -> str:
    from fleetctl.runner import HostResult

    try:
        return HostResult.from_dict(json.loads(text)).state
    except (ValueError, TypeError, KeyError):
        return "?"


def _implied(host: str, provisioned: Mapping[str, tuple[str, str | None]]) -> LifeRecord:
    if host in provisioned:
        run_id, _ = provisioned[host]
        return LifeRecord(host, L.IN_SERVICE, f"provisioned by run {run_id}", None, None, "provision",
                          implied=True)
    return LifeRecord(host, L.NEW, None, None, None, None, implied=True)


def get_many(conn: Connection, hosts: Iterable[str]) -> dict[str, LifeRecord]:
    wanted = list(dict.fromkeys(hosts))
    found: dict[str, LifeRecord] = {}
    for chunk in _chunks(wanted):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM host_lifecycle WHERE host IN ({marks})", list(chunk)):  # noqa: S608
            found[row["host"]] = _record(row)
    missing = [h for h in wanted if h not in found]
    provisioned = _provisioned(conn, missing) if missing else {}
    return {h: found.get(h) or _implied(h, provisioned) for h in wanted}


def get(conn: Connection, host: str) -> LifeRecord:
    return get_many(conn, [host])[host]


def _write(conn: Connection, current: LifeRecord, to: LifeState, *, actor: str, reason: str | None,
           source: str, forced: bool) -> None:
    now = time.time()
    conn.execute(
        """INSERT INTO host_lifecycle (host, state, reason, actor, since, source) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (host) DO UPDATE SET state = excluded.state, reason = excluded.reason,
               actor = excluded.actor, since = excluded.since, source = excluded.source""",
        (current.host, to.value, reason, actor, now, source))
    conn.execute(
        "INSERT INTO lifecycle_audit (host, at, actor, from_state, to_state, reason, source, forced) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (current.host, now, actor, current.label, to.value, reason, source, int(forced)))


def set_state(conn: Connection, host: str, to: LifeState, *, actor: str, reason: str,
              force: bool = False, source: str = "person") -> LifeRecord:
    """A person's transition (``fleetctl hosts set``). Returns the record as it was before."""
    if to is L.UNKNOWN:
        raise UsageError(f"STATE: expected one of {', '.join(KNOWN)}")
    with transaction(conn):
        current = get(conn, host)
        if current.state is L.UNKNOWN and not force:
            raise LifecycleError(f"{host}: lifecycle state {current.label!r} is unknown to this fleetctl "
                                 f"(a newer fleetctl wrote it): --force to set {to} anyway")
        allowed = ALLOWED[current.state]
        if to is not current.state and to not in allowed and not force:
            options = ", ".join(sorted(allowed)) or "none"
            raise LifecycleError(f"{host}: cannot go from {current.label} to {to} (from {current.label}: "
                                 f"{options}); --force to override")
        _write(conn, current, to, actor=who(actor), reason=reason, source=source,
               forced=force and to is not current.state and to not in allowed)
    return current


def advance(conn: Connection, host: str, to: LifeState, *, frm: Collection[LifeState], actor: str,
            reason: str | None, source: str) -> bool:
    """A verb's move: only from the states in ``frm``, else nothing. Whether it moved."""
    with transaction(conn):
        current = get(conn, host)
        if current.state not in frm or current.state is to:
            return False
        _write(conn, current, to, actor=who(actor), reason=reason, source=source, forced=False)
    return True


# --- the hooks the verbs call: every automatic move of a host is here --------------------------

# A person's drain of a burning-in host is how burn-in jobs are run, not a repair: it stays burn_in
# (undrain then must not take it to in_service without the burn-in passing).
_WORKING = frozenset({L.IN_SERVICE, L.SUSPECT})


def on_drain(conn: Connection, host: str, *, actor: str, reason: str, run_id: str | None) -> bool:
    """A person's drain (``fleetctl drain``) takes a working host to ``repairing``; a maintain run's
    drain (``run_id``) is planned work on a healthy host and moves nothing."""
    if run_id is not None:
        return False
    return advance(conn, host, L.REPAIRING, frm=_WORKING, actor=actor, reason=reason, source="drain")


def on_undrain(conn: Connection, host: str, *, actor: str, reason: str) -> bool:
    """Back in service after the agent said it is fit (or a person forced it): suspect or repairing
    hosts are ``in_service`` again."""
    return advance(conn, host, L.IN_SERVICE, frm={L.SUSPECT, L.REPAIRING}, actor=actor, reason=reason,
                   source="undrain")


def on_provision_result(conn: Connection, run_id: str, results: Mapping[str, str], *,
                        actor: str, playbook: str, partial: bool = False) -> None:
    """Per host of a finished run (host -> ok/changed/failed/unreachable/pending): a success of a whole
    run (no ``--tags``/``--skip-tags``: ``partial``) takes a ``new`` host to ``in_service``; a failure
    makes a working host ``suspect``; pending moves nothing. Check-mode runs are not reported here."""
    for host, result in results.items():
        if result in ("ok", "changed") and not partial:
            _provisioned_in_service(conn, host, run_id, actor=actor, playbook=playbook)
        elif result in ("failed", "unreachable"):
            advance(conn, host, L.SUSPECT, frm={L.IN_SERVICE, L.BURN_IN}, actor=actor,
                    reason=f"provision run {run_id} ({playbook}): {result}", source="provision")


def _provisioned_in_service(conn: Connection, host: str, run_id: str, *, actor: str, playbook: str) -> None:
    """new -> in_service, audited. The run is recorded before this hook runs, so a host with no row
    already *reads* in_service (implied by this very run): it was new unless an earlier run succeeded
    on it, and that move is written down rather than left implied."""
    reason = f"provisioned by run {run_id} ({playbook})"
    with transaction(conn):
        current = get(conn, host)
        if current.implied:
            if _provisioned(conn, [host], exclude_run=run_id):
                return  # in service since an earlier run: nothing moved now
            current = LifeRecord(host, L.NEW, None, None, None, None, implied=True)
        if current.state is not L.NEW:
            return
        _write(conn, current, L.IN_SERVICE, actor=who(actor), reason=reason, source="provision", forced=False)


def on_maintain_result(conn: Connection, host: str, *, ok: bool, actor: str, run_id: str,
                       why: str | None = None) -> bool:
    """Maintained and verified: suspect, repairing and new hosts are ``in_service``. Quarantined by
    maintain (provision or verify failed): a working host is ``suspect``."""
    if ok:
        return advance(conn, host, L.IN_SERVICE, frm={L.NEW, L.SUSPECT, L.REPAIRING}, actor=actor,
                       reason=f"maintain {run_id}: verified healthy", source="maintain")
    return advance(conn, host, L.SUSPECT, frm={L.IN_SERVICE, L.BURN_IN, L.REPAIRING}, actor=actor,
                   reason=f"maintain {run_id}: {why or 'failed'}", source="maintain")


def on_burn_in_start(conn: Connection, host: str, *, actor: str, run_id: str, level: int) -> bool:
    """``fleetctl burn-in`` starts its checks: new, repairing, suspect and rma hosts are ``burn_in``
    (an in-service host is checked where it stands)."""
    return advance(conn, host, L.BURN_IN, frm={L.NEW, L.REPAIRING, L.SUSPECT, L.RMA}, actor=actor,
                   reason=f"burn-in {run_id}: level {level} started", source="burn_in")


def on_burn_in_result(conn: Connection, host: str, *, status: str, actor: str, run_id: str,
                      why: str) -> bool:
    """Passed: a ``burn_in`` host is ``in_service``. Failed (``why`` names the test and GPU): a
    burn_in or in_service host is ``suspect``. Incomplete (a check could not run): no move."""
    if status == "pass":
        return advance(conn, host, L.IN_SERVICE, frm={L.BURN_IN}, actor=actor,
                       reason=f"burn-in {run_id}: passed ({why})", source="burn_in")
    if status == "fail":
        return advance(conn, host, L.SUSPECT, frm={L.BURN_IN, L.IN_SERVICE}, actor=actor,
                       reason=f"burn-in {run_id}: failed: {why}", source="burn_in")
    return False


# --- health, history, runs ------------------------------------------------------------------------


def record_health(conn: Connection, verdicts: Mapping[str, str | None], *, source: str) -> None:
    """The agents' verdicts (host -> None when fit, else why not) as each host's last health."""
    if not verdicts:
        return
    now = time.time()
    with transaction(conn):
        conn.executemany(
            """INSERT INTO host_health (host, healthy, detail, at, source) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (host) DO UPDATE SET healthy = excluded.healthy, detail = excluded.detail,
                   at = excluded.at, source = excluded.source""",
            [(h, int(v is None), v, now, source) for h, v in verdicts.items()])


def health_many(conn: Connection, hosts: Iterable[str]) -> dict[str, Health]:
    found: dict[str, Health] = {}
    for chunk in _chunks(list(dict.fromkeys(hosts))):
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(f"SELECT * FROM host_health WHERE host IN ({marks})", list(chunk)):  # noqa: S608
            found[r["host"]] = Health(r["host"], bool(r["healthy"]), r["detail"], r["at"], r["source"])
    return found


def history(conn: Connection, host: str, limit: int = 50) -> list[LifeEntry]:
    """The host's lifecycle transitions, oldest first (the latest ``limit``)."""
    rows = conn.execute("SELECT * FROM lifecycle_audit WHERE host = ? ORDER BY id DESC LIMIT ?",
                        (host, limit)).fetchall()
    return [LifeEntry(r["host"], r["at"], r["actor"], r["from_state"], r["to_state"], r["reason"],
                      r["source"], bool(r["forced"])) for r in reversed(rows)]


def runs_for(conn: Connection, host: str, limit: int = 10) -> list[HostRun]:
    """The provision runs that touched ``host``, newest first."""
    rows = conn.execute(
        'SELECT r.id, r.status, r.playbook, r."user", r.started_at, r.ended_at, h.result '
        "FROM provision_run_hosts h JOIN provision_runs r ON r.id = h.run_id WHERE h.host = ? "
        "ORDER BY r.started_at DESC, r.id DESC LIMIT ?", (host, limit)).fetchall()
    return [HostRun(r["id"], r["status"], r["playbook"], r["user"], r["started_at"], r["ended_at"],
                    _host_result(r["result"])) for r in rows]


# --- what `fleetctl hosts` shows ------------------------------------------------------------------


@dataclass(frozen=True)
class HostOverview:
    """One row of ``fleetctl hosts``: the lifecycle, the last health seen, the drain state."""

    life: LifeRecord
    health: Health | None
    drain: str  # fleetctl's drain state as stored (hosts.HostRecord.label)
    drain_reason: str | None

    @property
    def host(self) -> str:
        return self.life.host

    def to_dict(self) -> dict[str, Any]:
        return {**self.life.to_dict(), "health": self.health.to_dict() if self.health else None,
                "drain_state": self.drain, "drain_reason": self.drain_reason}


def overview(conn: Connection, hosts: Sequence[str]) -> list[HostOverview]:
    from fleetctl.state import hosts as hstate

    life = get_many(conn, hosts)
    health = health_many(conn, hosts)
    drains = hstate.get_many(conn, hosts)
    return [HostOverview(life[h], health.get(h), drains[h].label, drains[h].reason) for h in hosts]
