"""The provision core: validate, lock, run the playbook through a ``PlaybookRunner``, record.

``run(options, ...)`` is a typed library call (drain/maintain use it too) that returns a
``ProvisionResult`` with per-host results; rendering lives in ``fleetctl.views.provision``.

Everything that can be checked before touching a host is checked first and raises ``UsageError``
(exit 2): the playbook, tags (``--list-tags``), extra-vars, batch/forks values, the inventory and
the pattern. Then the hosts are locked (refused, naming the holder, unless ``force``), the run is
recorded, and ansible-runner runs. Secrets (the vault password, extra-vars) never reach the record,
the output, ansible-runner's ``env/`` or its ``command`` artifact.

Batches (``--batch N|N%``) are run by fleetctl, one ansible-playbook per batch limited to that
batch's hosts, rather than through Ansible's ``serial``: ``serial`` is a play keyword, so an extra
var only works if every play of every playbook reads it, and a wrapper play cannot impose it on
imported playbooks. Controller-side batches work for any playbook, run every play on a batch before
the next batch is touched (what a rolling fleet change wants), and stop the rollout after a batch
with a failed or unreachable host, leaving the rest ``pending``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import re
import secrets
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from fleetctl import assets
from fleetctl.errors import (
    EXIT_CANCELED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    FleetctlError,
    UsageError,
    state_database,
)
from fleetctl.runner import (
    VAULT_PROMPT,
    Event,
    EventTally,
    HostResult,
    ListTagsError,
    PlaybookRequest,
    PlaybookRunner,
    worst_first,
)
from fleetctl.state import db, lifecycle, locks, runs
from fleetctl.validation import Size

REDACTED = "********"
HEARTBEAT_INTERVAL_S = 5.0
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|vault|auth", re.I)
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

HostSelector = Callable[[Sequence[str], str], list[str]]
T = TypeVar("T")


class HostsLocked(FleetctlError):
    """Another run holds some of the hosts (exit 1: the fleet is busy, the command was fine)."""


@dataclass(frozen=True)
class ProvisionOptions:
    inventory: Sequence[str]
    pattern: str = "all"
    playbook: str = "site"
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()
    check: bool = False
    diff: bool = False
    forks: int | None = None
    batch: str | None = None
    extra_vars: Sequence[str] = ()
    force: bool = False
    connection: str | None = None
    private_key: Path | None = None
    remote_user: str | None = None
    host_key_checking: bool = True
    vault_password_file: Path | None = None
    vault_password: str | None = field(default=None, repr=False)  # prompted; never stored
    # fleetctl's own run of a playbook (maintain's reboot, a remediation's repair): recorded, but it
    # says nothing about whether the host is provisioned, so no lifecycle move and no provision count.
    internal: bool = False


@dataclass(frozen=True)
class ExtraVars:
    """Parsed ``--extra-vars``: literal pairs/objects (written to a private file) and @files."""

    literal: dict[str, Any]
    files: list[Path]
    file_secrets: list[str] = field(default_factory=list)  # secret-looking values in the @files
    # The command line's order: ansible-playbook applies extra-vars in order, a later one winning.
    # Each item is a literal mapping (consecutive literal items merged) or an @file's path.
    ordered: list[dict[str, Any] | Path] = field(default_factory=list)

    def redacted(self) -> list[str]:
        shown: list[str] = []
        for part in self.parts():
            if isinstance(part, Path):
                shown.append(f"@{part}")
            else:
                shown += [f"{k}={_shown(v)}" for k, v in _redact_tree(part).items()]
        return shown

    def parts(self) -> list[dict[str, Any] | Path]:
        """The extra-vars in command-line order (literal ones first, then files, when built without)."""
        if self.ordered:
            return list(self.ordered)
        return ([self.literal] if self.literal else []) + list(self.files)

    def secret_values(self) -> list[str]:
        return sorted(set(_secret_leaves(self.literal, secret=False)) | set(self.file_secrets))


def _redact_tree(value: Any) -> Any:
    """A copy of ``value`` with the value under every secret-looking key, at any depth, masked."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else _redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v) for v in value]
    return value


def _secret_leaves(value: Any, *, secret: bool) -> set[str]:
    """Every non-empty scalar under a secret-looking key, at any depth (for masking output)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for k, v in value.items():
            found |= _secret_leaves(v, secret=secret or bool(_SECRET_KEY.search(str(k))))
        return found
    if isinstance(value, list):
        return {s for v in value for s in _secret_leaves(v, secret=secret)}
    return {str(value)} if secret and value is not None and str(value) else set()


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


@dataclass(frozen=True)
class Plan:
    """A validated provision, ready to lock and run."""

    options: ProvisionOptions
    playbook: Path
    hosts: list[str]
    batches: list[list[str]]
    extra_vars: ExtraVars
    cmdline: list[str]
    envvars: dict[str, str]
    passwords: dict[str, str] = field(repr=False)
    cwd: Path

    def recorded_options(self) -> dict[str, Any]:
        """The options as run records keep them: no secret values."""
        o = self.options
        return {
            "tags": list(o.tags),
            "skip_tags": list(o.skip_tags),
            "check": o.check,
            "diff": o.diff,
            "forks": o.forks,
            "batch": o.batch,
            "extra_vars": self.extra_vars.redacted(),
            "force": o.force,
            "connection": o.connection or "ssh",
            "private_key": str(o.private_key) if o.private_key else None,
            "remote_user": o.remote_user,
            # what ansible-playbook was given, not just the flag
            "host_key_checking": self.envvars.get("ANSIBLE_HOST_KEY_CHECKING") == "True",
            "vault": "password-file" if o.vault_password_file else ("prompt" if o.vault_password else None),
            "vault_password_file": str(o.vault_password_file) if o.vault_password_file else None,
            # only when set: records of ordinary runs keep their shape
            **({"internal": True} if o.internal else {}),
        }

    def redact(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, REDACTED)
        return text

    def _secrets(self) -> list[str]:
        values = self.extra_vars.secret_values()
        if self.options.vault_password:
            values.append(self.options.vault_password)
        return sorted(set(values), key=len, reverse=True)


@dataclass
class ProvisionResult:
    run_id: str
    status: str  # successful | failed | canceled
    hosts: list[HostResult]
    artifacts: Path
    playbook: Path
    message: str | None = None
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "playbook": str(self.playbook),
            "artifacts": str(self.artifacts),
            "message": self.message,
            "summary": dict(runs.summarize(self.hosts)),
            "hosts": [h.to_dict() for h in worst_first(self.hosts)],
        }


class RunObserver(Protocol):
    """What a progress display receives. Called from the runner's thread for events."""

    def started(self, run_id: str, hosts: Sequence[str], playbook: str) -> None: ...

    def batch(self, index: int, total: int, hosts: Sequence[str]) -> None: ...

    def event(self, event: Event, tally: EventTally) -> None: ...

    def finished(self, result: ProvisionResult) -> None: ...


# --- validation --------------------------------------------------------------------------------


def playbook_dirs(cwd: Path) -> list[Path]:
    """Where ``--playbook NAME`` is looked up: ./playbooks, then fleetctl's own (a checkout's or the
    installed package's: fleetctl.assets)."""
    return list(dict.fromkeys([cwd / "playbooks", assets.playbooks_dir()]))


def resolve_playbook(value: str, cwd: Path) -> Path:
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = cwd / candidate
    if candidate.is_file():
        return candidate.resolve()
    names = [value] if value.endswith((".yml", ".yaml")) else [f"{value}.yml", f"{value}.yaml"]
    known: set[str] = set()
    for folder in playbook_dirs(cwd):
        for name in names:
            if "/" not in value and (folder / name).is_file():
                return (folder / name).resolve()
        if folder.is_dir():
            known.update(p.stem for p in folder.glob("*.y*ml"))
    available = ", ".join(sorted(known)) or "none found"
    raise UsageError(f"unknown playbook {value!r}: not a file, not in playbooks/ (available: {available})")


def parse_extra_vars(items: Sequence[str], cwd: Path) -> ExtraVars:
    """``k=v`` (several per item, space separated), ``@file`` (YAML/JSON mapping) or a JSON object."""
    literal: dict[str, Any] = {}
    files: list[Path] = []
    file_secrets: list[str] = []
    ordered: list[dict[str, Any] | Path] = []

    def add_literal(values: Mapping[str, Any]) -> None:
        literal.update(values)
        if not ordered or isinstance(ordered[-1], Path):
            ordered.append({})
        last = ordered[-1]
        assert isinstance(last, dict)
        last.update(values)

    for number, item in enumerate(items, start=1):
        text = item.strip()
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            path = path if path.is_absolute() else cwd / path
            if not path.is_file():
                raise UsageError(f"--extra-vars {item!r}: no such file {path}")
            try:
                loaded = yaml.safe_load(path.read_text())
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"--extra-vars {item!r}: {path} is not valid YAML/JSON: {_one_line(exc)}"
                ) from exc
            except OSError as exc:
                raise UsageError(f"--extra-vars {item!r}: cannot read {path}: {exc.strerror}") from exc
            if not isinstance(loaded, dict):
                # Vault-encrypted files load as a string: Ansible decrypts them, we only check shape.
                if not (isinstance(loaded, str) and loaded.startswith("$ANSIBLE_VAULT")):
                    raise UsageError(f"--extra-vars {item!r}: {path} must hold a mapping of variables")
            else:  # its secrets are masked in the output like literal ones
                file_secrets += _secret_leaves(loaded, secret=False)
            files.append(path.resolve())
            ordered.append(path.resolve())
        elif text.startswith("{"):
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--extra-vars #{number} (a JSON object): malformed JSON: {exc.msg} "
                                 f"(line {exc.lineno} column {exc.colno})") from exc
            if not isinstance(loaded, dict) or not all(_VAR_NAME.match(str(k)) for k in loaded):
                raise UsageError(f"--extra-vars #{number}: expected a JSON object of variable names")
            add_literal(loaded)
        else:
            if not text:
                raise UsageError("--extra-vars '': expected key=value, @file or a JSON object")
            pairs: dict[str, Any] = {}
            for word, pair in enumerate(text.split(), start=1):
                key, sep, value = pair.partition("=")
                if not sep or not _VAR_NAME.match(key):
                    # Not echoed: a word without "=" is most likely part of a value with spaces
                    # (a password, say) that the shell split.
                    raise UsageError(
                        f"--extra-vars #{number}, word {word}: not key=value with a variable name as key "
                        "(a value with spaces needs a JSON object or @file)"
                    )
                pairs[key] = value
            add_literal(pairs)
    return ExtraVars(literal, files, file_secrets, ordered)


def parse_batch(value: str | None, total: int) -> int:
    """Hosts per batch for ``N`` or ``N%`` (at least one); ``total`` when no batching."""
    if value is None:
        return max(total, 1)
    return Size.parse(value, "--batch").of(total)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def default_select_hosts(sources: Sequence[str], pattern: str) -> list[str]:
    """Hosts matching ``pattern`` in the inventory (helper B's Ansible-backed inventory; its
    ``InventoryError`` is a ``UsageError``, exit 2)."""
    from fleetctl.inventory import load_inventory

    return [host.name for host in load_inventory(list(sources)).select(pattern)]


def plan(
    options: ProvisionOptions,
    runner: PlaybookRunner,
    *,
    cwd: Path | None = None,
    select_hosts: HostSelector = default_select_hosts,
) -> Plan:
    """Validate everything that can be checked before a host is touched."""
    cwd = (cwd or Path.cwd()).resolve()
    if not options.inventory:
        raise UsageError("no inventory: pass --inventory/-i (or set ANSIBLE_INVENTORY)")
    sources: list[str] = []
    for source in options.inventory:
        if "," in source and not Path(source).exists():
            sources.append(source)  # Ansible's "host1,host2," list
            continue
        path = Path(source).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not path.exists():
            raise UsageError(f"inventory {source!r}: no such file or directory")
        sources.append(str(path))
    options = dataclasses.replace(options, inventory=sources)
    playbook = resolve_playbook(options.playbook, cwd)
    extra = parse_extra_vars(options.extra_vars, cwd)
    if options.forks is not None and options.forks < 1:
        raise UsageError(f"--forks {options.forks}: must be at least 1")
    if options.connection not in (None, "ssh", "paramiko"):
        raise UsageError(f"--connection {options.connection!r}: expected ssh or paramiko")
    if options.vault_password_file and not options.vault_password_file.expanduser().is_file():
        raise UsageError(f"--vault-password-file {options.vault_password_file}: no such file")
    if options.private_key and not options.private_key.expanduser().is_file():
        raise UsageError(f"--private-key {options.private_key}: no such file")
    hosts = select_hosts(options.inventory, options.pattern)
    if not hosts:
        raise UsageError(f"pattern {options.pattern!r} matches no host in {', '.join(options.inventory)}")
    size = parse_batch(options.batch, len(hosts))
    batches = [hosts[i : i + size] for i in range(0, len(hosts), size)]

    cmdline: list[str] = []
    if options.tags:
        cmdline += ["--tags", ",".join(options.tags)]
    if options.skip_tags:
        cmdline += ["--skip-tags", ",".join(options.skip_tags)]
    if options.check:
        cmdline.append("--check")
    if options.diff:
        cmdline.append("--diff")
    if options.connection:
        cmdline += ["--connection", options.connection]
    if options.private_key:
        cmdline += ["--private-key", str(options.private_key.expanduser().resolve())]
    if options.remote_user:
        cmdline += ["--user", options.remote_user]
    passwords: dict[str, str] = {}
    if options.vault_password_file:
        cmdline += ["--vault-password-file", str(options.vault_password_file.expanduser().resolve())]
    elif options.vault_password is not None:
        cmdline.append("--ask-vault-pass")
        passwords[VAULT_PROMPT] = options.vault_password

    # Always set from the flag: ansible-runner would default to False and an inherited
    # ANSIBLE_HOST_KEY_CHECKING=False would turn checking off unseen (and unrecorded). Only
    # --no-host-key-checking turns it off.
    envvars = {"ANSIBLE_HOST_KEY_CHECKING": "True" if options.host_key_checking else "False"}

    result = Plan(options, playbook, hosts, batches, extra, cmdline, envvars, passwords, cwd)
    wanted_tags = {t for t in (*options.tags, *options.skip_tags) if t not in ("all", "tagged", "untagged")}
    if wanted_tags:
        check_tags(result, runner, wanted_tags)
    return result


def _without_tag_filters(cmdline: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in cmdline:
        if skip:
            skip = False
        elif arg in ("--tags", "--skip-tags"):
            skip = True
        else:
            out.append(arg)
    return out


def check_tags(plan_: Plan, runner: PlaybookRunner, wanted: set[str]) -> None:
    # The literal extra-vars too: they may template play names and hosts, as in the run itself.
    with tempfile.TemporaryDirectory(prefix="fleetctl-tags-") as tmp, \
            extra_vars_args(Path(tmp), plan_.extra_vars) as args:
        _check_tags(plan_, runner, wanted, args)


def _check_tags(plan_: Plan, runner: PlaybookRunner, wanted: set[str], extra_args: list[str]) -> None:
    cmdline = _without_tag_filters(plan_.cmdline) + extra_args
    probe = PlaybookRequest(
        playbook=plan_.playbook,
        inventory=list(plan_.options.inventory),
        private_data_dir=plan_.cwd,
        ident="list-tags",
        cwd=plan_.cwd,
        limit=plan_.options.pattern,
        # --tags would filter the listing itself; extra-vars may template play names/hosts.
        cmdline=cmdline,
        envvars=plan_.envvars,
        passwords=plan_.passwords,
    )
    try:
        known = runner.list_tags(probe)
    except ListTagsError as exc:
        raise UsageError(f"{plan_.playbook}: {plan_.redact(str(exc))}") from exc
    unknown = sorted(wanted - known)
    if unknown:
        raise UsageError(
            f"unknown tag(s) {', '.join(unknown)} in {plan_.playbook.name}"
            f" (known: {', '.join(sorted(known)) or 'none'})"
        )


# --- running -----------------------------------------------------------------------------------


def state_dir(db_path: Path) -> Path:
    return db_path.parent / "runs"


@contextlib.contextmanager
def extra_vars_args(directory: Path, extra: ExtraVars) -> Iterator[list[str]]:
    """``--extra-vars`` arguments in the command line's order: each run of literal values in a 0600
    file (never in argv, which ansible-runner records) that exists only while the run does."""
    with contextlib.ExitStack() as stack:
        args: list[str] = []
        for part in extra.parts():
            if isinstance(part, Path):
                path: Path | None = part
            else:
                path = stack.enter_context(_private_vars_file(directory, part))
            if path is not None:
                args += ["--extra-vars", f"@{path}"]
        yield args


@contextlib.contextmanager
def _private_vars_file(directory: Path, values: Mapping[str, Any]) -> Iterator[Path | None]:
    """Literal extra-vars in a 0600 file that exists only while the run does."""
    if not values:
        yield None
        return
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f".extra-vars-{secrets.token_hex(4)}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def remove_stale_vars_files(conn: db.Connection, directory: Path) -> list[Path]:
    """Delete the private extra-vars files that killed runs (SIGKILL, power loss) left behind.

    Only files of runs whose record has ended (after reaping the dead ones) go; a live run's file,
    or one no record here accounts for, is left alone. Returns what was removed.
    """
    runs.reap(conn)
    removed: list[Path] = []
    for path in sorted(directory.glob("*/.extra-vars-*.json")):
        if runs.status_of(conn, path.parent.name) in runs.FINAL_STATUSES:
            try:
                path.unlink()
            except OSError:  # gone already (a concurrent cleanup); never worth failing a run over
                continue
            removed.append(path)
    return removed


class _Heartbeat(threading.Thread):
    """Keeps the run's locks and record alive and saves the results so far."""

    def __init__(
        self, db_path: Path, run_id: str, lock_id: str, tally: EventTally, stop: threading.Event
    ) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.db_path, self.run_id, self.lock_id, self.tally, self.stop = db_path, run_id, lock_id, tally, stop

    def run(self) -> None:
        # A dead heartbeat would get a live run reaped as interrupted and its locks expired, so
        # store errors (e.g. "database is locked", a server that refuses connections for a while)
        # are reported and retried on the next beat, on a fresh connection: the failed one may be
        # a session the server has ended.
        conn: db.Connection | None = None
        failing = lost_locks = False
        try:
            while not self.stop.wait(HEARTBEAT_INTERVAL_S):
                try:
                    conn = conn or _connect(self.db_path)
                    held = locks.refresh(conn, self.lock_id)
                    runs.heartbeat(conn, self.run_id, self.tally.snapshot())
                except (sqlite3.Error, FleetctlError) as exc:
                    if not failing:  # one line per failure streak, not one per beat
                        _warn(f"run {self.run_id}: heartbeat failed, retrying: {_one_line(exc)}")
                    failing = True
                    _close_quietly(conn)
                    conn = None
                    continue
                failing = False
                if held == 0 and not lost_locks:
                    lost_locks = True
                    _warn(f"run {self.run_id}: its host locks were taken over (--force by another run);"
                          " this run goes on but no longer holds the hosts")
        finally:
            _close_quietly(conn)


def _warn(line: str) -> None:
    from fleetctl.views.text import visible  # exception texts can carry a host's or a file's words

    print(f"fleetctl: warning: {visible(line)}", file=sys.stderr, flush=True)


def _connect(db_path: Path) -> db.Connection:
    return db.connect(db_path, schema=(*runs.SCHEMA, *locks.SCHEMA))


def _close_quietly(conn: db.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # a lost session may fail even to close
            conn.close()


class _Store:
    """The run's connection. A write that fails (a PostgreSQL session the server ended during a
    long playbook, a busy SQLite file) is tried once more on a fresh connection, so that a run
    whose playbook succeeded is recorded as such and its locks are released, not left to be
    reaped as interrupted."""

    def __init__(self, db_path: Path, conn: db.Connection) -> None:
        self.db_path, self.conn = db_path, conn

    def write(self, what: Callable[[db.Connection], T]) -> T:
        try:
            return what(self.conn)
        except sqlite3.Error:
            _close_quietly(self.conn)
            with state_database(self.db_path):
                self.conn = _connect(self.db_path)
            return what(self.conn)

    def close(self) -> None:
        _close_quietly(self.conn)


class _NullObserver:
    def started(self, run_id: str, hosts: Sequence[str], playbook: str) -> None:
        pass

    def batch(self, index: int, total: int, hosts: Sequence[str]) -> None:
        pass

    def event(self, event: Event, tally: EventTally) -> None:
        pass

    def finished(self, result: ProvisionResult) -> None:
        pass


def run(
    options: ProvisionOptions,
    runner: PlaybookRunner,
    *,
    db_path: Path | None = None,
    observer: RunObserver | None = None,
    cancel: threading.Event | None = None,
    cwd: Path | None = None,
    select_hosts: HostSelector = default_select_hosts,
    run_id: str | None = None,
    held_by: str | None = None,
) -> ProvisionResult:
    """Validate, lock, run and record one provision. Raises ``UsageError`` (nothing was run or
    recorded) or ``HostsLocked``; every other outcome is a ``ProvisionResult``.

    ``held_by``: a caller (e.g. rolling maintenance) that already holds the hosts' locks under this
    holder id; the run extends those locks instead of taking its own, and leaves them held.
    """
    observer = observer or _NullObserver()
    cancel = cancel or threading.Event()
    db_path = db_path or db.default_path()
    the_plan = plan(options, runner, cwd=cwd, select_hosts=select_hosts)
    run_id = run_id or runs.new_run_id()
    user = getpass.getuser()
    purpose = f"provision {the_plan.playbook.name}" + (f" for {held_by}" if held_by else "")
    holder = locks.Holder(
        id=held_by or run_id, purpose=purpose, user=user, machine=runs.this_machine(), pid=os.getpid()
    )
    with state_database(db_path):  # nothing has run yet: a database that fails is one line, exit 2
        conn = _connect(db_path)
        db.require_writable(conn)  # a newer fleetctl's database: refused before any lock or run
    store = _Store(db_path, conn)
    try:
        with state_database(db_path):
            remove_stale_vars_files(conn, state_dir(db_path))
            try:
                overridden = locks.acquire(conn, the_plan.hosts, holder, force=options.force)
            except locks.LocksHeld as exc:
                raise HostsLocked(f"refused: {exc}") from exc
        try:
            return _run_locked(the_plan, runner, store, run_id, holder.id, user, observer, cancel,
                               overridden)
        finally:
            if held_by is None:
                store.write(lambda c: locks.release(c, run_id))
    finally:
        store.close()


def _run_locked(
    the_plan: Plan,
    runner: PlaybookRunner,
    store: _Store,
    run_id: str,
    lock_id: str,
    user: str,
    observer: RunObserver,
    cancel: threading.Event,
    overridden: Sequence[locks.Lock],
) -> ProvisionResult:
    db_path = store.db_path
    # ansible-runner's artifacts hold the whole environment of the run: private to the user.
    state_dir(db_path).mkdir(parents=True, exist_ok=True, mode=0o700)
    private_dir = state_dir(db_path) / run_id
    private_dir.mkdir(mode=0o700, exist_ok=True)
    artifacts = private_dir / "artifacts"
    options = the_plan.recorded_options()
    if overridden:
        options["forced_over"] = sorted({lk.holder.id for lk in overridden})
    tally = EventTally(the_plan.hosts, redact=the_plan.redact)
    record = runs.RunRecord(
        id=run_id, user=user, machine=runs.this_machine(), pid=os.getpid(),
        started_at=runs.now_iso(), heartbeat_at=runs.now_iso(),
        inventory=", ".join(the_plan.options.inventory), pattern=the_plan.options.pattern,
        playbook=str(the_plan.playbook), options=options, artifacts=str(artifacts),
        hosts=tally.snapshot(),
    )
    runs.start(store.conn, record)
    observer.started(run_id, the_plan.hosts, the_plan.playbook.name)

    stop = threading.Event()
    beat = _Heartbeat(db_path, run_id, lock_id, tally, stop)
    beat.start()

    def on_event(event: Event) -> None:
        tally.feed(event)
        observer.event(event, tally)

    status, message = "successful", None
    notes: list[str] = []
    try:
        with extra_vars_args(private_dir, the_plan.extra_vars) as extra_args:
            cmdline = list(the_plan.cmdline) + extra_args
            for index, batch in enumerate(the_plan.batches, start=1):
                if cancel.is_set():
                    status = "canceled"
                    break
                observer.batch(index, len(the_plan.batches), batch)
                limit = the_plan.options.pattern if len(the_plan.batches) == 1 else ",".join(batch)
                request = PlaybookRequest(
                    playbook=the_plan.playbook,
                    inventory=list(the_plan.options.inventory),
                    private_data_dir=private_dir,
                    ident=f"batch-{index}" if len(the_plan.batches) > 1 else "run",
                    cwd=the_plan.cwd,
                    limit=limit,
                    cmdline=cmdline,
                    envvars=the_plan.envvars,
                    passwords=the_plan.passwords,
                    forks=the_plan.options.forks,
                )
                plays_before = tally.plays_started
                outcome = runner.run(request, on_event, cancel.is_set)
                for line in outcome.notes:  # async jobs a cancel could not stop on their hosts
                    _warn(the_plan.redact(line))
                    notes.append(the_plan.redact(line))
                if outcome.status == "canceled" or cancel.is_set():
                    status = "canceled"
                    break
                if outcome.status != "successful" and tally.plays_started == plays_before:
                    # ansible-playbook stopped before any play: a configuration error.
                    message = the_plan.redact(_tail_error(tally) or f"ansible-playbook exited {outcome.rc}")
                    status = "failed"
                    break
                batch_results = [h for h in tally.snapshot() if h.host in set(batch)]
                if outcome.status != "successful" or any(h.failed or h.unreachable for h in batch_results):
                    status = "failed"
                    if index < len(the_plan.batches):
                        message = f"stopped after batch {index} of {len(the_plan.batches)}: a host failed"
                    break
    except BaseException as exc:
        # An adapter error or a KeyboardInterrupt with no signal handler installed (library use):
        # the record still ends, with the results so far, instead of waiting to look interrupted.
        ended = "canceled" if isinstance(exc, KeyboardInterrupt) else "failed"
        said = the_plan.redact(_one_line(exc))[:500]
        store.write(lambda c: runs.finish(c, run_id, ended, tally.snapshot(), message=said))
        raise
    finally:
        stop.set()
        beat.join()
    hosts = tally.snapshot()
    if status == "successful" and any(h.failed or h.unreachable for h in hosts):
        status = "failed"
    if notes:
        message = "; ".join([*([message] if message else []), *notes])[:1000]
    store.write(lambda c: runs.finish(c, run_id, status, hosts, message=message))
    # A dry run or fleetctl's own internal run says nothing about a host's life.
    if status != "canceled" and not the_plan.options.check and not the_plan.options.internal:
        store.write(lambda c: lifecycle.on_provision_result(
            c, run_id, {h.host: h.state for h in hosts}, actor=user, playbook=the_plan.playbook.name,
            partial=bool(the_plan.options.tags or the_plan.options.skip_tags)))
    exit_code = {"successful": EXIT_OK, "canceled": EXIT_CANCELED}.get(status, EXIT_PROBLEMS)
    if message and tally.plays_started == 0 and status == "failed":
        exit_code = EXIT_USAGE
    result = ProvisionResult(run_id, status, hosts, artifacts, the_plan.playbook, message, exit_code)
    observer.finished(result)
    return result


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail_error(tally: EventTally) -> str | None:
    lines = [_ANSI.sub("", line) for line in tally.tail]  # Ansible colours its errors
    for line in lines:
        if "ERROR" in line:
            return " ".join(line.split())
    return " ".join(lines[-1].split()) if lines else None

