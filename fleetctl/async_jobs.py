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
  (``results_file``) the run's events named (``runner_on_ok`` of a ``poll: 0`` task,
  ``runner_on_async_poll``/``_ok``/``_failed``), and the hosts any task started on. It saves them
  atomically under the run's private directory for the watchdog.
- Stopping: ``stop_remote_jobs`` runs a small internal playbook through ansible-runner against the
  run's hosts, with the run's inventory and connection options (``--connection``, ``--user``,
  ``--private-key``, vault options, the same extra-vars files), never a shell string. Its module
  (``fleetctl/async_stop.py``, copied into the playbook's ``library/``) SIGTERMs then SIGKILLs every
  marked or named job process with its descendants and removes the run's job directory and the
  named job files. ``async_status mode=cleanup`` would only delete the job file, not stop the job.
  Job ids are validated before use. The whole step is bounded (``CLEANUP_TIMEOUT_S``); a host that
  does not answer is named in one line and the run is recorded as it would have been.
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
               "runner_on_failed")

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
    """The async jobs one ansible-playbook run started, fed from its events (thread-safe).

    ``save_to``: a file rewritten atomically whenever a host or job is first seen, for the watchdog.
    """

    def __init__(self, token: str, async_dir: str, save_to: Path | None = None) -> None:
        self.token, self.async_dir, self.save_to = token, async_dir, save_to
        self.hosts: dict[str, HostJobs] = {}
        self._lock = threading.Lock()

    def feed(self, event: Mapping[str, Any]) -> None:
        name = str(event.get("event", ""))
        data: Mapping[str, Any] = event.get("event_data") or {}
        host = data.get("host")
        if not name.startswith("runner_") or not isinstance(host, str) or not host:
            return
        res = data.get("res") if name in _JOB_EVENTS else None
        jid = valid_job_id(res.get("ansible_job_id")) if isinstance(res, Mapping) else None
        path = res.get("results_file") if isinstance(res, Mapping) else None
        with self._lock:
            changed = host not in self.hosts
            jobs = self.hosts.setdefault(host, HostJobs())
            if jid and jid not in jobs.jobs:
                jobs.jobs.append(jid)
                changed = True
            if (isinstance(path, str) and _SAFE_PATH.match(path) and JOB_ID.match(os.path.basename(path))
                    and path not in jobs.files):
                jobs.files.append(path)
                changed = True
            if changed and self.save_to is not None:
                self._save(self.save_to)

    def snapshot(self) -> dict[str, HostJobs]:
        with self._lock:
            return {h: HostJobs(list(j.jobs), list(j.files)) for h, j in self.hosts.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "async_dir": self.async_dir,
                "hosts": {h: asdict(j) for h, j in self.snapshot().items()}}

    def _save(self, path: Path) -> None:
        data = {"token": self.token, "async_dir": self.async_dir,
                "hosts": {h: asdict(j) for h, j in self.hosts.items()}}
        write_atomic(path, json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> AsyncJobs:
        data = json.loads(path.read_text())
        jobs = cls(str(data["token"]), str(data["async_dir"]))
        for host, entry in (data.get("hosts") or {}).items():
            jobs.hosts[str(host)] = HostJobs(
                [j for j in entry.get("jobs", []) if valid_job_id(j)],
                [f for f in entry.get("files", []) if isinstance(f, str) and _SAFE_PATH.match(f)],
            )
        return jobs


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

    @property
    def jobs_file(self) -> Path:
        return Path(self.directory) / "jobs.json"

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


def stop_remote_jobs(
    spec: CleanupSpec, jobs: AsyncJobs, passwords: Mapping[str, str] | None = None,
    run: Callable[..., Any] | None = None,
) -> CleanupReport:
    """Run the internal cleanup playbook on every host a task of the run started on."""
    report = CleanupReport()
    hosts = sorted(jobs.snapshot())
    if not hosts:
        return report
    import ansible_runner  # heavy: only when there is something to stop

    run = run or ansible_runner.run
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

    try:
        result = run(
            private_data_dir=str(base / "runner"),
            project_dir=str(spec.cwd),
            playbook=str(work / "stop.yml"),
            inventory=list(spec.inventory),
            limit=f"@{work / 'hosts.txt'}",
            cmdline=shlex.join(cmdline),
            envvars={**spec.envvars},
            passwords=dict(passwords or {}),
            timeout=spec.timeout_s,
            settings={"pexpect_timeout": 0.25},
            fact_cache_type="ansible.cfg",
            suppress_env_files=True,
            quiet=True,
            event_handler=handle,
        )
        status = str(getattr(result, "status", ""))
    except Exception as exc:  # noqa: BLE001 - the run is recorded anyway; the cause is named
        report.problems.append(f"async jobs not stopped on {', '.join(hosts)}: {' '.join(str(exc).split())}")
        return report
    silent = [h for h in hosts if h not in answered]
    if silent:
        why = f"no answer within {spec.timeout_s} s" if status == "timeout" else f"cleanup ended {status}"
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
        return 0  # no task started on any host
    from fleetctl.runner import HOST_KEY_PROMPT

    report = stop_remote_jobs(spec, AsyncJobs.load(spec.jobs_file), {HOST_KEY_PROMPT: "no"})
    lines = report.lines() or [f"stopped {sum(report.stopped.values())} process(es) on "
                               f"{len(report.stopped)} host(s)"]
    write_atomic(Path(spec.directory) / "outcome.txt", "".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
