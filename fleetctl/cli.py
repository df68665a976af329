"""The ``fleetctl`` command line. Thin: each command module parses, calls the core, renders.

Every module in ``_COMMAND_MODULES`` defines ``register(app)`` (see :mod:`fleetctl.commands` for
the shape they share). Heavy imports (ansible, asyncio clients, rich) happen inside the command
bodies so ``fleetctl --help`` starts fast.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="fleetctl",
    help="Provision, drain and watch bare-metal GPU/TPU fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The command modules under fleetctl/commands/; their order is the help order.
_COMMAND_MODULES = ("health", "inventory", "prometheus", "provision", "runs", "drain", "maintain")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"fleetctl.commands.{name}").register(app)


_register_all()


# Commands that end holding a large heap (an Ansible inventory model, thousands of reports) and
# leave no thread or child behind: they skip freeing it object by object at exit.
_NO_TEARDOWN = frozenset({"health", "inventory"})


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in _NO_TEARDOWN:
        try:
            app()
        except SystemExit as exc:
            _exit_now(exc.code)
        _exit_now(0)
    app()


def _exit_now(code: object) -> NoReturn:
    """Exit as the interpreter would, minus the teardown of the heap: after a cold ``fleetctl
    health`` over 1,000 hosts that took 70 ms, 8% of the command. Exit handlers still run (Ansible
    removes its local temp dir in one) and both standard streams are flushed; every file fleetctl
    writes is closed before the command returns."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (fleetctl health | head): nothing to save
            stream.flush()
    os._exit(status)
