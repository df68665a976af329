"""The fleet's hosts, read from the Ansible inventory with Ansible's own inventory machinery.

Public API (also used by ``provision``, ``runs`` and ``drain``)::

    inv = load_inventory("inventory/example")      # or None: -i / FLEETCTL_INVENTORY / ansible.cfg
    for host in inv.select("gpu_nodes:&rack1:!h100-0003"):
        host.name, host.address, host.agent_port, host.expected_chips, host.groups, host.vars
        host.agent_token.reveal() if host.agent_token else None   # never print it

Every failure is an :class:`InventoryError` (exit code 2) whose message is one line naming the
inventory file, and the line when Ansible reports one.

A cold parse goes through Ansible's ``InventoryManager`` (every inventory plugin, ``group_vars/``,
``host_vars/``); each host's variables are ``VariableManager.get_vars``' answer computed the fast way
(:func:`fleetctl.speedups.host_vars_reader`), without facts: those are not inventory.

Parsing a 10,000-host inventory through Ansible takes seconds, so the result is cached as JSON in
``$XDG_CACHE_HOME/fleetctl/`` keyed by the path, modification time and size of every file the
inventory came from (including ``group_vars/`` and ``host_vars/``). Executable (dynamic) sources
and inventory plugin configs are never cached. Host patterns that are plain names (``all``, a group,
a host) are answered from the cache directly; any other pattern (``&``, ``!``, wildcards, regexes,
subscripts) goes through Ansible's own pattern code over the cached groups. Slurm host lists
(``h100-[0003,0007-0009]``, what ``health --summary`` prints) are expanded first: see
:func:`expand_hostlists` for when a bracket is read the Slurm way.
"""

from __future__ import annotations

import atexit
import configparser
import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from fleet_agent.config import DEFAULT_PORT

from fleetctl.cachefile import write_cache_file
from fleetctl.errors import UsageError
from fleetctl.speedups import HostTemplar, enabled, gc_paused, host_vars_reader, inventory_loader

ENV_INVENTORY = "FLEETCTL_INVENTORY"
ENV_CACHE_DIR = "FLEETCTL_CACHE_DIR"
# Bump when the cached document's layout changes (2: connection/scheduler vars are rendered;
# 3: facts from Ansible's fact cache are no longer mixed into host vars; 4: expected chips come
# from fleet_agent_expected_chips, the fleet_agent role's variable).
CACHE_FORMAT = 5  # 5: ansible_host's [brackets] around IPv6 stripped

PORT_VAR = "fleet_agent_port"
TOKEN_VAR = "fleet_agent_token"  # noqa: S105 - a variable name, not a secret
EXPECTED_CHIPS_VAR = "fleet_agent_expected_chips"

# Variables Ansible adds to every host (magic variables); not inventory data, and ``groups`` alone
# would make the cache quadratic in the number of hosts.
_MAGIC_VARS = frozenset({
    "ansible_config_file", "ansible_facts", "ansible_playbook_python", "ansible_version",
    "ansible_check_mode", "ansible_diff_mode", "ansible_forks", "ansible_inventory_sources",
    "ansible_skip_tags", "ansible_run_tags", "ansible_verbosity", "group_names", "groups",
    "hostvars", "inventory_dir", "inventory_file", "inventory_hostname", "inventory_hostname_short",
    "omit", "playbook_dir", "role_names", "environment",
})
# Variables fleetctl itself acts on outside Ansible (scheduler commands over SSH, kubeconfig,
# drained-file path): rendered at load time as Ansible would, so ``{{ inventory_dir }}`` in a key
# path never reaches ssh literally.
RENDERED_VARS = (
    "ansible_host", "ansible_user", "ansible_port", "ansible_ssh_port", "ansible_ssh_private_key_file",
    "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_become", "ansible_connection",
    "fleet_scheduler", "fleet_kubeconfig", "fleet_kubernetes_context", "fleet_kubernetes_node_name",
    "fleet_kubernetes_grace_period_s", "fleet_agent_drained_file",
)
RENDERED_PREFIXES = ("fleet_slurm_",)
_SIMPLE_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_VAULT_KEY = "__ansible_vault__"


class InventoryError(UsageError):
    """The inventory is missing, malformed, or a pattern selects nothing (exit 2)."""


class Secret:
    """A credential from the inventory. ``str()``/``repr()`` never show it; :meth:`reveal` does.

    Vault-encrypted values stay encrypted (also in the cache) until revealed, which decrypts them
    with the vault password Ansible is configured with (``ANSIBLE_VAULT_PASSWORD_FILE``, ansible.cfg).
    """

    __slots__ = ("_plain", "_source", "_vaulted")

    def __init__(self, *, plain: str | None = None, vaulted: str | None = None, source: str = "") -> None:
        self._plain = plain
        self._vaulted = vaulted
        self._source = source

    @property
    def is_vaulted(self) -> bool:
        return self._vaulted is not None

    def reveal(self) -> str:
        if self._plain is None:
            assert self._vaulted is not None
            self._plain = _vault_decrypt(self._vaulted, self._source)
        return self._plain

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self._plain, self._vaulted) == (other._plain, other._vaulted)

    def __hash__(self) -> int:
        return hash((self._plain, self._vaulted))


@dataclass(frozen=True)
class Host:
    """One inventory host, as the fleet tools need it."""

    name: str
    address: str  # ansible_host, else the name
    groups: tuple[str, ...]  # Ansible's group_names order, without all/ungrouped
    # Inventory vars, token removed: a Mapping, not always a dict (LazyVars from the cache): copy it
    # (dict(...)) before handing it to an encoder.
    vars: Mapping[str, Any] = field(repr=False, compare=False)
    agent_port: int = DEFAULT_PORT
    agent_token: Secret | None = field(default=None, repr=False)
    expected_chips: int | None = None

    @property
    def first_group(self) -> str:
        return self.groups[0] if self.groups else "ungrouped"

    @property
    def agent_endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.agent_port}"


@dataclass
class Inventory:
    """The parsed inventory; :meth:`select` applies an Ansible host pattern."""

    sources: tuple[str, ...]
    hosts: dict[str, Host]  # inventory order
    groups: dict[str, _GroupData]
    from_cache: bool = False

    @property
    def label(self) -> str:
        return ",".join(self.sources)

    def select(self, pattern: str | None = None) -> list[Host]:
        """The hosts ``pattern`` selects, in inventory order; an error when it selects none.

        Patterns are Ansible's (``all``, ``gpu_nodes:&rack1``, ``!h100-0003``, ``h100-*``,
        ``~regex``, ``group[0:9]``); a component that matches nothing is an error too, as a typo
        there would otherwise silently widen or narrow an operation.
        """
        pattern = (pattern or "all").strip()
        if not pattern:
            pattern = "all"
        pattern = expand_hostlists(pattern, self)
        if pattern in ("all", "*"):
            names = list(self.hosts)
        elif _SIMPLE_PATTERN.match(pattern):
            if pattern in self.groups:
                names = list(self.groups[pattern].all_hosts)
            elif pattern in self.hosts:
                names = [pattern]
            else:
                raise InventoryError(f"{self.label}: pattern {pattern!r} matches no host or group"
                                     f"{self.did_you_mean(pattern)}")
        else:
            names = _ansible_select(self, pattern)
        if not names:
            raise InventoryError(f"{self.label}: pattern {pattern!r} matches no host")
        return [self.hosts[n] for n in names]

    def did_you_mean(self, name: str) -> str:
        """``; did you mean 'h100-0001' or group 'rack1'?`` for a name close to a host or group, else ''."""
        import difflib

        groups = [g for g in self.groups if g not in ("all", "ungrouped")]
        close = difflib.get_close_matches(name, [*groups, *self.hosts], n=3, cutoff=0.6)
        if not close:
            return ""
        shown = [f"group {c!r}" if c in self.groups else repr(c) for c in close]
        return f"; did you mean {' or '.join(shown)}?"


# --- Slurm host lists in patterns ---------------------------------------------------------------
#
# ``fleetctl health --summary`` writes Slurm hostlists (``h100-[0003,0007-0009]``); on-call pastes them
# into ``drain``. Ansible reads ``name[...]`` as a subscript of a group (``webservers[0]``,
# ``webservers[0:2]``) or a glob class (``h100-000[1-3]``), so a bracket is read the Slurm way only
# when it holds digits with ``-`` and ``,`` and the text before it is not a group name; then it is
# expanded into the names (zero padding kept: the lower bound's width) before Ansible sees the pattern.
# With ``&`` the names become one regex (Ansible intersects each ``&`` part on its own).

_SLURM_BRACKET = re.compile(r"\[([0-9][0-9,-]*)\]")
_SLURM_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
HOSTLIST_MAX = 100_000  # names one pattern may expand into


def expand_hostlists(pattern: str, inventory: Inventory) -> str:
    """``pattern`` with its Slurm host lists expanded (see above); unchanged when it has none."""
    if "[" not in pattern and "]" not in pattern:
        return pattern
    parts = _components(pattern)
    out: list[str] = []
    changed = False
    for part in parts:
        op = part[:1] if part[:1] in ("&", "!") else ""
        names = _slurm_names(part[len(op):], inventory)
        if names is None:
            out.append(part)
            continue
        changed = True
        if op == "&":
            out.append("&~^(" + "|".join(re.escape(n) for n in names) + ")$")
        else:
            out.extend(op + n for n in names)
    return ",".join(out) if changed else pattern


def _components(pattern: str) -> list[str]:
    """``pattern`` split at ``,`` and ``:`` outside brackets; unbalanced brackets are an error."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(pattern):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch in ",:" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        if depth < 0 or depth > 1:
            break
    if depth != 0:
        raise InventoryError(f"pattern {pattern!r}: unbalanced brackets")
    parts.append(pattern[start:])
    return [p.strip() for p in parts if p.strip()]


def _slurm_names(part: str, inventory: Inventory) -> list[str] | None:
    """The names a Slurm host list stands for, or None when ``part`` is not one (see above)."""
    first = _SLURM_BRACKET.search(part)
    if first is None or part.startswith("~") or part[:first.start()] in inventory.groups:
        return None
    if part.count("[") != len(_SLURM_BRACKET.findall(part)):  # another bracket is Ansible's
        return None
    if any(ch in _SLURM_BRACKET.sub("", part) for ch in "*?"):  # a glob (h000[1-3]*): Ansible's
        return None
    brackets = list(_SLURM_BRACKET.finditer(part))
    total = 1
    for m in brackets:  # counted from the bounds before anything is built: a typo must not fill memory
        total *= _slurm_count(m.group(1), part)
        if total > HOSTLIST_MAX:
            raise InventoryError(f"pattern {part!r}: more than {HOSTLIST_MAX} names")
    names = [""]
    pos = 0
    for m in brackets:
        numbers = _slurm_numbers(m.group(1), part)
        names = [n + part[pos:m.start()] + x for n in names for x in numbers]
        pos = m.end()
    names = [n + part[pos:] for n in names]
    missing = [n for n in names if n not in inventory.hosts and n not in inventory.groups]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InventoryError(f"{inventory.label}: pattern {part!r}: {missing[0]!r}{more} "
                             "matches no host or group")
    return list(dict.fromkeys(names))


def _slurm_ranges(body: str, part: str) -> list[tuple[str, str]]:
    """``0001-0004,0007`` -> [('0001', '0004'), ('0007', '0007')]; a malformed list is an error."""
    ranges: list[tuple[str, str]] = []
    for item in body.split(","):
        m = _SLURM_ITEM.fullmatch(item)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise InventoryError(f"pattern {part!r}: [{body}] is not a host list "
                                 "(expected e.g. [0001-0004,0007])")
        ranges.append((m.group(1), m.group(2) or m.group(1)))
    return ranges


def _slurm_count(body: str, part: str) -> int:
    return sum(int(hi) - int(lo) + 1 for lo, hi in _slurm_ranges(body, part))


def _slurm_numbers(body: str, part: str) -> list[str]:
    return [f"{n:0{len(lo)}d}" for lo, hi in _slurm_ranges(body, part) for n in range(int(lo), int(hi) + 1)]


def join_patterns(patterns: Sequence[str] | None) -> str:
    """Several host patterns as one, the way Ansible joins its own: ``['gpu', '&rack1', '!h3']`` ->
    ``gpu:&rack1:!h3`` (a union, then intersections and exclusions); none (or only blanks) is ``all``.

    Each part may itself hold ':' or ','; blank parts are dropped.
    """
    parts = [p.strip() for p in patterns or () if p.strip()]
    return ":".join(parts) if parts else "all"


@dataclass(frozen=True)
class _GroupData:
    hosts: tuple[str, ...]  # direct members
    children: tuple[str, ...]
    all_hosts: tuple[str, ...]  # members including descendants', as Ansible orders them


# --- locating the inventory ----------------------------------------------------------------------


def resolve_sources(source: str | None = None) -> list[str]:
    """``source``, else ``$FLEETCTL_INVENTORY``, else ``$ANSIBLE_INVENTORY``, else ansible.cfg's
    ``[defaults] inventory`` (``$ANSIBLE_CONFIG``, ./ansible.cfg, ~/.ansible.cfg, /etc/ansible/)."""
    for value in (source, os.environ.get(ENV_INVENTORY), os.environ.get("ANSIBLE_INVENTORY")):
        if value:
            return [value]
    cfg = _ansible_cfg_path()
    if cfg is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(cfg, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise InventoryError(f"{cfg}: cannot read: {str(exc).splitlines()[0]}") from None
        value = parser.get("defaults", "inventory", fallback="").strip()
        if value:
            base = Path(cfg).parent
            return [str(base / os.path.expanduser(p.strip())) for p in value.split(",") if p.strip()]
    raise InventoryError(
        "no inventory: pass -i/--inventory, set FLEETCTL_INVENTORY, or set inventory in ansible.cfg"
    )


def _ansible_cfg_path() -> str | None:
    candidates = [os.environ.get("ANSIBLE_CONFIG"), "ansible.cfg",
                  str(Path.home() / ".ansible.cfg"), "/etc/ansible/ansible.cfg"]
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    return None


# --- loading --------------------------------------------------------------------------------------


def load_inventory(source: str | Sequence[str] | None = None, *, use_cache: bool = True,
                   cache_dir: Path | None = None) -> Inventory:
    """Parse the inventory at ``source`` (a path, or several; None: see :func:`resolve_sources`).

    A cached parse is used when every file it came from is unchanged.
    """
    return start_loading(source, use_cache=use_cache, cache_dir=cache_dir).result()


def start_loading(source: str | Sequence[str] | None = None, *, use_cache: bool = True,
                  cache_dir: Path | None = None) -> PendingInventory:
    """Begin :func:`load_inventory`; its answer, or its error, comes from :meth:`PendingInventory.result`.

    A parse the cache cannot spare starts here, in a child process (``parse_apart``, see
    :class:`_ParseChild`): the threads a caller starts next (``health``'s first Prometheus queries)
    run beside it, and a fork must come before them.
    """
    try:
        if source is None or isinstance(source, str):
            sources = resolve_sources(source)
        else:
            sources = list(source)
        sources = [s if _is_host_list(s) else os.path.abspath(os.path.expanduser(s)) for s in sources]
        for s in sources:
            if not _is_host_list(s) and not os.path.exists(s):
                raise InventoryError(f"{s}: inventory not found")
        cacheable = use_cache and all(_cacheable(s) for s in sources)
        cache_file = _cache_file(sources, cache_dir) if cacheable else None
        fingerprint = _fingerprint(sources) if cacheable else ""
    except UsageError as exc:
        return PendingInventory([], None, "", error=exc)
    parse = cache_file is None or _cached_fingerprint(cache_file) != fingerprint
    child = _ParseChild.start(sources, cache_file, fingerprint) if parse else None
    return PendingInventory(sources, cache_file, fingerprint, child=child, parse=parse)


class PendingInventory:
    """An inventory being loaded (:func:`start_loading`): ask for its :meth:`result` or :meth:`cancel`
    it (else a parse child stays a zombie until the command ends). ``parse``: the cache cannot spare
    Ansible's parse (seconds for a large fleet)."""

    def __init__(self, sources: list[str], cache_file: Path | None, fingerprint: str, *,
                 child: _ParseChild | None = None, error: UsageError | None = None,
                 parse: bool = False) -> None:
        self._sources, self._cache_file, self._fingerprint = sources, cache_file, fingerprint
        self._child, self._error = child, error
        self.parse = parse

    def result(self) -> Inventory:
        """The inventory; an :class:`InventoryError` (or other usage error) when it cannot be read."""
        if self._error is not None:
            raise self._error
        child, self._child = self._child, None
        if child is not None:
            return _parse(self._sources, self._cache_file, self._fingerprint, child)
        return _load(self._sources, self._cache_file, self._fingerprint)

    def cancel(self) -> None:
        """The caller will not ask for the result (it failed first): a parse under way is stopped."""
        child, self._child = self._child, None
        if child is not None:
            child.stop()


def _load(sources: list[str], cache_file: Path | None, fingerprint: str) -> Inventory:
    if cache_file is not None:
        with gc_paused():  # a large fleet's cached parse is millions of objects, all kept
            cached = _read_cache(cache_file, fingerprint)
            if isinstance(cached, _CachedInventory):
                return _from_cache(sources, cached)
            if cached is not None:
                try:
                    return _from_doc(sources, cached, from_cache=True)
                except (KeyError, TypeError, ValueError, AttributeError):
                    pass  # a damaged entry with the right key: parse again (and overwrite it)
    return _parse(sources, cache_file, fingerprint, _ParseChild.start(sources, cache_file, fingerprint))


def _parse(sources: list[str], cache_file: Path | None, fingerprint: str,
           child: _ParseChild | None) -> Inventory:
    """The child's parse; Ansible's in this process without a child, or when it gave none."""
    parsed = child.collect(sources, cache_file, fingerprint) if child is not None else None
    if parsed is not None:
        return parsed
    with gc_paused():
        doc = _parse_with_ansible(sources)
    _cache_parse(sources, cache_file, fingerprint, doc)
    return _from_doc(sources, doc)


def _cache_parse(sources: Sequence[str], cache_file: Path | None, fingerprint: str,
                 doc: dict[str, Any]) -> str | None:
    """Write a fresh parse to the cache; the text written (None: not cacheable, changed meanwhile, or
    the cache directory not writable)."""
    # Files that changed while Ansible read them would be cached under the old key: re-check.
    if cache_file is None or _fingerprint(sources) != fingerprint:
        return None
    text = _cache_text(doc, fingerprint)
    return text if write_cache_file(cache_file, text) else None


_FINGERPRINT_AT_END = re.compile(rb'"fingerprint":"([0-9a-f]+)"\}\s*$')


def _cached_fingerprint(cache_file: Path) -> str | None:
    """The key the cache entry was written under, from its last bytes (the whole entry is read only
    when it is used): enough to know that a parse is needed."""
    try:
        with open(cache_file, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 200))
            tail = fh.read()
    except OSError:
        return None
    found = _FINGERPRINT_AT_END.search(tail)
    return found.group(1).decode() if found else None


# --- the cold parse in a child process -------------------------------------------------------------


# The child's answer: a kind (C: read the cache entry written, D: the parse follows as the cache's JSON,
# E: an InventoryError's message follows) and the length of what follows.
_HEAD = struct.Struct("=cQ")


class _ParseChild:
    """A parse in a forked child, which writes the cache entry and tells the command to read it (a
    parse it cannot cache it sends whole, as the cache's JSON).

    Why: Ansible's inventory objects are cyclic, so only a full collection frees them, and fleetctl
    freezes the collector after big builds (``gc_freeze``): they would stay for the whole command,
    under the fleet report built next (after a plain 100,000-host parse the command held 557 MB,
    against 163 MB read from the cache). In a child they end with it.
    """

    def __init__(self, pid: int, answer_fd: int) -> None:
        self.pid, self.answer_fd = pid, answer_fd

    @classmethod
    def start(cls, sources: Sequence[str], cache_file: Path | None, fingerprint: str) -> _ParseChild | None:
        """None: parse in this process instead: switched off, no ``fork``, or other threads running
        (a fork copies none of them, and a lock one of them holds would stay locked in the child)."""
        if not enabled("parse_apart") or not hasattr(os, "fork") or threading.active_count() > 1:
            return None
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # else the child would write what they hold again
            with contextlib.suppress(Exception):
                stream.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _parse_as_child(sources, cache_file, fingerprint, write_end, parent)  # never returns
        os.close(write_end)
        return cls(pid, read_end)

    def collect(self, sources: Sequence[str], cache_file: Path | None, fingerprint: str) -> Inventory | None:
        """The inventory; an :class:`InventoryError` the child met, raised here with its message;
        None when the child died without an answer (the in-process parse then gives the real error)
        or the cache entry it wrote is gone or replaced."""
        try:
            with os.fdopen(self.answer_fd, "rb") as answer_in:
                head = answer_in.read(_HEAD.size)
                kind, size = _HEAD.unpack(head) if len(head) == _HEAD.size else (b"", 0)
                body = bytearray(size)  # read into one buffer of the size sent: no growing, no copy
                view, got = memoryview(body), 0
                while got < size and (n := answer_in.readinto(view[got:])):
                    got += n
                view.release()
        except BaseException:  # Ctrl-C, most likely: the child goes too
            self._end()
            raise
        try:
            if got != size:
                return None
            if kind == b"E":
                raise InventoryError(body.decode(errors="replace"))
            with gc_paused():
                if kind == b"C" and cache_file is not None:  # read as on a warm start: the same memory
                    doc = _read_cache(cache_file, fingerprint)
                elif kind == b"D":
                    doc = _decode_cache(body, fingerprint)
                else:
                    return None
                if isinstance(doc, _CachedInventory):
                    return _from_cache(sources, doc, from_cache=False)
                return None if doc is None else _from_doc(sources, doc)
        finally:
            self._reap()  # after the decoding: the child's memory is torn down meanwhile

    def stop(self) -> None:
        os.close(self.answer_fd)
        self._end()

    def _end(self) -> None:
        """SIGTERM, which the child turns into SystemExit: its exit handlers remove Ansible's
        temporary directory and a half-written cache file. SIGKILL if it is not gone in 2 s."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGTERM)
        for _ in range(200):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                    time.sleep(0.01)
                    continue
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored (inherited): the kernel reaped it
            os.waitpid(self.pid, 0)


def _parse_as_child(sources: Sequence[str], cache_file: Path | None, fingerprint: str,
                    answer_fd: int, parent: int) -> None:
    """The forked child's whole life: it never returns, never runs the parent's exit handlers."""
    # Its own exit handlers it runs (Ansible's remove the temporary directory it makes), not the
    # parent's; nor the parent's signal handlers (one may record a run as interrupted). Ctrl-C is the
    # parent's to judge (provision's handler only notes it): the parent ends the child with SIGTERM,
    # here a SystemExit, so that the handlers run; and so does the parent's death, where Linux says.
    atexit._clear()  # private, but in every CPython 3: no public way to drop inherited handlers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    code = 1
    try:
        _end_with_parent(parent)
        text = ""
        try:
            with gc_paused():
                doc = _parse_with_ansible(sources)
            if _cache_parse(sources, cache_file, fingerprint, doc) is not None:
                kind, size = b"C", 0  # the parent reads the cache entry just written
            else:
                text = _cache_text(doc, fingerprint)
                kind, size = b"D", len(text)  # json.dumps writes ASCII: as many bytes as characters
        except InventoryError as exc:
            message = str(exc).encode()
            kind, size = b"E", len(message)
        with os.fdopen(answer_fd, "wb") as out:
            out.write(_HEAD.pack(kind, size))
            if kind == b"E":
                out.write(message)
            for start in range(0, len(text), 1 << 20):  # never a second whole copy, as bytes
                out.write(text[start:start + (1 << 20)].encode())
        code = 0
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):  # what the child wrote itself (Ansible's debug output)
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _end_with_parent(parent: int) -> None:
    """Linux: SIGTERM when the parent dies (killed, it cannot end the child itself)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call above
        raise SystemExit(1)


def _is_host_list(source: str) -> bool:
    # Ansible's host_list plugin: "a,b," on the command line; never a path.
    return "," in source and not os.path.exists(source)


def _cacheable(source: str) -> bool:
    if _is_host_list(source):
        return False
    for path in _source_files(source):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 and not _in_vars_dir(path):
            return False  # an executable inventory script: its output is not a function of mtime
        if path.endswith((".yml", ".yaml")) and not _in_vars_dir(path) and _is_plugin_config(path):
            return False
    return True


def _in_vars_dir(path: str) -> bool:
    parts = Path(path).parts
    return "group_vars" in parts or "host_vars" in parts


def _is_plugin_config(path: str) -> bool:
    # An inventory plugin config (``plugin: aws_ec2`` ...) describes a dynamic source: a line that
    # starts with ``plugin:`` (any line break, as text mode reads them). One byte search: a 100,000-host
    # YAML inventory is read on every command, line by line it was 3 % of a cached load.
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return data.startswith(b"plugin:") or b"\nplugin:" in data or b"\rplugin:" in data


def _source_files(source: str) -> Iterator[str]:
    """Every file and directory the inventory ``source`` may be read from, with its vars dirs."""
    roots = [source]
    base = source if os.path.isdir(source) else os.path.dirname(source)
    if not os.path.isdir(source):
        roots += [os.path.join(base, "group_vars"), os.path.join(base, "host_vars")]
    for root in roots:
        if not os.path.exists(root):
            yield root  # its appearance must change the key
            continue
        yield root
        if os.path.isdir(root):
            seen: set[tuple[int, int]] = set()
            # followlinks: Ansible reads group_vars through symlinked directories, so their files count
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                st = os.stat(dirpath)
                if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                    dirnames[:] = []
                    continue
                seen.add((st.st_dev, st.st_ino))
                dirnames.sort()
                for name in sorted(dirnames):
                    yield os.path.join(dirpath, name)
                for name in sorted(filenames):
                    yield os.path.join(dirpath, name)


def _fingerprint(sources: Sequence[str]) -> str:
    h = hashlib.sha256(f"fleetctl-inventory/{CACHE_FORMAT}".encode())
    cfg = _ansible_cfg_path()
    for path in [*([cfg] if cfg else []), *(f for s in sources for f in _source_files(s))]:
        try:
            st = os.stat(path)
            # ctime and inode too: an edit within the mtime's granularity, or a file (or symlink
            # target) swapped for one with a preserved mtime, must still change the key.
            h.update(f"{path}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\0{st.st_size}"
                     f"\0{st.st_mode}\n".encode())
        except OSError:
            h.update(f"{path}\0-\n".encode())
    for var in sorted(v for v in os.environ if v.startswith("ANSIBLE_")):  # any may change the parse
        h.update(f"{var}={os.environ[var]}\n".encode())
    return h.hexdigest()


def cache_dir_default() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleetctl"


def _cache_file(sources: Sequence[str], cache_dir: Path | None) -> Path:
    digest = hashlib.sha256("\0".join(sources).encode()).hexdigest()[:24]
    return (cache_dir or cache_dir_default()) / f"inventory-{digest}.json"


class LazyVars(Mapping[str, Any]):
    """A host's inventory variables as the cache holds them, decoded on first use: most commands
    read them for a few hosts or none (``health`` reads none), and a group's variables are
    repeated on each of its hosts, so decoding every host's up front was most of a cache read."""

    __slots__ = ("_raw", "_vars")

    def __init__(self, raw: msgspec.Raw) -> None:
        self._raw = raw
        self._vars: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._vars is None:  # two threads at once decode it twice, to the same value
            self._vars = msgspec.json.decode(self._raw, type=dict[str, Any])
        return self._vars

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


class _CachedToken(msgspec.Struct):
    vault: str | None = None
    plain: str | None = None


class _CachedHost(msgspec.Struct):
    name: str
    address: str
    groups: list[str]
    vars: msgspec.Raw
    port: int
    token: _CachedToken | None
    expected_chips: int | None


class _CachedGroup(msgspec.Struct):
    hosts: list[str]
    children: list[str]
    all_hosts: list[str]


class _CachedInventory(msgspec.Struct):
    hosts: list[_CachedHost]
    groups: dict[str, _CachedGroup]
    fingerprint: str


def _read_cache(path: Path, fingerprint: str) -> _CachedInventory | dict[str, Any] | None:
    """The cached parse (None: absent, damaged or stale): typed, or as plain JSON when it holds
    what only Python's JSON reads (``NaN``, ``Infinity``: ``.inf`` in an inventory variable)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return _decode_cache(raw, fingerprint)


def _decode_cache(raw: bytes | bytearray, fingerprint: str) -> _CachedInventory | dict[str, Any] | None:
    try:
        doc = msgspec.json.decode(raw, type=_CachedInventory)
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError:
        try:
            plain = json.loads(raw)
        except ValueError:
            return None
        return plain if isinstance(plain, dict) and plain.get("fingerprint") == fingerprint else None
    # Each host's vars must be an object (LazyVars decodes them later): else the cache is damaged.
    if doc.fingerprint != fingerprint or any(not h.vars or memoryview(h.vars)[0] != _OPEN_BRACE
                                             for h in doc.hosts):
        return None
    return doc


_OPEN_BRACE = ord("{")


def _from_cache(sources: Sequence[str], doc: _CachedInventory, *, from_cache: bool = True) -> Inventory:
    label = ",".join(sources)
    hosts: dict[str, Host] = {}
    new = object.__new__
    for h in doc.hosts:
        token = h.token
        secret = None if token is None else Secret(vaulted=token.vault, plain=token.plain, source=label)
        # Host's own fields, set as its __init__ would (a frozen dataclass's __init__ sets each through
        # object.__setattr__: half of a 100,000-host cached load). Host has no __post_init__.
        host = new(Host)
        host.__dict__.update(name=h.name, address=h.address, groups=tuple(h.groups), vars=LazyVars(h.vars),
                             agent_port=h.port, agent_token=secret, expected_chips=h.expected_chips)
        hosts[h.name] = host
    groups = {name: _GroupData(tuple(g.hosts), tuple(g.children), tuple(g.all_hosts))
              for name, g in doc.groups.items()}
    return Inventory(sources=tuple(sources), hosts=hosts, groups=groups, from_cache=from_cache)


def _cache_text(doc: dict[str, Any], fingerprint: str) -> str:
    # dumps, not dump: json.dump encodes in pure Python, dumps in C.
    return json.dumps({**doc, "fingerprint": fingerprint}, separators=(",", ":"))


def _from_doc(sources: Sequence[str], doc: dict[str, Any], *, from_cache: bool = False) -> Inventory:
    label = ",".join(sources)
    hosts: dict[str, Host] = {}
    for h in doc["hosts"]:
        token = h.get("token")
        secret = None
        if isinstance(token, dict):
            secret = Secret(vaulted=token.get("vault"), plain=token.get("plain"), source=label)
        hosts[h["name"]] = Host(
            name=h["name"], address=h["address"], groups=tuple(h["groups"]), vars=h["vars"],
            agent_port=h["port"], agent_token=secret, expected_chips=h["expected_chips"],
        )
    groups = {
        name: _GroupData(tuple(g["hosts"]), tuple(g["children"]), tuple(g["all_hosts"]))
        for name, g in doc["groups"].items()
    }
    return Inventory(sources=tuple(sources), hosts=hosts, groups=groups, from_cache=from_cache)


# --- Ansible -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _captured_ansible_warnings() -> Iterator[list[tuple[str, BaseException | None]]]:
    """Collect what Ansible would print as warnings (we turn them into one error line)."""
    from ansible.utils.display import Display

    display = Display()  # a singleton
    got: list[tuple[str, BaseException | None]] = []

    def warning(msg: str, *args: Any, **kwargs: Any) -> None:
        got.append((str(msg), None))

    def error_as_warning(msg: str | None, exception: BaseException, **kwargs: Any) -> None:
        got.append((str(msg or ""), exception))

    saved = {k: display.__dict__.get(k) for k in ("warning", "error_as_warning")}
    display.warning = warning
    display.error_as_warning = error_as_warning
    try:
        yield got
    finally:
        for k, v in saved.items():
            if v is None:
                display.__dict__.pop(k, None)
            else:
                display.__dict__[k] = v


@contextlib.contextmanager
def _ansible_setting(name: str, value: Any) -> Iterator[None]:
    """Override one of ansible.constants for the duration (Ansible reads them at call time)."""
    from ansible import constants as C

    saved = getattr(C, name)
    setattr(C, name, value)
    try:
        yield
    finally:
        setattr(C, name, saved)


def _failure_message(source: str, got: list[tuple[str, BaseException | None]]) -> str:
    """The most useful parse failure: one with a line number, else the plugin the file suits."""
    ext = os.path.splitext(source)[1].lower()
    prefer = ["yaml", "auto"] if ext in (".yml", ".yaml", ".json") else ["ini", "script", "yaml", "auto"]
    best: tuple[tuple[int, int], str] | None = None
    for msg, exc in got:
        if exc is None:
            continue
        plugin_m = re.search(r"with '([^']+)' plugin", msg)
        plugin = plugin_m.group(1) if plugin_m else ""
        where, text = source, ""
        has_line = False
        chain: BaseException | None = exc
        while chain is not None:
            origin = getattr(chain, "obj", None)
            path, line = getattr(origin, "path", None), getattr(origin, "line_num", None)
            if path and line:
                col = getattr(origin, "col_num", None)
                where, has_line = f"{path}:{line}" + (f":{col}" if col else ""), True
            if not text:
                text = _first_line(getattr(chain, "message", None) or str(chain))
            chain = chain.__cause__ or chain.__context__  # vars-file errors chain by context
        rank = (0 if has_line else 1, prefer.index(plugin) if plugin in prefer else len(prefer))
        if best is None or rank < best[0]:
            best = (rank, f"{where}: {text}")
    if best is not None:
        return best[1]
    warnings = [m for m, _ in got if m]
    return f"{source}: " + (_first_line(warnings[-1]) if warnings else "cannot parse the inventory")


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


def _init_plugin_loader() -> None:
    """What Ansible's CLIs do first: without it, plugins named by collection (``plugin:
    ansible.builtin.constructed``, ``amazon.aws.aws_ec2``) are "unknown" to the inventory."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    if AnsibleCollectionConfig.collection_finder is None:
        init_plugin_loader()


def _forget_vars_files_seen() -> None:
    """Ansible's group_vars/host_vars plugin remembers, per process, which vars files exist (an
    Ansible CLI parses once). A second parse in this process (the library API, a long-running
    caller) must see files added or removed since, or it would cache stale vars under a new key."""
    from ansible.plugins.vars import host_group_vars

    for remembered in (getattr(host_group_vars, "FOUND", None), getattr(host_group_vars, "NAK", None)):
        if remembered is not None:
            remembered.clear()


def _parse_with_ansible(sources: Sequence[str], libyaml: bool = True) -> dict[str, Any]:
    """``libyaml``: as :func:`fleetctl.speedups.inventory_loader`; when the source Ansible rejects is
    a file libyaml read, the inventory is parsed again by Ansible's own loader, whose values say on
    which line the fault is."""
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager

    _init_plugin_loader()
    _forget_vars_files_seen()

    label = ",".join(sources)
    loader = inventory_loader(libyaml=libyaml)
    # Any source Ansible cannot parse is an error (by default it warns and goes on without it).
    with _ansible_setting("INVENTORY_ANY_UNPARSED_IS_FAILED", True):
        with _captured_ansible_warnings() as got:
            try:
                manager = InventoryManager(loader=loader, sources=list(sources))
            except AnsibleError as exc:
                failed = re.search(r"inventory source (.+)$", _first_line(str(exc)))
                if failed and os.path.abspath(failed.group(1)) in getattr(loader, "read_by_libyaml", ()):
                    # Only that file again: a failing script or cloud plugin source is not run twice.
                    return _parse_with_ansible(sources, libyaml=False)
                raise InventoryError(_failure_message(failed.group(1) if failed else label, got)) from None
            host_vars = host_vars_reader(loader, manager)
            templar = HostTemplar(loader)
            copies: dict[int, tuple[Any, Any]] = {}
            hosts = [_host_doc_or_error(h, host_vars, templar, label, copies)
                     for h in manager.get_hosts("all")]
            groups = {
                name: {
                    "hosts": [h.name for h in g.hosts],
                    "children": [c.name for c in g.child_groups],
                    "all_hosts": [h.name for h in g.get_hosts()],
                }
                for name, g in manager.groups.items()
            }
    return {"hosts": hosts, "groups": groups}


def _host_doc_or_error(host: Any, host_vars: Callable[[Any], dict[str, Any]], templar: HostTemplar,
                       label: str, copies: dict[int, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """:func:`_host_doc`, with whatever Ansible raises while reading the host's vars (a broken
    group_vars/host_vars file, a vault value it cannot open) turned into one line naming the file."""
    from ansible.errors import AnsibleError

    try:
        return _host_doc(host, host_vars(host), templar, label, copies)
    except InventoryError:
        raise
    except AnsibleError as exc:
        where = _failure_message(f"{label}: host {host.name}", [("", exc)])
        if "vault" in where.lower():  # Ansible's words assume its own CLI, which has the password
            where += f" (fleetctl opens the vault for {TOKEN_VAR} only)"
        raise InventoryError(where) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a vault value used where no vault is open
        raise InventoryError(f"{label}: host {host.name}: cannot read its variables: "
                             f"{_first_line(str(exc)) or type(exc).__name__} (a vault-encrypted value "
                             f"other than {TOKEN_VAR}?)") from None


_TEMPLATE_MARKS = ("{{", "{%", "{#")  # what makes Ansible render a string
# "{{ name }}" or "{{ name | default('') }}" (inventory/example's form): another variable's value.
_INDIRECTION = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\|\s*default\(\s*(?:''|\"\")\s*\)\s*)?\}\}")


def _host_doc(host: Any, raw: dict[str, Any], templar: HostTemplar, label: str,
              copies: dict[int, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """One host's entry of the parsed inventory. ``copies``: plain copies of list and mapping values,
    by the value's identity, shared by the hosts of one parse (a group's variables are the same
    objects on each of its hosts: copied once, not once per host)."""
    name = str(host.name)

    def templated(key: str) -> Any:
        value = raw.get(key)
        if _ciphertext(value) is not None and key != TOKEN_VAR:
            raise InventoryError(f"{label}: host {name}: {key} is vault-encrypted: fleetctl opens the vault "
                                 f"for {TOKEN_VAR} only (and caches what it reads here)")
        if isinstance(value, str) and any(mark in value for mark in _TEMPLATE_MARKS):
            try:
                value = templar.render(value, raw)
            except Exception as exc:  # noqa: BLE001 - any template failure is a config error
                raise InventoryError(f"{label}: host {name}: {key}: {_first_line(str(exc))}") from None
        return value

    if "fleet_expected_chips" in raw:
        # Renamed to the fleet_agent role's own variable; silently ignoring it would drop the check.
        raise InventoryError(f"{label}: host {name}: fleet_expected_chips was renamed {EXPECTED_CHIPS_VAR}")
    address = templated("ansible_host") or name
    if not isinstance(address, str):
        kind = ("a mapping" if isinstance(address, Mapping) else "a list" if isinstance(address, list)
                else type(address).__name__)
        raise InventoryError(f"{label}: host {name}: ansible_host: expected a string, got {kind}")
    if address.startswith("[") and address.endswith("]"):  # an IPv6 address written as in a URL
        address = address[1:-1]
    port = _int_var(templated(PORT_VAR), f"{label}: host {name}: {PORT_VAR}", DEFAULT_PORT, 1, 65535)
    chips = _int_var(templated(EXPECTED_CHIPS_VAR), f"{label}: host {name}: {EXPECTED_CHIPS_VAR}",
                     None, 0, 1024)
    token_raw = raw.get(TOKEN_VAR)
    for _ in range(8):  # fleet_agent_token: "{{ vault_fleet_agent_token }}", Ansible's vault idiom
        ref = _INDIRECTION.fullmatch(token_raw.strip()) if isinstance(token_raw, str) else None
        if ref is None:
            break
        if ref.group(1) not in raw:
            if ref.group(2):  # undefined, with default(''): no token
                token_raw = ""
            break
        token_raw = raw[ref.group(1)]
    token: dict[str, str] | None = None
    if token_raw is not None:
        cipher = _ciphertext(token_raw)
        if cipher is not None:
            token = {"vault": cipher}
        else:
            token_value = templated(TOKEN_VAR)
            if not isinstance(token_value, str):
                raise InventoryError(f"{label}: host {name}: {TOKEN_VAR}: expected a string")
            # Empty means "no token", as in the fleet_agent role: the agent then serves without one.
            token = {"plain": token_value} if token_value else None
    def plain(key: str, value: Any) -> Any:
        if _rendered(key) and _ciphertext(value) is None:
            return _plain(templated(key))
        if copies is None or not isinstance(value, (Mapping, list, tuple, set)):
            return _plain(value)
        hit = copies.get(id(value))
        if hit is None or hit[0] is not value:  # the value is held in the entry: its id stays its own
            hit = copies[id(value)] = (value, _plain(value))
        return hit[1]

    plain_vars = {str(k): plain(str(k), v) for k, v in raw.items() if k not in _MAGIC_VARS and k != TOKEN_VAR}
    return {
        "name": name,
        "address": str(address),  # plain str: Ansible's are a tagged subclass an encoder may refuse
        "groups": [str(g.name) for g in host.get_groups() if g.name not in ("all", "ungrouped")],
        "vars": plain_vars,
        "port": port,
        "token": token,
        "expected_chips": chips,
    }


def _rendered(key: str) -> bool:
    return key in RENDERED_VARS or key.startswith(RENDERED_PREFIXES)


def _int_var(value: Any, where: str, default: int | None, lo: int, hi: int) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InventoryError(f"{where}: expected an integer, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else int(value)
    except ValueError:
        raise InventoryError(f"{where}: expected an integer, got {str(value)!r}") from None
    if not lo <= number <= hi:
        raise InventoryError(f"{where}: {number} is outside {lo}..{hi}")
    return number


def _ciphertext(value: Any) -> str | None:
    """The vault envelope of an encrypted value (EncryptedString, AnsibleVaultEncryptedUnicode)."""
    cipher = getattr(value, "_ciphertext", None)
    if isinstance(cipher, bytes):
        cipher = cipher.decode()
    return cipher if isinstance(cipher, str) else None


def _plain(value: Any) -> Any:
    """JSON-ready copy of an Ansible value (tagged str/int lose their tags; vault stays sealed)."""
    cipher = _ciphertext(value)
    if cipher is not None:
        return {_VAULT_KEY: cipher}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return str(value)


_vault_cache: dict[str, str] = {}
_vault_secrets: list[Any] | None = None  # set up once per process: Ansible refuses a second time


def _vault_decrypt(ciphertext: str, source: str) -> str:
    global _vault_secrets
    if ciphertext in _vault_cache:
        return _vault_cache[ciphertext]
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib

    try:
        if _vault_secrets is None:
            # The environment first: ansible.constants were fixed when ansible was first imported.
            password_file = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") or C.DEFAULT_VAULT_PASSWORD_FILE
            _vault_secrets = CLI.setup_vault_secrets(
                DataLoader(), vault_ids=list(C.DEFAULT_VAULT_IDENTITY_LIST),
                vault_password_files=[password_file] if password_file else [], ask_vault_pass=False,
                auto_prompt=False)  # never wait on a terminal
        if not _vault_secrets:
            raise InventoryError(f"{source}: {TOKEN_VAR} is vault-encrypted and no vault password is "
                                 "configured (ANSIBLE_VAULT_PASSWORD_FILE or ansible.cfg)")
        plain: str = VaultLib(_vault_secrets).decrypt(ciphertext.encode()).decode()
    except AnsibleError as exc:
        raise InventoryError(f"{source}: cannot decrypt {TOKEN_VAR}: {_first_line(str(exc))}") from None
    _vault_cache[ciphertext] = plain
    return plain


def _ansible_select(inventory: Inventory, pattern: str) -> list[str]:
    """Evaluate ``pattern`` with Ansible's own pattern code over the (cached) group structure."""
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    with _captured_ansible_warnings() as got, _ansible_setting("INVENTORY_UNPARSED_IS_FAILED", False):
        manager = InventoryManager(loader=DataLoader(), sources=[])  # empty: filled from the cache
        data = manager._inventory
        for name in inventory.groups:
            data.add_group(name)
        for name, g in inventory.groups.items():
            for child in g.children:
                data.add_child(name, child)
            for host in g.hosts:
                data.add_host(host, group=name)
        data.reconcile_inventory()
        got.clear()
        try:
            selected = manager.get_hosts(pattern)
        except AnsibleError as exc:
            raise InventoryError(f"{inventory.label}: pattern {pattern!r}: {_first_line(str(exc))}") from None
        except (IndexError, KeyError, ValueError, TypeError):  # Ansible's parser on e.g. "all:&"
            raise InventoryError(f"{inventory.label}: pattern {pattern!r}: not a host pattern") from None
    unmatched = [m.rsplit(":", 1)[-1].strip() for m, _ in got if "Could not match supplied host pattern" in m]
    if unmatched:
        hint = inventory.did_you_mean(unmatched[0].lstrip("&!")) if len(unmatched) == 1 else ""
        raise InventoryError(f"{inventory.label}: pattern {', '.join(map(repr, unmatched))} matches no host"
                             f"{hint}")
    return [h.name for h in selected if h.name in inventory.hosts]
