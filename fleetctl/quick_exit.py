"""Ending the process without freeing, object by object, what a one-shot command built.

A 100,000-host report is millions of objects; once its output is written, freeing them one by one
took about 0.25 s of a 4 s ``health --json`` (benchmarks/bench_prometheus.py's replay). A command
hands what it built to :func:`hold`; :func:`end`, called by ``fleetctl.cli.main`` with the exit code,
runs the ``atexit`` handlers, flushes the standard streams and ends the process without the
interpreter's teardown.

Only the console script arms it (:func:`arm`): a command run in-process (Typer's test runner) holds
nothing and returns as before. Nothing the process still has to do is skipped: with a thread that is
not a daemon still running, or a stream that cannot be flushed, :func:`end` leaves it to the usual
exit; files a command writes are closed (and atomically replaced) by the command itself.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

_held: list[object] = []
_armed = False


def arm() -> None:
    """This process ends when the command does (the console script)."""
    global _armed
    _armed = True


def hold(*objs: object) -> None:
    """Keep ``objs`` to the end of the process (nothing is kept unless :func:`arm` was called)."""
    if _armed:
        _held.extend(objs)


def end(code: object) -> None:
    """End the process now with ``code`` if something is held; otherwise return, and so when the
    code is a message, a thread that is not a daemon still runs (the usual exit joins it), or a
    stream refuses the last flush (a closed pipe, a closed stdout): the usual exit says it as before."""
    if not _held or not (code is None or isinstance(code, int)):
        return
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # logging's flush and any other handler registered, as the usual exit would
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:  # noqa: BLE001  # whatever the stream raises, the usual exit reports it
        return
    os._exit(code or 0)
