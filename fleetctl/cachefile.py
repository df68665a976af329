"""Best-effort writes into fleetctl's cache directory (the inventory cache)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_cache_file(path: Path, text: str) -> bool:
    """Atomic (temp file + rename) and private (0600 in a 0700 directory: an inventory cache may
    hold plain-text tokens). A read-only or missing cache directory costs speed, not correctness:
    False, and nothing written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
