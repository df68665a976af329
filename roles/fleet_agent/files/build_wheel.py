"""Build the agent's wheel on the controller, or reuse the one built from the same source.

The cache is keyed by a SHA-256 of the source tree (pyproject.toml, README, fleet_agent/**; build
outputs and caches left out), so an unchanged agents/ costs no build and gives the same file: the
copy to the hosts stays unchanged and the agent is not restarted. Run by tasks/build.yml:

    python build_wheel.py SOURCE_DIR CACHE_DIR

Prints one JSON object: {"wheel": PATH, "key": HEX, "built": BOOL}. Exit 2 on a bad source dir,
1 when pip fails; a failed or concurrent build never leaves a half-written cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Build outputs and tool caches: not inputs of the wheel (pip writes build/ and *.egg-info itself).
SKIP_DIRS = frozenset({"build", "dist", "__pycache__", ".git", ".mypy_cache", ".pytest_cache",
                       ".ruff_cache", ".tox", ".venv"})
SKIP_SUFFIXES = (".pyc", ".pyo")
# Entries kept in the cache (most recently used first); older ones are removed after a build.
KEEP = 5
# A fixed timestamp for the files inside the wheel: the same source gives the same bytes.
SOURCE_DATE_EPOCH = "315532800"
# Cache entries are named by their key; nothing else in the cache directory is ever removed.
ENTRY_NAME = re.compile(r"[0-9a-f]{64}")


def source_key(source: Path) -> str:
    """SHA-256 over every input file's relative path and content, in a fixed order."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(SKIP_SUFFIXES):
                continue
            path = Path(root, name)
            rel = path.relative_to(source).as_posix()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _cached_wheel(entry: Path) -> Path | None:
    wheels = sorted(entry.glob("fleetctl_agent-*.whl"))
    return wheels[0] if len(wheels) == 1 else None


def _build(source: Path, cache: Path, entry: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache))
    try:
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--wheel-dir", str(tmp), str(source)],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"build_wheel.py: pip wheel {source} failed ({proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        if _cached_wheel(tmp) is None:
            raise SystemExit(f"build_wheel.py: pip wheel {source} left no single fleetctl_agent wheel")
        try:
            tmp.rename(entry)  # atomic: the entry appears complete or not at all
        except OSError:
            if _cached_wheel(entry) is None:
                # Not a concurrent build of the same source but a broken entry (no single
                # wheel): replace it rather than fail on it forever.
                shutil.rmtree(entry, ignore_errors=True)
                tmp.rename(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wheel = _cached_wheel(entry)
    assert wheel is not None
    return wheel


def _prune(cache: Path, keep: Path) -> None:
    entries = sorted((p for p in cache.iterdir() if p.is_dir() and ENTRY_NAME.fullmatch(p.name)),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: build_wheel.py SOURCE_DIR CACHE_DIR", file=sys.stderr)
        return 2
    source = Path(argv[0]).expanduser().resolve()
    cache = Path(argv[1]).expanduser()
    if not (source / "pyproject.toml").is_file():
        print(f"build_wheel.py: {source}: no pyproject.toml (fleet_agent_source_dir)", file=sys.stderr)
        return 2
    cache.mkdir(parents=True, exist_ok=True)
    key = source_key(source)
    entry = cache / key
    wheel = _cached_wheel(entry)
    built = wheel is None
    if wheel is None:
        try:
            wheel = _build(source, cache, entry)
            _prune(cache, entry)
        except OSError as exc:
            print(f"build_wheel.py: {cache}: {exc.strerror or exc} (fleet_agent_wheel_cache_dir)",
                  file=sys.stderr)
            return 1
    else:
        os.utime(entry)  # most recently used: kept by the next prune
    # The wheel's SHA-1 is what the hosts' copy holds: the role skips the copy when they match.
    sha1 = hashlib.sha1(wheel.read_bytes(), usedforsecurity=False).hexdigest()
    print(json.dumps({"wheel": str(wheel), "key": key, "built": built, "sha1": sha1}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
