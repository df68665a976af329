"""Inputs more than one command takes, each checked in one place with one message.

Core modules call these (so a caller that skips the CLI gets the same checks) and commands pass
the raw option text through; every failure is a :class:`~fleetctl.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fleetctl.errors import UsageError

# ASCII digits only (\d takes any script's) and no space inside: "5 %" is a typo to refuse.
_SIZE = re.compile(r"([0-9]+)(%?)")
REASON_REQUIRED = "a reason is required: --reason TEXT"


@dataclass(frozen=True)
class Size:
    """``N`` hosts or ``N%`` of a pool (rounded down, never below 1 so a rollout can progress).

    The value of ``--batch`` (provision, maintain) and ``--max-unavailable`` (drain, maintain).
    """

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str, option: str) -> Size:
        m = _SIZE.fullmatch(text.strip())
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(1)) > 100):
            raise UsageError(f"{option} {text!r}: expected a number of hosts N >= 1 or a percentage 1%..100%")
        return cls(int(m.group(1)), bool(m.group(2)))

    def of(self, total: int) -> int:
        if not self.percent:
            return self.value
        return max(1, math.floor(total * self.value / 100))

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


def require_reason(reason: str | None) -> str:
    """A drain reason: required, and not only whitespace."""
    if reason is None or not reason.strip():
        raise UsageError(REASON_REQUIRED)
    return reason


def one_of(option: str, value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else a usage error listing them."""
    choices = tuple(allowed)
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")
    return value


# --- what the tools below fleetctl accept ---------------------------------------------------------
# Linux: one argument of execve(2) holds at most MAX_ARG_STRLEN bytes, its terminating NUL included
# (32 pages of 4 KiB; include/uapi/linux/binfmts.h). Slurm itself stores far longer node reasons.
MAX_ARG_BYTES = 131072
# Kubernetes (k8s.io/apimachinery/pkg/api/validation/objectmeta.go, TotalAnnotationSizeLimitB): all
# annotations of one object, keys and values together, at most 256 KiB.
K8S_ANNOTATIONS_BYTES = 262144
# Kubernetes node names are DNS-1123 subdomains (k8s.io/apimachinery/pkg/util/validation,
# DNS1123SubdomainMaxLength): lower-case alphanumerics, '-' and '.', at most 253 characters.
K8S_NAME_CHARS = 253
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def argument_fits(argv: list[str]) -> int:
    """The bytes ``argv`` takes as the one string SSH hands the remote shell (``sudo -n --`` in front,
    each argument quoted), NUL included: at least what its longest argument takes locally."""
    import shlex

    return len(shlex.join(["sudo", "-n", "--", *argv]).encode()) + 1


def scheduler_input_problem(kind: str, host: str, node: str, reason: str) -> str | None:
    """Why ``kind`` cannot take this drain of ``node`` (one line), or ``None``.

    ``reason`` is the tagged reason as the scheduler would store it.
    """
    from fleetctl.schedulers.kubernetes import REASON_ANNOTATION  # no client import at module level

    size = len(reason.encode())
    if kind == "slurm":
        used = argument_fits(["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"])
        if used > MAX_ARG_BYTES:
            return (f"{host}: --reason is too long for Slurm: the scontrol command that sets it would take "
                    f"{used} bytes, one command-line argument holds at most {MAX_ARG_BYTES}; shorten it")
    elif kind == "kubernetes":
        if len(node) > K8S_NAME_CHARS or not _K8S_NAME.fullmatch(node):
            shown = f"{node[:80]!r}{'...' if len(node) > 80 else ''}"
            return (f"{host}: {shown} ({len(node)} characters) is not a Kubernetes node name: lower-case "
                    f"letters, digits, '-' and '.', at most {K8S_NAME_CHARS}")
        if size + len(REASON_ANNOTATION) > K8S_ANNOTATIONS_BYTES:
            return (f"{host}: --reason is too long for Kubernetes: {size} bytes in the node annotation "
                    f"{REASON_ANNOTATION}, all of a node's annotations together hold at most "
                    f"{K8S_ANNOTATIONS_BYTES}; shorten it")
    return None


def batch_limit_problem(names: list[str]) -> str | None:
    """A batch handed to ``ansible-playbook --limit`` must fit one command-line argument."""
    size = len(",".join(names).encode()) + 1
    if size > MAX_ARG_BYTES:
        return (f"--batch: {len(names)} hosts make a host list of {size} bytes for ansible-playbook "
                f"--limit, one command-line argument holds at most {MAX_ARG_BYTES}; use a smaller --batch")
    return None
