"""The ``fleetctl`` command line. Thin: each command module parses, calls the core, renders.

Every module in ``_COMMAND_MODULES`` defines ``register(app)`` (see :mod:`fleetctl.commands` for
the shape they share). Heavy imports (ansible, asyncio clients, rich) happen inside the command
bodies so ``fleetctl --help`` starts fast.
"""

from __future__ import annotations

import importlib

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


def main() -> None:
    app()
