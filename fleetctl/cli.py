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


def version_text() -> str:
    """Both distributions' versions, one per line: a bug report needs the agent's too."""
    from fleetctl import __version__

    try:
        from fleet_agent import __version__ as agent_version
    except ImportError:
        agent_version = "not installed"
    return f"fleetctl {__version__}\nfleet-agent {agent_version}"


def _version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True,
        help="Show fleetctl's and fleet-agent's versions and exit.",
    ),
) -> None:
    """Provision, drain and watch bare-metal GPU/TPU fleets."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"fleetctl.commands.{name}").register(app)


_register_all()


def main() -> None:
    app()
