#!/usr/bin/python
"""Stop a canceled run's Ansible async jobs on the host this runs on: an Ansible module (WANT_JSON).

fleetctl copies this file into its internal cleanup playbook's ``library/`` (see
``fleetctl.async_jobs``); Ansible runs it on each host of a canceled run with the host's own
Python. Standard library only, Linux ``/proc`` only: nothing of fleetctl is installed on hosts.

A job's processes are found two ways, because a job started just before the cancel may run
before any event named it:
- the marker: every process async_wrapper starts carries ``ANSIBLE_ASYNC_DIR`` (Ansible puts it
  in the module's environment) and fleetctl gave each run its own directory, ``fleetctl-<token>``;
- the job ids the run's events named (a playbook that sets ``ansible_async_dir`` itself defeats
  the marker): async_wrapper's argv carries the id's first part right after the wrapper's own path
  (``python3 .../async_wrapper.py j123 3600 .../AnsiballZ_x.py _``), its children descend from it.
Every such process and its descendants get SIGTERM, then SIGKILL after ``grace`` seconds; then
the run's job directory and the named job files go. A process of another user can be neither read
nor signalled: such async_wrapper processes are counted in ``hidden`` and fleetctl retries with
become.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable

# WANT_JSON (Ansible passes the module's arguments as a JSON file, argv[1])

# ansible-core names every job "j<random>.<pid>" (async_wrapper since 2.10); the "j" keeps an id
# from ever equalling a bare number of the wrapper's argv (its time limit).
JOB_ID = re.compile(r"^j[0-9]{1,12}\.[0-9]{1,10}$")
TOKEN = re.compile(r"^[0-9a-f]{8,64}$")
MARK_PREFIX = "fleetctl-"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _pids(proc: str) -> list[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


def _parent(proc: str, pid: int) -> int | None:
    stat = _read(f"{proc}/{pid}/stat")
    if stat is None:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def marked_by_dir(environ: bytes, token: str) -> bool:
    """Whether a process environment's ANSIBLE_ASYNC_DIR is this run's directory."""
    for item in environ.split(b"\0"):
        if item.startswith(b"ANSIBLE_ASYNC_DIR="):
            value = item.partition(b"=")[2].decode(errors="replace").rstrip("/")
            return os.path.basename(value) == MARK_PREFIX + token
    return False


def names_job(cmdline: bytes, prefixes: Iterable[str]) -> bool:
    """Whether an argv (``/proc/PID/cmdline``) is async_wrapper's for one of the job id prefixes:
    the argument right after the wrapper's path is the job id (``python3 WRAPPER JID LIMIT ...``,
    or ``WRAPPER JID ...`` run through its shebang), never any other argument."""
    argv = [a.decode(errors="replace") for a in cmdline.split(b"\0")]
    wanted = set(prefixes)
    for index, arg in enumerate(argv[:-1]):
        if os.path.basename(arg).startswith("async_wrapper"):
            return argv[index + 1] in wanted
    return False


def find(proc: str, token: str, prefixes: list[str]) -> tuple[set[int], int]:
    """(pids of the run's async jobs and their descendants, async_wrapper processes not readable)."""
    me = os.getpid()
    roots: set[int] = set()
    hidden = 0
    parents: dict[int, int] = {}
    for pid in _pids(proc):
        if pid == me:
            continue
        parent = _parent(proc, pid)
        if parent is not None:
            parents[pid] = parent
        cmdline = _read(f"{proc}/{pid}/cmdline") or b""
        environ = _read(f"{proc}/{pid}/environ")
        if (environ is not None and token and marked_by_dir(environ, token)) or names_job(cmdline, prefixes):
            roots.add(pid)
        elif environ is None and b"async_wrapper" in cmdline:
            hidden += 1
    found = set(roots)
    grew = True
    while grew:  # descendants: a module's own children may have reset their environment
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found and pid != me:
                found.add(pid)
                grew = True
    return found, hidden


def _signal(pids: Iterable[int], sig: int) -> set[int]:
    """Send ``sig``; return the pids that could not be signalled for lack of permission."""
    denied: set[int] = set()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:
            denied.add(pid)
    return denied


def _alive(proc: str, pid: int) -> bool:
    stat = _read(f"{proc}/{pid}/stat")
    if stat is None:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    return bool(fields) and fields[0] != b"Z"


def stop(proc: str, token: str, prefixes: list[str], grace: float) -> dict[str, object]:
    """SIGTERM the run's job processes, SIGKILL those left after ``grace``; rescan once (a
    wrapper may fork while being stopped)."""
    stopped: set[int] = set()
    denied: set[int] = set()
    hidden = 0
    for _ in range(2):
        pids, hidden = find(proc, token, prefixes)
        pids -= stopped | denied
        if not pids:
            break
        denied |= _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(proc, p) for p in pids - denied):
            time.sleep(0.1)
        denied |= _signal([p for p in pids - denied if _alive(proc, p)], signal.SIGKILL)
        stopped |= pids - denied
    return {"stopped": sorted(stopped), "denied": sorted(denied), "hidden": hidden}


def remove_job_files(async_dir: str, token: str, results_files: list[str]) -> list[str]:
    """Remove the run's own job directory and the named job files (only files named as job ids)."""
    removed: list[str] = []
    if token and os.path.basename(async_dir.rstrip("/")) == MARK_PREFIX + token:
        path = os.path.expanduser(async_dir)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for name in results_files:
        path = os.path.expanduser(name)
        if JOB_ID.match(os.path.basename(path)) and os.path.isfile(path):
            try:
                os.remove(path)
            except OSError:
                continue
            removed.append(path)
    return removed


def main(argv: list[str]) -> int:
    try:
        with open(argv[1]) as handle:
            args = json.load(handle)
        token = str(args.get("token") or "")
        jobs = [str(j) for j in args.get("jobs") or []]
        files = [str(f) for f in args.get("results_files") or []]
        if token and not TOKEN.match(token):
            raise ValueError(f"token {token!r} is not hexadecimal")
        bad = [j for j in jobs if not JOB_ID.match(j)]
        if bad:
            raise ValueError(f"job id {bad[0]!r} is not an Ansible job id")
        result = stop("/proc", token, sorted({j.partition(".")[0] for j in jobs}),
                      float(args.get("grace", 5)))
        result["removed"] = remove_job_files(str(args.get("async_dir") or ""), token, files)
        result["changed"] = bool(result["stopped"] or result["removed"])
        result["euid"] = os.geteuid()
    except (OSError, ValueError, IndexError) as exc:
        print(json.dumps({"failed": True, "msg": f"fleetctl async_stop: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
