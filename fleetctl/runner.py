"""A small typed adapter over ansible-runner, plus the tally that turns its events into host results.

``PlaybookRunner`` is the interface the provision core depends on: run a playbook, streaming every
Ansible event to a callback as it arrives, and list a playbook's tags. ``AnsibleRunner`` is the real
one (ansible-runner's ``run_async``); ``FakeRunner`` replays scripted events for unit tests.

``EventTally`` counts per-host results from the events themselves (``runner_on_ok``,
``runner_on_failed``, ...), so results are live and never re-read from the artifacts directory; the
final ``playbook_on_stats`` event, Ansible's own count, overrides the live one for the hosts it names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from fleetctl import async_jobs
from fleetctl.assets import ansible_roles_path, cache_prefixes
from fleetctl.orphan_guard import OrphanGuard
from fleetctl.state.location import child_env

Event = Mapping[str, Any]
EventCallback = Callable[[Event], None]
CancelCheck = Callable[[], bool]

# ansible-playbook's prompt for --ask-vault-pass; answered through pexpect, never written to disk.
VAULT_PROMPT = r"^Vault password[^:\n]*:\s*$"

# paramiko asks on ansible-playbook's terminal (here: pexpect's pty) whether to trust an unknown
# host key, and takes an empty answer as yes. fleetctl always answers no: keys are trusted through
# known_hosts, or checking is turned off explicitly (--no-host-key-checking), never by a prompt.
HOST_KEY_PROMPT = r"Are you sure you want to continue connecting \(yes/no\)\?"

# Worst first: the order of the final table and of a host's overall state.
HOST_STATES = ("failed", "unreachable", "pending", "changed", "ok")


@dataclass(frozen=True)
class PlaybookRequest:
    """Everything one ansible-playbook invocation needs. No secret goes into ``cmdline``/``envvars``
    (ansible-runner writes both into its artifacts); secrets travel in ``passwords`` only."""

    playbook: Path
    inventory: Sequence[str]
    private_data_dir: Path
    ident: str
    cwd: Path
    limit: str | None = None
    cmdline: Sequence[str] = ()
    envvars: Mapping[str, str] = field(default_factory=dict)
    passwords: Mapping[str, str] = field(default_factory=dict)
    forks: int | None = None

    @property
    def artifacts_dir(self) -> Path:
        return self.private_data_dir / "artifacts" / self.ident


@dataclass(frozen=True)
class RunOutcome:
    """How the ansible-playbook process ended (host results live in the tally, not here)."""

    status: str  # successful | failed | canceled | timeout
    rc: int | None
    artifacts_dir: Path
    # After a cancel: one line per host whose async jobs could not be stopped (fleetctl.async_jobs).
    notes: tuple[str, ...] = ()


class PlaybookRunner(Protocol):
    def run(
        self, request: PlaybookRequest, on_event: EventCallback, should_cancel: CancelCheck
    ) -> RunOutcome:
        """Run the playbook; call ``on_event`` for each event as it arrives; stop when
        ``should_cancel()`` turns true (killing the whole ansible process group)."""
        ...

    def list_tags(self, request: PlaybookRequest) -> set[str]:
        """Every tag the playbook declares (``ansible-playbook --list-tags``)."""
        ...


class ListTagsError(Exception):
    """ansible-playbook could not parse the playbook/inventory; the message is its own error line."""


def ansible_bin(name: str) -> str:
    """The Ansible executable next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _runner_path() -> str:
    # ansible-runner execs "ansible-playbook" through PATH: make the venv's bin dir win.
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


class AnsibleRunner:
    """The real adapter: ansible-runner's ``run_async`` in pexpect mode."""

    # How often (s) ansible-runner polls the cancel callback; its default of 5 s makes Ctrl-C sluggish.
    poll_interval: float = 0.25
    # Seconds Ansible gets after SIGTERM to stop its workers before everything left is SIGKILLed.
    termination_grace: float = 5.0
    # Seconds the remote stop of a canceled run's async jobs may take (fleetctl.async_jobs).
    cleanup_timeout: int = async_jobs.CLEANUP_TIMEOUT_S

    def run(
        self, request: PlaybookRequest, on_event: EventCallback, should_cancel: CancelCheck
    ) -> RunOutcome:
        import ansible_runner  # heavy: imported only when a run starts

        request.private_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

        # Async jobs run on their hosts beyond any local signal: mark, record and, on a cancel (or
        # through the guard, if this process dies), stop them there (see fleetctl.async_jobs).
        token = async_jobs.new_token()
        # Each fleet its own cached facts, for the run and the stop of its async jobs alike.
        prefixes = cache_prefixes(request.inventory, cwd=request.cwd)
        # ansible-runner copies this process's environment into Ansible's and into its `command`
        # artifact, and adds to it only: a secret there (FLEETCTL_DB's password) is masked.
        spec = async_jobs.CleanupSpec(
            inventory=list(request.inventory), cmdline=list(request.cmdline),
            envvars={"PATH": _runner_path(), **prefixes, **request.envvars, **child_env()},
            cwd=str(request.cwd),
            directory=str(request.private_data_dir / async_jobs.DIR_NAME / request.ident),
            timeout_s=self.cleanup_timeout, forks=request.forks,
        )
        spec_path = spec.save()
        jobs = async_jobs.AsyncJobs(token, async_jobs.async_dir_for(token), save_to=spec.jobs_file)
        jobs.save()

        def handle(event: dict[str, Any]) -> bool:
            jobs.feed(event)
            on_event(event)
            return True  # keep writing job_events/ into the artifacts directory

        guard = OrphanGuard(self.termination_grace,
                            then=[sys.executable, "-P", "-m", "fleetctl.async_jobs", str(spec_path)])
        envvars = {"PATH": _runner_path(), "ANSIBLE_ASYNC_DIR": jobs.async_dir,
                   "ANSIBLE_ROLES_PATH": ansible_roles_path(cwd=request.cwd, playbook=request.playbook),
                   **prefixes,
                   **spec.install_callback(), **request.envvars, **guard.envvars, **child_env()}
        stopped = False

        def cancel_check() -> bool:
            nonlocal stopped
            if not should_cancel():
                return False
            if not stopped:
                stopped = True
                # Async tasks detached from this tree: the guard stops them as the run ends.
                guard.stop_on_exit = True
                stop_ansible_processes(self.termination_grace)
            return True  # ansible-runner then SIGKILLs the process group and reports "canceled"

        # If this process dies before the run ends, the guard stops every process of the run.
        with guard:
            thread, runner = ansible_runner.run_async(
                private_data_dir=str(request.private_data_dir),
                project_dir=str(request.cwd),
                ident=request.ident,
                playbook=str(request.playbook),
                inventory=list(request.inventory),
                limit=request.limit,
                forks=request.forks,
                cmdline=shlex.join(request.cmdline) if request.cmdline else None,
                envvars=envvars,
                passwords={HOST_KEY_PROMPT: "no", **request.passwords},
                settings={"pexpect_timeout": self.poll_interval},
                # Not "jsonfile": ansible-runner would then point Ansible's fact cache into the
                # artifacts dir, overriding ansible.cfg's (facts gathered on every run).
                fact_cache_type="ansible.cfg",
                # Keep passwords/envvars out of private_data_dir/env/ (they would be written there).
                suppress_env_files=True,
                quiet=True,
                event_handler=handle,
                cancel_callback=cancel_check,
            )
            thread.join()
        notes: tuple[str, ...] = ()
        if stopped:  # the guard has stopped this machine's part; now the hosts' part
            notes = self._stop_remote_jobs(spec, jobs, request.passwords)
        return RunOutcome(status=str(runner.status), rc=runner.rc, artifacts_dir=request.artifacts_dir,
                          notes=notes)

    def _stop_remote_jobs(
        self, spec: async_jobs.CleanupSpec, jobs: async_jobs.AsyncJobs, passwords: Mapping[str, str]
    ) -> tuple[str, ...]:
        """The remote cleanup after a cancel, which a second Ctrl-C (or SIGTERM) skips."""
        with _second_interrupt() as again:
            halted = False

            def skip() -> bool:
                nonlocal halted
                if again is None or not again.is_set():
                    return False
                if not halted:  # ansible-runner kills the process group; Ansible's workers left it
                    halted = True
                    stop_ansible_processes(self.termination_grace)
                return True

            report = async_jobs.stop_remote_jobs(
                spec, jobs, {HOST_KEY_PROMPT: "no", **passwords}, say=_say,
                skip=skip if again is not None else None,
            )
        return tuple(report.lines())

    def list_tags(self, request: PlaybookRequest) -> set[str]:
        argv = [ansible_bin("ansible-playbook"), "--list-tags", str(request.playbook)]
        for source in request.inventory:
            argv += ["-i", source]
        if request.limit:
            argv += ["--limit", request.limit]
        argv += list(request.cmdline)
        stdin = None
        if request.passwords:
            # The prompted vault password reaches this process through a pipe, never a file or argv.
            argv.append("--vault-password-file=/dev/stdin")
            argv = [a for a in argv if a != "--ask-vault-pass"]
            stdin = next(iter(request.passwords.values())) + "\n"
        roles = ansible_roles_path(cwd=request.cwd, playbook=request.playbook)
        env = {**os.environ, "ANSIBLE_ROLES_PATH": roles, **request.envvars,
               "PATH": _runner_path(), "ANSIBLE_NOCOLOR": "1", **child_env()}
        proc = subprocess.run(
            argv, cwd=request.cwd, env=env, input=stdin, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise ListTagsError(_ansible_error_line(proc.stderr or proc.stdout))
        return parse_list_tags(proc.stdout)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _second_interrupt() -> Iterator[threading.Event | None]:
    """An event a Ctrl-C (or SIGTERM) sets while inside; None where no handler can be installed
    (not the main thread, or both signals ignored, as under nohup). The caller's handlers (the
    CLI's, which set the first cancel) are back on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    event = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # None: a handler installed from C, which Python cannot put back: leave that signal alone
        if signal.getsignal(sig) not in (signal.SIG_IGN, None):
            previous[sig] = signal.signal(sig, lambda _signum, _frame: event.set())
    try:
        yield event if previous else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_ansible_processes(grace: float) -> None:
    """Stop every ansible-playbook child of this process and all its descendants.

    ansible-runner only kills ansible-playbook's process group, but Ansible's workers call
    ``setsid()``: they and the module processes they started (a ``command`` task's program, ssh)
    would outlive a cancel. The tree is read before anything is signalled, so reparented
    processes are still known; SIGTERM first (Ansible forwards it to its workers), then SIGKILL.
    """
    import psutil

    tree: list[psutil.Process] = []
    for child in psutil.Process().children():
        try:
            if "ansible-playbook" in " ".join(child.cmdline()):
                tree += [child, *child.children(recursive=True)]
        except psutil.Error:
            continue
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.1)
    for proc in tree:
        if _alive(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _alive(proc: Any) -> bool:
    # Not proc.wait(): that would reap ansible-playbook, which pexpect must reap itself.
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


_TAGS_LINE = re.compile(r"(?:TASK TAGS|TAGS):\s*\[(?P<tags>[^\]]*)\]")


def parse_list_tags(output: str) -> set[str]:
    """Tags from ``ansible-playbook --list-tags`` output (``TASK TAGS: [a, b]`` per play)."""
    tags: set[str] = set()
    for match in _TAGS_LINE.finditer(output):
        tags.update(t.strip() for t in match.group("tags").split(",") if t.strip())
    return tags


def _ansible_error_line(text: str) -> str:
    """The first line of Ansible's error output that says something (``[ERROR]: ...``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "ERROR" in line:
            return line
    return lines[0] if lines else "ansible-playbook failed without output"


@dataclass
class HostResult:
    """One host's results in a run. Counts follow Ansible's ``playbook_on_stats``."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    ignored: int = 0
    rescued: int = 0
    started: str | None = None  # ISO timestamps from the events
    ended: str | None = None
    first_failure: str | None = None
    last_task: str | None = None

    @property
    def state(self) -> str:
        if self.failed:
            return "failed"
        if self.unreachable:
            return "unreachable"
        if self.changed:
            return "changed"
        if self.ok or self.skipped or self.ignored or self.rescued:
            return "ok"
        return "pending"  # no task reached this host (yet)

    @property
    def duration_s(self) -> float | None:
        if not self.started or not self.ended:
            return None
        return max(0.0, (_parse_time(self.ended) - _parse_time(self.started)).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "state": self.state,
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "skipped": self.skipped,
            "ignored": self.ignored,
            "rescued": self.rescued,
            "started": self.started,
            "ended": self.ended,
            "duration_s": self.duration_s,
            "first_failure": self.first_failure,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostResult:
        names = (
            "ok", "changed", "failed", "unreachable", "skipped", "ignored", "rescued",
        )
        result = cls(
            host=str(data["host"]),
            started=data.get("started"),
            ended=data.get("ended"),
            first_failure=data.get("first_failure"),
        )
        for name in names:
            setattr(result, name, int(data.get(name) or 0))
        return result


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def worst_first(results: Sequence[HostResult]) -> list[HostResult]:
    return sorted(results, key=lambda r: (HOST_STATES.index(r.state), r.host))


def failure_message(res: Mapping[str, Any]) -> str:
    """The one line that says why a task failed, from a ``res`` payload."""
    for key in ("msg", "stderr", "reason", "stdout"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    results = res.get("results")
    if isinstance(results, list):  # a loop: the first failed item
        for item in results:
            if isinstance(item, Mapping) and item.get("failed"):
                return failure_message(item)
    return "failed without a message"


_STATS_FIELDS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "ignored": "ignored",
    "rescued": "rescued",
}


class EventTally:
    """Live per-host results and the current play/task, fed one Ansible event at a time.

    Thread-safe: ansible-runner calls ``feed`` from its own thread while the UI reads snapshots.
    """

    def __init__(self, hosts: Sequence[str] = (), redact: Callable[[str], str] = lambda s: s) -> None:
        self._lock = threading.Lock()
        self.redact = redact
        self.hosts: dict[str, HostResult] = {h: HostResult(h) for h in hosts}
        self.play: str | None = None
        self.task: str | None = None
        self.plays_started = 0
        self.stats_seen = False
        self.finished_hosts: set[str] = set()
        self.tail: deque[str] = deque(maxlen=20)  # Ansible's own lines outside host events (errors)

    def _host(self, name: str) -> HostResult:
        if name not in self.hosts:
            self.hosts[name] = HostResult(name)
        return self.hosts[name]

    def feed(self, event: Event) -> None:
        name = str(event.get("event", ""))
        data: Mapping[str, Any] = event.get("event_data") or {}
        with self._lock:
            if name == "playbook_on_play_start":
                self.plays_started += 1
                self.play = self.redact(str(data.get("play") or data.get("name") or ""))
                self.task = None
            elif name == "playbook_on_task_start":
                self.task = self.redact(str(data.get("task") or data.get("name") or ""))
            elif name == "playbook_on_stats":
                self._apply_stats(data)
            elif name.startswith("runner_") and data.get("host"):
                self._apply_host_event(name, data)
            elif name == "verbose" and not data.get("host"):
                text = str(event.get("stdout") or "").strip()
                if text:
                    self.tail.append(self.redact(text))

    def _apply_host_event(self, name: str, data: Mapping[str, Any]) -> None:
        host = self._host(str(data["host"]))
        res: Mapping[str, Any] = data.get("res") or {}
        if data.get("start") and (host.started is None or str(data["start"]) < host.started):
            host.started = str(data["start"])
        if data.get("end"):
            host.ended = max(host.ended or "", str(data["end"]))
        if data.get("task"):
            host.last_task = self.redact(str(data["task"]))  # a task name may template a secret
        task = str(data.get("task") or "?")
        if name == "runner_on_ok":
            host.ok += 1
            if res.get("changed"):
                host.changed += 1
        elif name in ("runner_on_failed", "runner_on_async_failed"):
            if data.get("ignore_errors"):
                host.ignored += 1
            else:
                host.failed += 1
                self.finished_hosts.add(host.host)
                if host.first_failure is None:
                    host.first_failure = self.redact(f"{task}: {failure_message(res)}")
        elif name == "runner_on_unreachable":
            host.unreachable += 1
            self.finished_hosts.add(host.host)
            if host.first_failure is None:
                host.first_failure = self.redact(f"{task}: {failure_message(res)}")
        elif name == "runner_on_skipped":
            host.skipped += 1

    def _apply_stats(self, data: Mapping[str, Any]) -> None:
        self.stats_seen = True
        processed = data.get("processed") or {}
        for field_name, attr in _STATS_FIELDS.items():
            per_host = data.get(field_name) or {}
            for host_name in processed:
                setattr(self._host(str(host_name)), attr, int(per_host.get(host_name, 0)))
        self.finished_hosts.update(str(h) for h in processed)

    def snapshot(self) -> list[HostResult]:
        with self._lock:
            return [HostResult(**vars(r)) for r in self.hosts.values()]

    def current(self) -> tuple[str | None, str | None, int]:
        """(play, task, hosts finished)."""
        with self._lock:
            return self.play, self.task, len(self.finished_hosts)


@dataclass
class FakeRunner:
    """Replays scripted events; for unit tests."""

    events: Sequence[Event] = ()
    events_for: Callable[[PlaybookRequest], Sequence[Event]] | None = None  # per request (batches)
    tags: set[str] = field(default_factory=set)
    status: str = "successful"
    rc: int = 0
    requests: list[PlaybookRequest] = field(default_factory=list)
    on_cancel_poll: Callable[[int], None] | None = None  # hook: called before each cancel poll
    notes: tuple[str, ...] = ()  # what a cancel reports (AnsibleRunner: async jobs not stopped)

    def run(
        self, request: PlaybookRequest, on_event: EventCallback, should_cancel: CancelCheck
    ) -> RunOutcome:
        self.requests.append(request)
        events = self.events_for(request) if self.events_for is not None else self.events
        for index, event in enumerate(events):
            if self.on_cancel_poll is not None:
                self.on_cancel_poll(index)
            if should_cancel():
                return RunOutcome("canceled", 254, request.artifacts_dir, notes=self.notes)
            on_event(event)
        return RunOutcome(self.status, self.rc, request.artifacts_dir)

    def list_tags(self, request: PlaybookRequest) -> set[str]:
        self.requests.append(request)
        return set(self.tags)


def fake_event(name: str, host: str | None = None, **data: Any) -> dict[str, Any]:
    """An event shaped like ansible-runner's (``event``, ``event_data`` with host/task/res...)."""
    event_data = dict(data)
    if host is not None:
        event_data["host"] = host
    stdout = str(event_data.pop("stdout", ""))
    return {"event": name, "event_data": event_data, "stdout": stdout}
