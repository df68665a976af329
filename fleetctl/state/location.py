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
from pathlib import Path, PosixPath
from typing import Any

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(text: str) -> bool:
    return text.startswith(URL_SCHEMES)


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user part and a ``password=`` parameter)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:***@{hosts}" if sep else netloc
        query = parts.query
        if "password" in query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
        if (netloc, query) == (parts.netloc, parts.query):
            return url
        # by hand: urlunsplit drops the empty host of postgresql:///db (a Unix socket)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + (
            f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:  # unparsable: show only the scheme, never the rest
        return url.split("//", 1)[0] + "//***"


def local_state_dir() -> Path:
    """fleetctl's directory on this machine: ``$XDG_STATE_HOME/fleetctl`` (~/.local/state/fleetctl)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleetctl"


class StateLocation(PosixPath):
    """A ``--db`` value: a file path, or a PostgreSQL URL kept whole in :attr:`url`."""

    _url: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> StateLocation:
        self = super().__new__(cls, *args, **kwargs)
        if len(args) == 1 and isinstance(args[0], str) and is_url(args[0]):
            self._url = args[0]
        return self

    @property
    def url(self) -> str | None:
        """The PostgreSQL URL as typed (password included: for connecting only), else ``None``."""
        return self._url

    def __str__(self) -> str:
        return mask(self._url) if self._url else super().__str__()

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
