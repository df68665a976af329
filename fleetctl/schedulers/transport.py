"""Run a command on a host: locally, or over SSH with the inventory's connection variables.

Commands are argv lists. Over SSH the remote side needs one string, so each argument is quoted
with :func:`shlex.join` (never interpolated into a shell snippet). Host key checking stays
whatever the user's ssh configuration says; nothing here turns it off.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetctl.schedulers.base import HostLike, SchedulerConfigError, SchedulerError

SSH_UNREACHABLE = 255  # ssh's own exit status when it could not connect


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    def last_error_line(self) -> str:
        lines = [ln.strip() for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {self.rc}"


class CommandRunner(Protocol):
    where: str  # for messages: "local" or "ssh root@host:2201"

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            timeout: float = 60.0) -> CommandResult: ...


def _execute(argv: Sequence[str], stdin: str | None, timeout: float, where: str) -> CommandResult:
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise SchedulerError(f"{where}: command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{where}: {argv[0]} did not finish within {timeout:.0f}s") from None
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


class LocalRunner:
    where = "local"

    def __init__(self, *, become: bool = False) -> None:
        self.become = become

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        full = (["sudo", "-n", "--"] if self.become else []) + list(argv)
        return _execute(full, stdin, timeout, self.where)


class SshRunner:
    """OpenSSH client in batch mode (no password prompts), one connection per command."""

    def __init__(self, target: str, *, port: int | None = None, user: str | None = None,
                 key_file: str | None = None, extra_args: Sequence[str] = (), become: bool = False,
                 connect_timeout_s: int = 10) -> None:
        self.target = target
        self.become = become
        self.where = f"ssh {user + '@' if user else ''}{target}{f':{port}' if port else ''}"
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}"]
        if port:
            opts += ["-p", str(port)]
        if user:
            opts += ["-l", user]
        if key_file:
            opts += ["-i", key_file]
        self._opts = opts + list(extra_args)

    def argv(self, argv: Sequence[str]) -> list[str]:
        remote = (["sudo", "-n", "--"] if self.become else []) + list(argv)
        return ["ssh", *self._opts, "--", self.target, shlex.join(remote)]

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        result = _execute(self.argv(argv), stdin, timeout, self.where)
        if result.rc == SSH_UNREACHABLE:
            raise SchedulerError(f"{self.where}: cannot run {argv[0]}: {result.last_error_line()}")
        return result


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def runner_for(host: HostLike) -> CommandRunner:
    """A runner for ``host`` from its Ansible connection variables."""
    v: Mapping[str, Any] = host.vars
    become = _truthy(v.get("ansible_become", False))
    connection = str(v.get("ansible_connection", "ssh"))
    if connection == "local":
        return LocalRunner(become=become)
    if connection not in ("ssh", "smart", "paramiko"):
        raise SchedulerConfigError(f"{host.name}: ansible_connection={connection!r} is not supported "
                                   "for scheduler commands (use ssh or local)")
    port = v.get("ansible_port") or v.get("ansible_ssh_port")
    try:
        port_num = int(port) if port is not None else None
    except (TypeError, ValueError):
        raise SchedulerConfigError(f"{host.name}: ansible_port={port!r} is not a number") from None
    extra: list[str] = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if v.get(key):
            extra += shlex.split(str(v[key]))  # the user's own ssh options, split as argv
    return SshRunner(
        str(v.get("ansible_host") or host.address or host.name),
        port=port_num,
        user=str(v["ansible_user"]) if v.get("ansible_user") else None,
        key_file=str(v["ansible_ssh_private_key_file"]) if v.get("ansible_ssh_private_key_file") else None,
        extra_args=extra,
        become=become,
    )
