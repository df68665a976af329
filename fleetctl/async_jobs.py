"""Stop the Ansible async jobs a canceled (or killed) provision left running on remote hosts.

A task with ``async:`` runs on its host under async_wrapper, a daemon that double-forks away from
the SSH session: stopping ansible-playbook and its local tree (``orphan_guard``) leaves it running.
So each run marks its jobs, records them, and on a cancel stops them on the hosts themselves:

- Marking: fleetctl sets ``ANSIBLE_ASYNC_DIR`` to a directory of the run's own,
  ``<base>/fleetctl-<token>`` (base: an inherited ``ANSIBLE_ASYNC_DIR``, else ``~/.ansible_async``).
  Ansible puts that value into the environment of async_wrapper on the host, and every process of
  the job inherits it; so a job started just before the cancel, before any event named its id, is
  found by the marker alone. Ansible's own ``async_status`` reads the same setting, so a playbook
  that polls its jobs is unaffected; only the directory holding the job files differs. A playbook
  or inventory that sets ``ansible_async_dir`` itself wins over the environment and defeats the
  marker: then only jobs already named by an event are found.
- Recording: ``AsyncJobs`` keeps, per host, the job ids (``ansible_job_id``) and job files
  (``results_file``) the run's events named (``runner_on_ok`` of a ``poll: 0`` task, loop items
  included, ``runner_on_async_poll``/``_ok``/``_failed``), and which hosts were last unreachable.
  It saves them atomically under the run's private directory for the watchdog. The events do not
  say whether a task is async (they carry the action and its arguments, not its keywords), and a
  polled job is named only at its first poll: so a callback plugin of fleetctl's (``CALLBACK``,
  loaded into the run's ansible-playbook) appends each host an async task starts on to
  ``starts.jsonl``, and takes it back when the task was skipped, unreachable, or polled to its end.
- Stopping: ``stop_remote_jobs`` runs a small internal playbook through ansible-runner against the
  hosts where an async job may still run (named by an event or by the plugin; never one last seen
  unreachable), with the run's inventory, ``--forks`` and connection options (``--connection``,
  ``--user``, ``--private-key``, vault options, the same extra-vars files), never a shell string.
  A run that started no async task dials no host. Its module
  (``fleetctl/async_stop.py``, copied into the playbook's ``library/``) SIGTERMs then SIGKILLs every
  marked or named job process with its descendants and removes the run's job directory and the
  named job files. ``async_status mode=cleanup`` would only delete the job file, not stop the job.
  Job ids are validated before use. The whole step is bounded (``CLEANUP_TIMEOUT_S``) and a second
  Ctrl-C skips it (the caller's ``skip``); a host that does not answer, or was skipped, is named in
  one line and the run is recorded as it would have been.
- A killed fleetctl (SIGKILL, OOM) runs no code: its watchdog (``orphan_guard``), which already stops
  the controller-side processes, then runs ``python -m fleetctl.async_jobs <spec>`` with the spec
  saved when the run started; the outcome lines land in ``async-stop/outcome.txt`` under the run's
  directory (the run itself is reaped as ``interrupted`` by the next fleetctl). A prompted vault
  password is never written down, so that cleanup runs without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.async_stop import JOB_ID, MARK_PREFIX

# Seconds the whole remote cleanup may take (ssh connect included) before hosts are named as not answering.
CLEANUP_TIMEOUT_S = 60
GRACE_S = 3.0
DIR_NAME = "async-stop"
# A job file path as the wrapper reports it; anything else (a value a host sent back) is not used.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./~-]{1,4096}$")
_JOB_EVENTS = ("runner_on_ok", "runner_on_async_poll", "runner_on_async_ok", "runner_on_async_failed",
               "runner_on_failed", "runner_item_on_ok", "runner_item_on_failed")
# A host that answers again (ignore_unreachable) is no longer taken as unreachable.
_ANSWERED = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_async_poll",
             "runner_on_async_ok", "runner_on_async_failed")
STARTS_ENV = "FLEETCTL_ASYNC_STARTS"  # the file the callback plugin appends to

# A callback plugin written next to the run (``<directory>/callback_plugins``) and loaded without
# being enabled: it appends one JSON line per change, a single write() to an O_APPEND file (a
# rewrite per event would cost a fleet's size squared; a torn last line is skipped on reading).
CALLBACK = """\
# Written by fleetctl (fleetctl/async_jobs.py): notes the hosts an async task starts on.
import json
import os

from ansible.plugins.callback import CallbackBase


def _number(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default  # not templated yet: counted as async, so its host is cleaned


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "fleetctl_async_starts"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("FLEETCTL_ASYNC_STARTS")
        self._open = set()

    def _note(self, host, task, running):
        key = (host, str(task._uuid))
        if not self._path or (key in self._open) == running:
            return
        (self._open.add if running else self._open.discard)(key)
        line = json.dumps({"host": host, "task": key[1], "running": running}) + "\\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def v2_runner_on_start(self, host, task):
        if _number(task.async_val, 1) > 0:
            self._note(host.get_name(), task, True)

    def _ended(self, result):
        self._note(result._host.get_name(), result._task, False)

    def v2_runner_on_ok(self, result):
        task = result._task
        if _number(task.async_val, 1) <= 0 or _number(task.poll, 0) > 0:
            self._ended(result)  # not async after all, or polled to its end: nothing runs

    v2_runner_on_skipped = v2_runner_on_unreachable = _ended

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._ended(result)
"""

PLAYBOOK = """\
# Written by fleetctl (fleetctl/async_jobs.py): stops a canceled run's async jobs.
- name: fleetctl stops a canceled run's async jobs
  hosts: all
  gather_facts: false
  tasks:
    - name: stop the run's async jobs
      fleetctl_async_stop: &args
        token: "{{ fleetctl_async.token }}"
        async_dir: "{{ fleetctl_async.async_dir }}"
        grace: "{{ fleetctl_async.grace }}"
        jobs: "{{ (fleetctl_async.hosts.get(inventory_hostname) or {}).get('jobs', []) }}"
        results_files: "{{ (fleetctl_async.hosts.get(inventory_hostname) or {}).get('files', []) }}"
      check_mode: false
      register: fleetctl_stopped
    - name: stop the run's async jobs of other users (become)
      fleetctl_async_stop: *args
      check_mode: false
      become: true
      when:
        - fleetctl_stopped.euid != 0
        - fleetctl_stopped.hidden > 0 or fleetctl_stopped.denied | length > 0
"""


def new_token() -> str:
    return secrets.token_hex(8)


def async_dir_for(token: str, environ: Mapping[str, str] | None = None) -> str:
    """The run's own ``ANSIBLE_ASYNC_DIR`` (left unexpanded: ``~`` is the remote user's home)."""
    base = (environ if environ is not None else os.environ).get("ANSIBLE_ASYNC_DIR") or "~/.ansible_async"
    return f"{base.rstrip('/')}/{MARK_PREFIX}{token}"


def valid_job_id(value: object) -> str | None:
    """``value`` if it is an Ansible job id (``j123.456``), else None."""
    return value if isinstance(value, str) and JOB_ID.match(value) else None


@dataclass
class HostJobs:
    jobs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class AsyncJobs:
    """The async jobs one ansible-playbook run's events named, fed from its events (thread-safe).

    ``save_to``: a file rewritten atomically whenever a job or a host's reachability changes, for
    the watchdog.
    """

    def __init__(self, token: str, async_dir: str, save_to: Path | None = None) -> None:
        self.token, self.async_dir, self.save_to = token, async_dir, save_to
        self.hosts: dict[str, HostJobs] = {}
        self.unreachable: set[str] = set()
        self._lock = threading.Lock()

    def feed(self, event: Mapping[str, Any]) -> None:
        name = str(event.get("event", ""))
        data: Mapping[str, Any] = event.get("event_data") or {}
        host = data.get("host")
        if not name.startswith("runner_") or not isinstance(host, str) or not host:
            return
        res = data.get("res") if name in _JOB_EVENTS else None
        found = _named_jobs(res) if isinstance(res, Mapping) else []
        with self._lock:
            changed = False
            if name == "runner_on_unreachable" and host not in self.unreachable:
                self.unreachable.add(host)
                changed = True
            elif name in _ANSWERED and host in self.unreachable:
                self.unreachable.discard(host)
                changed = True
            for jid, path in found:
                jobs = self.hosts.setdefault(host, HostJobs())
                if jid and jid not in jobs.jobs:
                    jobs.jobs.append(jid)
                    changed = True
                if path and path not in jobs.files:
                    jobs.files.append(path)
                    changed = True
            if changed:
                self._save()

    def save(self) -> None:
        """Write ``save_to`` now (the run's token, for the watchdog, before any event)."""
        with self._lock:
            self._save()

    def _save(self) -> None:
        if self.save_to is not None:
            write_atomic(self.save_to, json.dumps(self._dict()))

    def snapshot(self) -> dict[str, HostJobs]:
        with self._lock:
            return {h: HostJobs(list(j.jobs), list(j.files)) for h, j in self.hosts.items()}

    def unreachable_hosts(self) -> set[str]:
        with self._lock:
            return set(self.unreachable)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return self._dict()

    def _dict(self) -> dict[str, Any]:
        return {"token": self.token, "async_dir": self.async_dir,
                "hosts": {h: asdict(j) for h, j in self.hosts.items()},
                "unreachable": sorted(self.unreachable)}

    @classmethod
    def load(cls, path: Path) -> AsyncJobs:
        data = json.loads(path.read_text())
        jobs = cls(str(data["token"]), str(data["async_dir"]))
        for host, entry in (data.get("hosts") or {}).items():
            jobs.hosts[str(host)] = HostJobs(
                [j for j in entry.get("jobs", []) if valid_job_id(j)],
                [f for f in entry.get("files", []) if isinstance(f, str) and _SAFE_PATH.match(f)],
            )
        jobs.unreachable = {str(h) for h in data.get("unreachable") or []}
        return jobs


def _named_jobs(res: Mapping[str, Any]) -> list[tuple[str | None, str | None]]:
    """(job id, job file) pairs a result names: its own, and each loop item's (``results``)."""
    items = [res, *(r for r in res.get("results") or [] if isinstance(r, Mapping))]
    found: list[tuple[str | None, str | None]] = []
    for item in items:
        jid = valid_job_id(item.get("ansible_job_id"))
        path = item.get("results_file")
        safe = (path if isinstance(path, str) and _SAFE_PATH.match(path)
                and JOB_ID.match(os.path.basename(path)) else None)
        if jid or safe:
            found.append((jid, safe))
    return found


def read_starts(path: Path) -> set[str]:
    """The hosts the callback plugin (``CALLBACK``) saw an async task start on and not end."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return set()
    running: dict[tuple[str, str], bool] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line torn by a killed ansible-playbook
        if isinstance(entry, dict) and isinstance(entry.get("host"), str) and entry["host"]:
            running[(entry["host"], str(entry.get("task")))] = bool(entry.get("running"))
    return {host for (host, _), on in running.items() if on}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class CleanupSpec:
    """How to reach the run's hosts again: the run's own inventory and connection options."""

    inventory: list[str]
    cmdline: list[str]
    envvars: dict[str, str]
    cwd: str
    directory: str  # the run's private ``async-stop`` directory
    timeout_s: int = CLEANUP_TIMEOUT_S
    grace_s: float = GRACE_S
    forks: int | None = None  # the run's --forks: the cleanup reaches as many hosts at once

    @property
    def jobs_file(self) -> Path:
        return Path(self.directory) / "jobs.json"

    @property
    def starts_file(self) -> Path:
        return Path(self.directory) / "starts.jsonl"

    def install_callback(self) -> dict[str, str]:
        """Write the callback plugin for the run; return the environment that loads it."""
        plugins = Path(self.directory) / "callback_plugins"
        plugins.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(plugins / "fleetctl_async_starts.py", CALLBACK)
        inherited = os.environ.get("ANSIBLE_CALLBACK_PLUGINS", "")
        return {"ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(filter(None, [inherited, str(plugins)])),
                STARTS_ENV: str(self.starts_file)}

    def save(self) -> Path:
        path = Path(self.directory) / "spec.json"
        write_atomic(path, json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> CleanupSpec:
        return cls(**json.loads(path.read_text()))


# Options of the run that do not apply to the cleanup play (it must run whatever they select).
_DROPPED_WITH_VALUE = ("--tags", "--skip-tags", "--limit", "-l", "-t")
_DROPPED = ("--check", "-C", "--diff", "-D")


def cleanup_cmdline(cmdline: Sequence[str], with_vault_prompt: bool) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in cmdline:
        if skip:
            skip = False
        elif arg in _DROPPED_WITH_VALUE:
            skip = True
        elif arg in _DROPPED or (arg == "--ask-vault-pass" and not with_vault_prompt):
            continue
        else:
            out.append(arg)
    return out


@dataclass
class CleanupReport:
    stopped: dict[str, int] = field(default_factory=dict)  # host -> processes stopped
    problems: list[str] = field(default_factory=list)  # one line per host not cleaned

    def lines(self) -> list[str]:
        return list(self.problems)


def cleanup_hosts(spec: CleanupSpec, jobs: AsyncJobs) -> tuple[list[str], list[str]]:
    """(hosts to clean: an event named a job there or an async task started there; hosts last seen
    unreachable where an event named a job, which are not dialed again)."""
    named = jobs.snapshot()
    unreachable = jobs.unreachable_hosts()
    candidates = set(named) | read_starts(spec.starts_file)
    return sorted(candidates - unreachable), sorted(set(named) & unreachable)


def stop_remote_jobs(
    spec: CleanupSpec, jobs: AsyncJobs, passwords: Mapping[str, str] | None = None,
    run: Callable[..., Any] | None = None, say: Callable[[str], None] | None = None,
    skip: Callable[[], bool] | None = None,
) -> CleanupReport:
    """Run the internal cleanup playbook on every host where an async job of the run may run.

    ``say`` gets the one line announcing the cleanup; ``skip`` is polled while it runs (a second
    Ctrl-C): once true, the cleanup stops and the hosts not done yet are named as skipped.
    """
    report = CleanupReport()
    hosts, lost = cleanup_hosts(spec, jobs)
    if lost:
        report.problems.append(f"async jobs not stopped on {', '.join(lost)}: unreachable during the run")
    if not hosts:
        return report
    import ansible_runner  # heavy: only when there is something to stop

    run = run or ansible_runner.run
    if say is not None:
        hint = "; Ctrl-C again to skip" if skip is not None else ""
        say(f"stopping async jobs on {len(hosts)} host{'s' if len(hosts) != 1 else ''} "
            f"(up to {spec.timeout_s} s{hint})")
    base = Path(spec.directory)
    work = base / "play"
    shutil.rmtree(work, ignore_errors=True)
    (work / "library").mkdir(parents=True, mode=0o700)
    (base / "runner").mkdir(exist_ok=True, mode=0o700)
    (work / "stop.yml").write_text(PLAYBOOK)
    shutil.copyfile(Path(__file__).with_name("async_stop.py"), work / "library" / "fleetctl_async_stop.py")
    (work / "hosts.txt").write_text("".join(f"{h}\n" for h in hosts))
    variables = {"fleetctl_async": {**jobs.to_dict(), "grace": spec.grace_s}}
    (work / "vars.json").write_text(json.dumps(variables))
    vault_prompt = any("Vault password" in prompt for prompt in passwords or {})
    cmdline = [*cleanup_cmdline(spec.cmdline, vault_prompt), "--extra-vars", f"@{work / 'vars.json'}"]
    answered: set[str] = set()
    skipped = False

    def handle(event: dict[str, Any]) -> bool:
        name = str(event.get("event", ""))
        data: Mapping[str, Any] = event.get("event_data") or {}
        host = str(data.get("host") or "")
        res = data.get("res") or {}
        if not host or not isinstance(res, Mapping):
            return False
        if name == "runner_on_ok":
            answered.add(host)
            report.stopped[host] = report.stopped.get(host, 0) + len(res.get("stopped") or [])
        elif name in ("runner_on_failed", "runner_on_unreachable"):
            answered.add(host)
            why = "unreachable" if name == "runner_on_unreachable" else "failed"
            message = " ".join(str(res.get("msg") or "no message").split())[:300]
            report.problems.append(f"{host}: async jobs not stopped ({why}): {message}")
        return False  # nothing of the cleanup is kept in the artifacts

    def cancel() -> bool:
        nonlocal skipped
        skipped = skipped or (skip is not None and skip())
        return skipped

    try:
        result = run(
            private_data_dir=str(base / "runner"),
            project_dir=str(spec.cwd),
            playbook=str(work / "stop.yml"),
            inventory=list(spec.inventory),
            limit=f"@{work / 'hosts.txt'}",
            forks=spec.forks,
            cmdline=shlex.join(cmdline),
            envvars={**spec.envvars},
            passwords=dict(passwords or {}),
            timeout=spec.timeout_s,
            settings={"pexpect_timeout": 0.25},
            fact_cache_type="ansible.cfg",
            suppress_env_files=True,
            quiet=True,
            event_handler=handle,
            # Always given: without one, ansible-runner installs SIGINT/SIGTERM handlers of its own
            # in the main thread and leaves them there, swallowing every later Ctrl-C.
            cancel_callback=cancel,
        )
        status = str(getattr(result, "status", ""))
    except Exception as exc:  # noqa: BLE001 - the run is recorded anyway; the cause is named
        report.problems.append(f"async jobs not stopped on {', '.join(hosts)}: {' '.join(str(exc).split())}")
        return report
    silent = [h for h in hosts if h not in answered]
    if silent:
        if skipped:
            why = "skipped (Ctrl-C)"
        elif status == "timeout":
            why = f"no answer within {spec.timeout_s} s"
        else:
            why = f"cleanup ended {status}"
        report.problems.append(f"async jobs not stopped on {', '.join(silent)}: {why}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fleetctl.async_jobs SPEC``: the watchdog's cleanup after fleetctl died."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m fleetctl.async_jobs SPEC.json", file=sys.stderr)
        return 2
    spec = CleanupSpec.load(Path(args[0]))
    if not spec.jobs_file.is_file():
        return 0  # fleetctl died before ansible-playbook started
    from fleetctl.runner import HOST_KEY_PROMPT

    report = stop_remote_jobs(spec, AsyncJobs.load(spec.jobs_file), {HOST_KEY_PROMPT: "no"})
    lines = report.lines() or [f"stopped {sum(report.stopped.values())} process(es) on "
                               f"{len(report.stopped)} host(s)"]
    write_atomic(Path(spec.directory) / "outcome.txt", "".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
