"""fleetctl's commands: one module per command or command group, all of one shape.

A command function parses its options, calls the core and hands the result to a view
(``fleetctl.views``); it returns its exit code (``None`` for 0). Each module's ``register(app)``
adds its functions with :func:`add`, which runs them through :func:`run_command`: the one place
where a :class:`~fleetctl.errors.FleetctlError` becomes ``fleetctl <command>: <message>`` on
stderr (through :func:`fleetctl.views.text.echo`: control characters in it shown escaped) and its
exit code. Typer's own usage errors keep Typer's behaviour.

Only Typer and fleetctl.errors are imported at module level: the core, rich and Ansible are
imported inside the command functions, so that ``fleetctl --help`` starts fast.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

import typer

from fleetctl.errors import EXIT_USAGE, FleetctlError

P = ParamSpec("P")

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what the shell reports for a tool its reader left
# A full disk or quota, a file past its size limit, an I/O error: the output (or a file) cannot be
# written; said in one line, not as a traceback.
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _nothing_more_on_stdout() -> None:
    """Standard output to /dev/null: what is left in its buffer is dropped at exit, not raised again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):  # no stdout at all, or not a file: nothing to flush
        pass


def run_command(name: str, fn: Callable[P, int | None]) -> Callable[P, None]:
    """``fn`` as ``fleetctl <name>`` ends: its exit code, or a FleetctlError's one line and code."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            code = fn(*args, **kwargs)
        except FleetctlError as exc:
            from fleetctl.views.text import echo  # a message may quote a host name, a reason, a reply

            echo(f"fleetctl {name}: {exc.one_line()}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # The reader left (`| head`): nothing more can be shown. The exit a tool killed by SIGPIPE
            # gives, not 1 ("problems"), and stdout pointed at /dev/null so the exit's flush is quiet.
            _nothing_more_on_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except OSError as exc:
            if exc.errno not in _WRITE_ERRORS:
                raise
            from fleetctl.views.text import echo

            # The file it names, if any: a full disk under a state file is not the output's. Without
            # one it is a stream: the output, whose buffered rest is dropped rather than raised again.
            where = f": {exc.filename}" if exc.filename else ""
            echo(f"fleetctl {name}: {exc.strerror}{where}", err=True)
            if not exc.filename:
                _nothing_more_on_stdout()
            raise typer.Exit(EXIT_USAGE) from None
        if code:
            raise typer.Exit(code)

    return run


def add(app: typer.Typer, name: str, fn: Callable[P, int | None], *, label: str | None = None) -> None:
    """Register ``fn`` as the command ``name`` of ``app``; errors name it ``label`` (default ``name``)."""
    app.command(name)(run_command(label or name, fn))


def group(app: typer.Typer, name: str, *, help: str) -> typer.Typer:
    """A command group (``fleetctl runs list``): its commands are added to the Typer returned."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub
