"""Where the state lives: a SQLite file, or a PostgreSQL URL a team shares.

``--db`` and ``FLEETCTL_DB`` reach the commands as a path (click converts them), and a path would
collapse the ``//`` of a URL. :class:`StateLocation` is that path type: for a file it is an ordinary
path; for ``postgresql://...`` or ``postgres://...`` it keeps the text as typed in :attr:`url`.

Credentials never show: ``str()`` (and so every message that names the database) gives a URL with
its password masked (``postgresql://user:***@host/db``). What lives beside a database file
(provision's run artifacts, found through ``parent``) goes to the local state directory for a URL:
each bastion keeps its own artifacts, the team shares the records.

Small and import-light: the CLI's option declarations import it on every start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PosixPath
from typing import Any, NoReturn
from urllib.parse import unquote

URL_SCHEMES = ("postgresql://", "postgres://")
ENV_VAR = "FLEETCTL_DB"
# What a child process (Ansible, the run's watchdog) inherits from fleetctl's environment masked:
# libpq reads a password from PGPASSWORD, and FLEETCTL_DB may hold one in its URL.
SECRET_ENV = ("PGPASSWORD",)
MASK = "***"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")


def is_url(text: str) -> bool:
    return text.startswith(URL_SCHEMES)


def _split(url: str) -> tuple[str, str | None, str] | None:
    """``(scheme://, userinfo or None, the rest)`` as libpq reads a URL, or ``None`` where libpq
    would refuse it or read it otherwise than it looks (the password would then show).

    libpq takes the credentials up to the first ``@`` before the first ``/``: a password may hold
    ``?`` or ``#`` unencoded (``urlsplit`` would cut it there), never ``@`` or ``/``; and it refuses
    malformed percent-encoding anywhere. A database name with an ``@`` must encode it (``%40``)."""
    scheme = next((s for s in URL_SCHEMES if url.startswith(s)), None)
    if scheme is None or _BAD_PERCENT.search(url):
        return None
    rest = url[len(scheme):]
    cut = re.search(r"[@/]", rest)
    if cut is None or cut.group(0) == "/":
        userinfo, after = None, rest
    else:
        userinfo, after = rest[:cut.start()], rest[cut.end():]
    if "@" in after.partition("?")[0]:
        # an unencoded @ (or /) in the password: libpq would read a piece of it as the host,
        # the port or the database name
        return None
    return scheme, userinfo, after


def valid(url: str) -> bool:
    """Whether ``url`` is a URL libpq reads as it looks (percent-encoding, one ``@``)."""
    return _split(url) is not None


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user part and a ``password=`` parameter);
    ``scheme://***`` for a URL libpq would not read as it looks (nothing of it can be trusted apart)."""
    parts = _split(url)
    if parts is None:
        return url.split("//", 1)[0] + "//" + MASK
    scheme, userinfo, after = parts
    auth = ""
    if userinfo is not None:
        user, sep, _password = userinfo.partition(":")
        auth = f"{user}:{MASK}@" if sep else f"{userinfo}@"
    head, sep, query = after.partition("?")
    if sep:
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(f"{k}={MASK}" if unquote(k) == "password" and eq else f"{k}{eq}{v}"
                         for k, eq, v in pairs)
    return f"{scheme}{auth}{head}{sep}{query}"


def secrets_of(url: str) -> list[str]:
    """Every form of the password ``url`` holds that a message could echo (as typed, percent-decoded,
    from the user part or a ``password=`` parameter), longest first."""
    found: set[str] = set()
    scheme = next((s for s in URL_SCHEMES if url.startswith(s)), "")
    rest = url[len(scheme):]
    # Both readings of the user part, libpq's (first @) and a URL parser's (last @), and the query.
    for userinfo in (rest.split("/", 1)[0].partition("@")[0] if "@" in rest.split("/", 1)[0] else "",
                     rest.rpartition("@")[0]):
        found.add(userinfo.partition(":")[2])
    for pair in rest.partition("?")[2].split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == "password":
            found.add(value)
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """``text`` (a message that may quote ``url`` or its password) with the password masked, and
    the URL shown as :func:`mask` shows it. The one redaction every state-database message gets."""
    text = text.replace(url, mask(url))
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The overrides a child process's environment needs so that no secret of fleetctl's reaches it
    (nor a file that records it, as ansible-runner's ``command`` artifact): ``FLEETCTL_DB`` with its
    password masked, :data:`SECRET_ENV` blanked. Masked, not removed: ansible-runner can only add to
    the environment it copies, and a child that reads a masked value fails instead of silently
    using another database."""
    environ = os.environ if environ is None else environ
    out = {name: MASK for name in SECRET_ENV if environ.get(name)}
    value = environ.get(ENV_VAR, "")
    if is_url(value):
        out[ENV_VAR] = mask(value)
    return out


def local_state_dir() -> Path:
    """fleetctl's directory on this machine: ``$XDG_STATE_HOME/fleetctl`` (~/.local/state/fleetctl)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleetctl"


class NotAFilePath(TypeError):
    """A PostgreSQL URL used as a file path (joined, suffixed, split, converted to a plain path)."""


# What a URL location answers besides the protocol names (dunders: probes such as copy's
# __deepcopy__ must get their AttributeError; the path operators among them are overridden).
_URL_ATTRIBUTES = frozenset({"url", "_url", "parent", "_refuse"})


class StateLocation(PosixPath):
    """A ``--db`` value: a file path, or a PostgreSQL URL kept whole in :attr:`url`.

    A URL is not a path: what ``Path`` would derive from it (``Path(loc)``, ``loc / "x"``,
    ``with_suffix``, ``parts``, ``os.fspath``) would carry the password and lose the ``//``, and
    might open a SQLite file named after the URL. So a URL location answers only :attr:`url`,
    ``str()`` (masked), ``parent`` (this machine's state directory) and equality; everything else
    raises :class:`NotAFilePath`."""

    _url: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> StateLocation:
        self = super().__new__(cls, *args, **kwargs)
        if len(args) == 1 and isinstance(args[0], str) and is_url(args[0]):
            self._url = args[0]
        return self

    def __getattribute__(self, name: str) -> Any:
        # Path(loc) reads the parts (_parts, _raw_paths), loc.with_suffix() and the rest go
        # through here too: for a URL, only what cannot leak or mislead.
        if (name not in _URL_ATTRIBUTES and not (name.startswith("__") and name.endswith("__"))
                and object.__getattribute__(self, "_url") is not None):
            object.__getattribute__(self, "_refuse")(name)
        return super().__getattribute__(name)

    def _refuse(self, what: str) -> NoReturn:
        raise NotAFilePath(f"state database {self} is a PostgreSQL URL, not a file path "
                           f"({what.strip('_')} refused)")

    @property
    def url(self) -> str | None:
        """The PostgreSQL URL as typed (password included: for connecting only), else ``None``."""
        return self._url

    def __str__(self) -> str:
        return mask(self._url) if self._url else super().__str__()

    def __repr__(self) -> str:
        return f"StateLocation({str(self)!r})"

    def __fspath__(self) -> str:
        if self._url is not None:
            self._refuse("os.fspath")
        return super().__fspath__()

    def __bytes__(self) -> bytes:
        if self._url is not None:
            self._refuse("bytes")
        return super().__bytes__()

    def __truediv__(self, key: Any) -> StateLocation:
        if self._url is not None:
            self._refuse("joining a path")
        return super().__truediv__(key)

    def __rtruediv__(self, key: Any) -> StateLocation:
        if self._url is not None:
            self._refuse("joining a path")
        return super().__rtruediv__(key)

    def __eq__(self, other: object) -> bool:
        if self._url is not None or (isinstance(other, StateLocation) and other._url is not None):
            return isinstance(other, StateLocation) and other._url == self._url
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self._url) if self._url is not None else super().__hash__()

    def __reduce__(self) -> str | tuple[Any, ...]:
        return (StateLocation, (self._url,)) if self._url is not None else super().__reduce__()

    @property
    def parent(self) -> StateLocation:
        return StateLocation(local_state_dir()) if self._url else super().parent


def location(value: str | os.PathLike[str]) -> Path:
    """A path, or a :class:`StateLocation` holding a URL, from what a person or the environment gave."""
    if isinstance(value, StateLocation):
        return value
    text = os.fspath(value)
    return StateLocation(text) if is_url(text) else Path(text)


def url_of(path: object) -> str | None:
    """The PostgreSQL URL ``path`` names (a :class:`StateLocation` or a URL string), else ``None``."""
    if isinstance(path, StateLocation):
        return path.url
    if isinstance(path, str) and is_url(path):
        return path
    return None
