"""The ``fleetctl`` command line. Thin: each command module parses, calls the core, renders.

Command modules are registered here; each defines ``register(app)``. Heavy imports (ansible,
asyncio clients) happen inside the command bodies so ``fleetctl --help`` starts fast.
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

# Each module under fleetctl/commands/ that exists is registered; order is the help order.
_COMMAND_MODULES = ("health", "inventory", "prometheus", "provision", "runs", "drain")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"fleetctl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fleetctl.commands.{name}":
                continue  # not written yet
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()
