"""Replacing a file so that a reader sees the old one or the new one, never half of either: the
XID history, an NVML recording, sim-fleet's inventory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], text: str, *, mode: int = 0o600,
                 sync_dir: bool = False) -> None:
    """Write ``text`` to a temporary file beside ``path`` (``mode``), fsync it and rename it over
    ``path``; with ``sync_dir`` the directory is fsync'd too, so the rename survives a crash.
    OSError when any step fails, the temporary file removed."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
