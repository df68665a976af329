"""``fleet-agent check``: one sample of this host, judged, as an exit code a health check can act on.

The sample is ``fleet-agent once``'s (:func:`take_sample`): the config's collectors, the sampler with
its per-call deadlines, the health checks, :mod:`fleet_agent.verdict`'s statuses. Then:

- exit 0 when the node is healthy *or degraded*: a warning (a slow PCIe link, a hot chip) says the
  node still runs work, as :func:`fleet_agent.verdict.unfit_for_work` has it, and a scheduler's
  health check must not take it out of service for one; exit 1 when it is unhealthy; exit 2 when
  the agent could not tell (a chip source unreadable, a call hung, the agent without its NVML
  bindings, the sample overran, a bad config); a missing or broken NVIDIA driver is unhealthy;
- stdout: one line per problem, worst first, a root cause (the driver) first within its severity
  (``gpu0 critical gpu_lost: ... (action: reboot)``);
  nothing at all for a node without problems.

``--slurm`` acts as NHC does, because Slurm runs its ``HealthCheckProgram`` and ignores the exit
code: unhealthy drains the node (``Reason=fleet-agent: <first problem>``) unless it is drained
already, by anyone; healthy or degraded resumes it only when the drain is ours (its reason starts
with ``fleet-agent:``); could-not-tell leaves it as it is, so that a bad config pushed to every host
or a wedged NVML call never drains a whole cluster at once. scontrol is called with an argument
list, never through a shell. The exit code stays the health verdict; a failed scontrol is a line
on stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fleet_agent.health.checks import driver
from fleet_agent.schema import Action, NodeReport, Problem, Severity, Status
from fleet_agent.verdict import ROOT_CAUSE_CHECKS, SEVERITY_RANK

if TYPE_CHECKING:
    from fleet_agent.config import AgentConfig
    from fleet_agent.daemon import ChipSource

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_UNKNOWN = 2

REASON_PREFIX = "fleet-agent:"
# Long enough for a problem's gist; `sinfo -R` and dashboards show reasons in one row.
MAX_REASON = 128
# Beyond the sampler's own deadlines (two rounds of calls, the driver-version probe, closing):
# room for a busy machine, after which the sample counts as hung.
_SAMPLE_SLACK_S = 2.0
_SCONTROL_TIMEOUT_S = 15.0
# One Slurm node by its plain name: a hostlist ("gpu[1-3]") would drain several, and a leading "-"
# would read as an option.
_NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


# --- one sample ----------------------------------------------------------------------------------


def take_sample(cfg: AgentConfig, chips: ChipSource | None) -> NodeReport:
    """One sample of this host (or of ``chips``), judged: ``fleet-agent once``'s code path."""
    from fleet_agent.daemon import build_agent, close_within, shutdown_pools
    from fleet_agent.sampler import DaemonThreadPool

    pool = DaemonThreadPool(32, "collector")
    try:
        # One sample: drain XID events inline rather than start an event thread.
        rt = build_agent(cfg, executor=pool, chips=chips, xid_events="poll", one_shot=True)
        report = rt.sampler.sample_once()
        if chips is not None:
            chips.release_hangs()
        close_within([rt], 1.0)
    finally:
        shutdown_pools(pool)
    return report


def sample_limit_s(cfg: AgentConfig) -> float:
    """How long a whole sample may take before it counts as hung."""
    return 2 * cfg.collector_timeout_s + 1.0 + _SAMPLE_SLACK_S


def sample_within(cfg: AgentConfig, chips: ChipSource | None) -> NodeReport | None:
    """:func:`take_sample` in a daemon thread; ``None`` when it has not finished in time.

    The sampler already bounds every collector call; this bounds what runs outside its calls too
    (a collector's constructor, closing), so that no hung driver call keeps a health check, and the
    slurmd waiting on it, from finishing. The thread is a daemon: the process exits without it.
    """
    done: list[NodeReport] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            done.append(take_sample(cfg, chips))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=work, name="check-sample", daemon=True)
    worker.start()
    worker.join(sample_limit_s(cfg))
    if failed:
        raise failed[0]
    if not done:
        if chips is not None:
            chips.release_hangs()
        return None
    return done[0]


# --- the verdict as lines and an exit code -------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One problem of one chip (``gpu0``) or of the node (``node``)."""

    subject: str
    problem: Problem

    def line(self) -> str:
        p = self.problem
        return (f"{self.subject} {p.severity.value} {p.check}: {_one_line(p.message)} "
                f"(action: {p.action.value})")

    def reason(self) -> str:
        """The gist, for a drain reason: the severity is implied and the action does not fit."""
        return f"{self.subject} {self.problem.check}: {_one_line(self.problem.message)}"


def findings(report: NodeReport) -> list[Finding]:
    """Every problem of the report, worst first (chips in order, then the node, within a severity).

    A chip or collector that could not be read yields a line even when the check that reports it is
    disabled: an exit code of 2 always comes with a reason.
    """
    found: list[Finding] = []
    for chip in report.chips:
        subject = f"{chip.kind}{chip.index}"
        found += [Finding(subject, p) for p in chip.problems]
        if not chip.problems and chip.status is Status.UNKNOWN:
            found.append(Finding(subject, Problem("reading", Severity.WARNING,
                                                  chip.error or "no fresh reading", Action.MONITOR)))
    found += [Finding("node", p) for p in report.problems]
    said = {p.check for p in report.problems}
    if "collector" not in said:
        found += [Finding("node", Problem("collector", Severity.WARNING,
                                          f"collector {c.name} failed: {c.error or 'no reason given'}",
                                          Action.MONITOR))
                  for c in report.collectors if not c.ok and not ("driver" in said and driver.covers(c))]
    return sorted(found, key=lambda f: (-SEVERITY_RANK[f.problem.severity],
                                        f.problem.check not in ROOT_CAUSE_CHECKS))


def exit_code(status: Status) -> int:
    """0 healthy or degraded (fit for work), 1 unhealthy, 2 unknown (could not tell)."""
    if status is Status.UNHEALTHY:
        return EXIT_UNHEALTHY
    if status is Status.UNKNOWN:
        return EXIT_UNKNOWN
    return EXIT_HEALTHY


@dataclass(frozen=True)
class CheckResult:
    code: int
    findings: list[Finding]

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]


def judge(report: NodeReport | None, limit_s: float) -> CheckResult:
    """The check's result for a report, or for a sample that did not finish in ``limit_s``."""
    if report is None:
        hung = Problem("sample", Severity.WARNING,
                       f"the sample did not finish within {limit_s:g}s (a collector call hung outside "
                       "its deadline?)", Action.MONITOR)
        return CheckResult(EXIT_UNKNOWN, [Finding("node", hung)])
    code = exit_code(report.status)
    if code == EXIT_UNHEALTHY and _only_chip_count_from_a_blind_source(report):
        # "0 of 8 chips" because the call that lists them hung, or because the agent lacks its NVML
        # bindings, says nothing about the chips: a wedged driver or a bad agent package across the
        # fleet must not drain every node. Could not tell.
        code = EXIT_UNKNOWN
    return CheckResult(code, findings(report))


def _only_chip_count_from_a_blind_source(report: NodeReport) -> bool:
    from fleet_agent.sampler import timed_out

    if not any(timed_out(s) or (s.name == "nvml" and not s.ok and driver.driver_cause(s.error) == "bindings")
               for s in report.collectors if s.name != "host"):
        return False
    critical = [p for p in report.problems if p.severity is Severity.CRITICAL]
    critical += [p for c in report.chips for p in c.problems if p.severity is Severity.CRITICAL]
    return all(p.check == "chip_count" for p in critical)


def run_check(cfg: AgentConfig, chips: ChipSource | None, *, timeout_s: float | None = None) -> CheckResult:
    """Sample once (each collector call under ``timeout_s``, default the config's) and judge."""
    if timeout_s is not None:
        cfg = replace(cfg, collector_timeout_s=timeout_s)
    return judge(sample_within(cfg, chips), sample_limit_s(cfg))


# --- Slurm: drain and resume as NHC does ---------------------------------------------------------


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def default_node_name() -> str:
    """slurmd's name for this node (it sets SLURMD_NODENAME for its HealthCheckProgram), else the
    short host name, as ``hostname -s`` prints it."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def valid_node_name(name: str) -> bool:
    return _NODE_NAME.fullmatch(name) is not None


def drain_reason(found: Sequence[Finding]) -> str:
    """``fleet-agent: <first critical problem>`` (+N more), one line of at most MAX_REASON chars."""
    worst = [f for f in found if f.problem.severity is Severity.CRITICAL] or list(found)
    if not worst:
        return f"{REASON_PREFIX} unhealthy"
    more = f" (+{len(worst) - 1} more)" if len(worst) > 1 else ""
    text = f"{REASON_PREFIX} {worst[0].reason()}"
    if len(text) + len(more) > MAX_REASON:
        text = text[: MAX_REASON - len(more) - 3].rstrip() + "..."
    return text + more


@dataclass(frozen=True)
class SlurmNode:
    name: str
    flags: frozenset[str]
    reason: str | None

    @property
    def drained(self) -> bool:
        """DRAIN set: draining (jobs still running) or drained."""
        return "DRAIN" in self.flags

    @property
    def ours(self) -> bool:
        return self.drained and (self.reason or "").startswith(REASON_PREFIX)


# Slurm appends "[user@time]" to a reason set through scontrol.
_REASON_SUFFIX = re.compile(r"\s*\[[^\]@]*@[^\]]*\]\s*$")
# Fields `scontrol show node -o` prints after Reason (a reason holds spaces: it ends where one begins).
_AFTER_REASON = re.compile(r" (?=(?:Comment|Extra|InstanceId|InstanceType|LastBusyTime|ResumeAfterTime)=)")


def parse_node(line: str) -> SlurmNode:
    """One line of ``scontrol show node -o``; a ValueError when it has no NodeName or State."""
    head, sep, rest = line.strip().partition(" Reason=")
    parts = _AFTER_REASON.split(rest, maxsplit=1)
    reason_text = parts[0]
    tail = parts[1] if len(parts) > 1 else ""
    fields = dict(tok.split("=", 1) for tok in (head + " " + tail).split() if "=" in tok)
    name, state = fields.get("NodeName"), fields.get("State")
    if not name or state is None:
        raise ValueError(f"unexpected scontrol output: {line[:120]!r}")
    reason = (_REASON_SUFFIX.sub("", reason_text).strip() or None) if sep else None
    return SlurmNode(name, frozenset(state.rstrip("*$~#!%@^-").split("+")), reason)


def run_scontrol(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """scontrol, found on PATH, with an argument list (no shell), under a timeout."""
    exe = shutil.which("scontrol")
    if exe is None:
        raise OSError("scontrol not found on PATH")
    return subprocess.run([exe, *argv], capture_output=True, text=True, timeout=_SCONTROL_TIMEOUT_S,
                          check=False)


def _scontrol(run: Runner, argv: Sequence[str]) -> str:
    try:
        done = run(argv)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmActionError(f"scontrol {argv[0]}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        said = last[-1] if last else f"exit {done.returncode}"
        raise SlurmActionError(f"scontrol {' '.join(argv[:2])} failed: {said}")
    return done.stdout


class SlurmActionError(RuntimeError):
    """scontrol could not be run or refused; the message is one line."""


def slurm_act(result: CheckResult, node: str, run: Runner = run_scontrol) -> str | None:
    """Drain or resume ``node`` after a check, as the module's docstring says: what was done or left
    undone, in a line; ``None`` for a healthy node with nothing to do (no line every interval)."""
    if result.code == EXIT_UNKNOWN:
        return f"{node}: could not tell; node left as it is"
    out = _scontrol(run, ["show", "node", "-o", node])
    lines = [ln for ln in out.splitlines() if ln.strip()]
    try:
        current = parse_node(lines[0]) if lines else None
    except ValueError as exc:
        raise SlurmActionError(str(exc)) from None
    if current is None:
        raise SlurmActionError(f"scontrol show node {node}: no output")
    if result.code == EXIT_UNHEALTHY:
        if current.drained:
            return f"{node}: unhealthy, already drained (Reason={current.reason or ''}); left as it is"
        reason = drain_reason(result.findings)
        _scontrol(run, ["update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"])
        return f"{node}: drained (Reason={reason})"
    if current.ours:
        _scontrol(run, ["update", f"NodeName={node}", "State=RESUME"])
        return f"{node}: resumed (was drained with Reason={current.reason})"
    return None


def _one_line(text: str) -> str:
    """Control characters and runs of white space as one space (reasons and lines stay one line)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())

