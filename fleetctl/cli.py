"""The ``fleetctl`` command line. Thin: each command module parses, calls the core, renders.

Every module in ``_COMMAND_MODULES`` defines ``register(app)`` (see :mod:`fleetctl.commands` for
the shape they share). Heavy imports (ansible, asyncio clients, rich) happen inside the command
bodies so ``fleetctl --help`` starts fast.

Usage errors (an unknown option or command, a bad choice or number, a missing argument) are one
line on stderr, ``fleetctl <command>: <message>`` like every other error, exit 2, with "did you
mean" where a close name exists: :class:`FleetctlGroup` catches them where Typer would draw its
five-line box.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from typer import _click
from typer.core import TyperGroup

from fleetctl import quick_exit

COMPLETE_VAR = "_FLEETCTL_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


class FleetctlGroup(TyperGroup):
    """The root command: Typer's, with usage errors as one line (exit 2)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        if os.environ.get(complete_var or COMPLETE_VAR):
            from typer._completion_classes import completion_init

            completion_init()  # Typer's bash/zsh/fish protocol (add_completion=False skips it)
        try:
            rv = super().main(args, prog_name or "fleetctl", complete_var or COMPLETE_VAR,
                              standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
            code = rv if isinstance(rv, int) else 0
        except _click.exceptions.NoArgsIsHelpError as exc:
            code = exc.exit_code  # Typer has printed the help already
        except _click.exceptions.ClickException as exc:
            sys.stderr.write(usage_line(exc) + "\n")
            code = exc.exit_code
        except typer.Abort:
            sys.stderr.write("fleetctl: aborted\n")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


def usage_line(exc: _click.exceptions.ClickException) -> str:
    """``fleetctl <command>: <message>``: one line, lower case, with a suggestion where one exists."""
    from fleetctl.views.text import visible  # the message may quote what was typed: shown escaped

    ctx = getattr(exc, "ctx", None)
    where = " ".join(["fleetctl", *ctx.command_path.split()[1:]]) if ctx is not None else "fleetctl"
    return visible(f"{where}: {_message(exc, ctx)}", limit=2000)


def _message(exc: _click.exceptions.ClickException, ctx: _click.Context | None) -> str:
    ex = _click.exceptions
    if isinstance(exc, ex.NoSuchOption):
        known = [o for p in ctx.command.params for o in [*p.opts, *p.secondary_opts]] if ctx else []
        known += ["--help"]
        close = difflib.get_close_matches(exc.option_name, known, n=1, cutoff=0.5)
        return f"no such option {exc.option_name}" + (f"; did you mean {close[0]}?" if close else "")
    if isinstance(exc, ex.MissingParameter) and exc.param is not None:
        kind = exc.param_type or exc.param.param_type_name
        return f"missing {kind} {_hint(exc.param, ctx)}"
    if isinstance(exc, ex.BadParameter) and exc.param is not None:
        hint = _hint(exc.param, ctx)
        choices = getattr(exc.param.type, "choices", None)
        m = re.match(r"(.*) is not one of ", exc.message)
        if choices is not None and m:
            names = [str(getattr(c, "value", c)) for c in choices]
            typed = m.group(1).strip("'\"")
            close = difflib.get_close_matches(typed, names, n=1, cutoff=0.6)
            return (f"{hint} {m.group(1)}: expected one of {', '.join(names)}"
                    + (f"; did you mean {close[0]}?" if close else ""))
        return f"{hint}: {_sentence(exc.message)}"
    text = _sentence(exc.format_message()).replace(". Did you mean", "; did you mean")
    return text.replace("\n", " ")


def _hint(param: _click.Parameter, ctx: _click.Context | None) -> str:
    if param.param_type_name == "argument":
        return param.metavar or (param.name or "").upper()
    return "/".join(sorted(param.opts, key=len, reverse=True))


def _sentence(text: str) -> str:
    """Click's ``Invalid value.`` as fleetctl writes messages: lower case first, no final stop."""
    text = text.strip().rstrip(".")
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    return text


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="fleetctl",
        cls=FleetctlGroup,
        help="Provision, drain and watch bare-metal GPU/TPU fleets.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


app = _new_app()

# The command modules under fleetctl/commands/; their order is the help order.
_COMMAND_MODULES = ("health", "inventory", "prometheus", "provision", "runs", "drain", "maintain",
                    "remediate", "burnin", "hosts")


def version_text() -> str:
    """Both distributions' versions, one per line: a bug report needs the agent's too."""
    from fleetctl import __version__

    try:
        from fleet_agent import __version__ as agent_version
    except ImportError:
        agent_version = "not installed"
    return f"fleetctl {__version__}\nfleetctl-agent {agent_version}"


def _version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True,
        help="Show fleetctl's and fleetctl-agent's (the node agent's) versions and exit.",
    ),
) -> None:
    """Provision, drain and watch bare-metal GPU/TPU fleets."""


app.callback()(_root)


@app.command("completion")
def completion(shell: Annotated[Shell, typer.Argument(help="The shell to complete for")]) -> None:
    """Print the shell completion script. Install it with one command:

    bash: fleetctl completion bash > ~/.local/share/bash-completion/completions/fleetctl

    zsh:  fleetctl completion zsh > "${fpath[1]}/_fleetctl"

    fish: fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish
    """
    from typer._completion_shared import get_completion_script

    typer.echo(get_completion_script(prog_name="fleetctl", complete_var=COMPLETE_VAR, shell=shell.value))


# Top-level command or group name -> the module that registers it (filled by _register_all).
_MODULE_OF: dict[str, str] = {}


def _top_names(t: typer.Typer) -> set[str]:
    return ({c.name for c in t.registered_commands if c.name}
            | {g.name for g in t.registered_groups if g.name})


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        before = _top_names(app)
        importlib.import_module(f"fleetctl.commands.{name}").register(app)
        _MODULE_OF.update(dict.fromkeys(_top_names(app) - before, name))


_register_all()


def app_for(args: Sequence[str]) -> typer.Typer:
    """The app that runs ``args``: for a command named first, an app of that command's module only.

    Typer turns every registered command's signature into click parameters on each start; with a
    dozen commands that is most of a start-up. A command's run never needs the others', so only its
    own are built. Anything else (no command, a typo that wants "did you mean", shell completion)
    gets the whole app.
    """
    module = _MODULE_OF.get(args[0]) if args else None
    if module is None or os.environ.get(COMPLETE_VAR):
        return app
    one = _new_app()
    one.callback()(_root)
    importlib.import_module(f"fleetctl.commands.{module}").register(one)
    return one


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:  # nothing to parse: no command tree to build
        typer.echo(version_text())
        return
    quick_exit.arm()
    # A stream closed at start (`>&-`) is None in Python: every view writes nowhere, as rich's table
    # does, and the command ends with its own code rather than an AttributeError.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # the process's stdout to its end
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    try:
        app_for(args)()
    except SystemExit as exc:
        quick_exit.end(exc.code)  # returns unless the command held what it built (see quick_exit)
        raise
