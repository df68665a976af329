"""``fleetctl provision``: parse options, call ``fleetctl.provision.run``, render."""

from __future__ import annotations

import getpass
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from fleetctl.commands import add
from fleetctl.commands.params import DbOpt, InventoryOpt, JsonOpt, PatternsArg


class Connection(StrEnum):
    """Ansible connection plugins fleetctl runs playbooks with (fleetctl.provision checks the same)."""

    ssh = "ssh"
    paramiko = "paramiko"


def _split(values: list[str] | None) -> list[str]:
    """``--tags a,b --tags c`` -> [a, b, c]."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@contextmanager
def _cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """Ctrl-C / SIGTERM set ``cancel``; the runner then kills ansible's process group and the run
    is recorded as canceled with the results so far."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if not cancel.is_set():
            print("\ncanceling: stopping ansible-playbook...", file=sys.stderr, flush=True)
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _read_vault_password() -> str:
    """Prompt on the terminal; from a pipe (CI, ``pass show x | fleetctl ...``) read one line."""
    from fleetctl.errors import UsageError

    if sys.stdin.isatty():
        password = getpass.getpass("Vault password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UsageError("--ask-vault-pass: no vault password given")
    return password


def register(app: typer.Typer) -> None:
    add(app, "provision", provision)


def provision(
    patterns: PatternsArg = None,
    playbook: Annotated[
        str, typer.Option("--playbook", "-p", help="A playbook name in playbooks/ or a path.")
    ] = "site",
    inventory: InventoryOpt = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tags", "-t", help="Only tasks with these tags.")
    ] = None,
    skip_tags: Annotated[list[str] | None, typer.Option("--skip-tags", help="Skip these tags.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Dry run: report what would change.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show file changes.")] = False,
    forks: Annotated[int | None, typer.Option("--forks", "-f", help="Parallel hosts per batch.")] = None,
    batch: Annotated[
        str | None, typer.Option("--batch", help="Roll out N hosts (or N%) at a time; stop on failure.")
    ] = None,
    extra_vars: Annotated[
        list[str] | None, typer.Option("--extra-vars", "-e", help="k=v, @file or a JSON object.")
    ] = None,
    json_output: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Take over hosts another run holds.")] = False,
    db_path: DbOpt = None,
    connection: Annotated[
        Connection | None, typer.Option("--connection", "-c", help="ssh (default) or paramiko.")
    ] = None,
    private_key: Annotated[
        Path | None, typer.Option("--private-key", help="SSH key file (default: ssh-agent, ~/.ssh).")
    ] = None,
    remote_user: Annotated[str | None, typer.Option("--user", "-u", help="Remote SSH user.")] = None,
    no_host_key_checking: Annotated[
        bool, typer.Option("--no-host-key-checking", help="Accept unknown SSH host keys (insecure).")
    ] = False,
    vault_password_file: Annotated[
        Path | None,
        typer.Option("--vault-password-file", help="File (or script) with the vault password."),
    ] = None,
    ask_vault_pass: Annotated[
        bool, typer.Option("--ask-vault-pass", help="Prompt for the vault password.")
    ] = False,
) -> int:
    """Run a playbook on the fleet with live per-host progress; every run is recorded."""
    from fleetctl import provision as core
    from fleetctl.errors import UsageError
    from fleetctl.inventory import join_patterns, resolve_sources
    from fleetctl.runner import AnsibleRunner
    from fleetctl.views.console import print_json, stdout_console
    from fleetctl.views.provision import make_progress

    if vault_password_file and ask_vault_pass:
        raise UsageError("--vault-password-file and --ask-vault-pass exclude each other")
    cancel = threading.Event()
    vault_password = _read_vault_password() if ask_vault_pass else None
    options = core.ProvisionOptions(
        inventory=resolve_sources(inventory),
        pattern=join_patterns(patterns),
        playbook=playbook,
        tags=_split(tags),
        skip_tags=_split(skip_tags),
        check=check,
        diff=diff,
        forks=forks,
        batch=batch,
        extra_vars=list(extra_vars or []),
        force=force,
        connection=connection.value if connection else None,
        private_key=private_key,
        remote_user=remote_user,
        host_key_checking=not no_host_key_checking,
        vault_password_file=vault_password_file,
        vault_password=vault_password,
    )
    observer = None if json_output else make_progress(stdout_console())
    with _cancel_on_signals(cancel):
        try:
            result = core.run(options, AnsibleRunner(), db_path=db_path, observer=observer, cancel=cancel)
        finally:
            if observer is not None:
                observer.close()
    if json_output:
        print_json(result.to_dict())
    return result.exit_code
