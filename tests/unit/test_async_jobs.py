"""The remote cleanup after a canceled provision: which hosts it dials, with what, and how it is skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fleetctl import async_jobs, async_stop, runner
from fleetctl.async_jobs import AsyncJobs, CleanupSpec, read_starts, stop_remote_jobs
from fleetctl.runner import AnsibleRunner, fake_event

TOKEN = "ab12cd34ef56ab78"


def _spec(tmp_path: Path, forks: int | None = None) -> CleanupSpec:
    return CleanupSpec(inventory=["inv.yml"], cmdline=["--user", "ops"], envvars={}, cwd=str(tmp_path),
                       directory=str(tmp_path / "async-stop" / "run"), timeout_s=9, forks=forks)


def _jobs() -> AsyncJobs:
    return AsyncJobs(TOKEN, f"~/.ansible_async/fleetctl-{TOKEN}")


def _job(host: str, jid: str) -> dict[str, Any]:
    return fake_event("runner_on_ok", host, res={"ansible_job_id": jid, "started": 1})


class _Spy:
    """Stands in for ``ansible_runner.run``: records its arguments; ``during`` runs while it "runs"."""

    def __init__(self, status: str = "successful", during: Any = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status, self.during = status, during

    def __call__(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(kwargs)
        status = self.during(kwargs) if self.during else self.status
        return SimpleNamespace(status=status)


def _notes(tmp_path: Path, lines: list[dict[str, object]]) -> None:
    spec = _spec(tmp_path)
    spec.starts_file.parent.mkdir(parents=True, exist_ok=True)
    spec.starts_file.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"host": "torn')


def test_a_run_without_async_tasks_dials_no_host(tmp_path: Path) -> None:
    jobs = _jobs()
    for i in range(300):  # a plain task ran everywhere, one host was unreachable, then Ctrl-C
        jobs.feed(fake_event("runner_on_start", f"h{i:03d}", task="plain"))
        jobs.feed(fake_event("runner_on_ok", f"h{i:03d}", res={"changed": False}))
    jobs.feed(fake_event("runner_on_unreachable", "h999", res={"msg": "timed out"}))
    spy = _Spy()
    said: list[str] = []
    report = stop_remote_jobs(_spec(tmp_path), jobs, run=spy, say=said.append)
    assert spy.calls == [] and said == [] and report.lines() == []


def test_the_cleanup_dials_hosts_with_jobs_or_async_starts_never_unreachable_ones(tmp_path: Path) -> None:
    jobs = _jobs()
    jobs.feed(_job("n1", "j1.2"))  # poll: 0: an event named the job
    jobs.feed(_job("n5", "j5.6"))
    jobs.feed(fake_event("runner_on_unreachable", "n5", res={"msg": "gone"}))  # then went away
    jobs.feed(fake_event("runner_on_unreachable", "n6", res={"msg": "gone"}))
    _notes(tmp_path, [
        {"host": "n2", "task": "t1", "running": True},  # polled, canceled before its first poll
        {"host": "n3", "task": "t1", "running": True}, {"host": "n3", "task": "t1", "running": False},
        {"host": "n6", "task": "t1", "running": True},  # unreachable: never dialed
    ])
    assert read_starts(_spec(tmp_path).starts_file) == {"n2", "n6"}
    spy = _Spy()
    said: list[str] = []
    report = stop_remote_jobs(_spec(tmp_path, forks=40), jobs, run=spy, say=said.append)
    (call,) = spy.calls
    work = Path(call["playbook"]).parent
    assert (work / "hosts.txt").read_text() == "n1\nn2\n"
    assert call["forks"] == 40  # the run's --forks
    assert said == ["stopping async jobs on 2 hosts (up to 9 s)"]  # no skip offered: no hint
    assert report.lines() == ["async jobs not stopped on n5: unreachable during the run",
                              "async jobs not stopped on n1, n2: cleanup ended successful"]
    # given explicitly, so ansible-runner never installs its own SIGINT/SIGTERM handlers
    assert call["cancel_callback"]() is False


def test_a_second_ctrl_c_skips_the_cleanup_and_names_the_hosts_not_done(tmp_path: Path) -> None:
    jobs = _jobs()
    for host in ("n1", "n2", "n3"):
        jobs.feed(_job(host, "j1.2"))
    pressed: list[bool] = []

    def during(kwargs: dict[str, Any]) -> str:
        kwargs["event_handler"](fake_event("runner_on_ok", "n1", res={"stopped": [7]}))
        assert kwargs["cancel_callback"]() is False
        pressed.append(True)
        assert kwargs["cancel_callback"]() is True
        return "canceled"

    said: list[str] = []
    report = stop_remote_jobs(_spec(tmp_path), jobs, run=_Spy(during=during), say=said.append,
                              skip=lambda: bool(pressed))
    assert said == ["stopping async jobs on 3 hosts (up to 9 s; Ctrl-C again to skip)"]
    assert report.stopped == {"n1": 1}
    assert report.lines() == ["async jobs not stopped on n2, n3: skipped (Ctrl-C)"]


def test_the_adapter_skips_on_a_real_second_sigint_and_gives_the_handlers_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def run(**kwargs: Any) -> SimpleNamespace:
        cancel = kwargs["cancel_callback"]
        seen["before"] = cancel()
        signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, delivered to this (main) thread
        seen["after"] = cancel()
        return SimpleNamespace(status="canceled")

    monkeypatch.setitem(sys.modules, "ansible_runner", SimpleNamespace(run=run))
    monkeypatch.setattr(runner, "stop_ansible_processes", lambda grace: seen.setdefault("stopped", grace))
    # Python's own Ctrl-C handler is in place even where the run inherited SIGINT ignored (which the
    # adapter rightly leaves alone): tests/conftest.py puts it back.
    mine = signal.getsignal(signal.SIGINT)
    jobs = _jobs()
    jobs.feed(_job("n1", "j1.2"))
    notes = AnsibleRunner()._stop_remote_jobs(_spec(tmp_path), jobs, {})
    assert (seen["before"], seen["after"]) == (False, True) and "stopped" in seen
    assert notes == ("async jobs not stopped on n1: skipped (Ctrl-C)",)
    assert "stopping async jobs on 1 host (up to 9 s; Ctrl-C again to skip)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is mine  # the caller's handler is back


def test_feed_reads_job_ids_of_loop_items(tmp_path: Path) -> None:
    jobs = _jobs()
    jobs.feed(fake_event("runner_on_ok", "n1", res={"results": [
        {"ansible_job_id": "j1.2", "results_file": "/root/.ansible_async/j1.2"},
        {"ansible_job_id": "j3.4"}, "junk"]}))
    assert jobs.snapshot()["n1"] == async_jobs.HostJobs(["j1.2", "j3.4"], ["/root/.ansible_async/j1.2"])


def test_a_host_answering_again_is_no_longer_unreachable() -> None:
    jobs = _jobs()
    jobs.feed(fake_event("runner_on_unreachable", "n1", res={}))
    jobs.feed(fake_event("runner_on_ok", "n1", res={}))  # ignore_unreachable, then it answered
    assert jobs.unreachable_hosts() == set()


def test_job_ids_need_the_j_prefix() -> None:
    assert async_jobs.valid_job_id("j123.456") == "j123.456"
    assert async_jobs.valid_job_id("3600.1") is None


def test_a_job_id_matches_only_right_after_the_wrapper_path() -> None:
    wrapper = b"\0".join([b"/usr/bin/python3", b"/tmp/ansible-tmp-1/async_wrapper.py", b"j42", b"3600",
                          b"/tmp/ansible-tmp-1/AnsiballZ_command.py", b"_"])
    assert async_stop.names_job(wrapper, ["j42"])
    assert not async_stop.names_job(wrapper, ["3600"])  # the time limit is not a job id
    assert not async_stop.names_job(wrapper, ["_"])
    shebang = b"\0".join([b"/tmp/ansible-tmp-1/async_wrapper.py", b"j42", b"60", b"m.py", b"_"])
    assert async_stop.names_job(shebang, ["j42"])
    assert not async_stop.names_job(b"\0".join([b"sleep", b"j42"]), ["j42"])


def test_the_watchdog_path_passes_the_saved_forks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path, forks=25)
    path = spec.save()
    jobs = AsyncJobs(TOKEN, "d", save_to=spec.jobs_file)
    jobs.feed(_job("n1", "j1.2"))
    spy = _Spy()
    monkeypatch.setitem(sys.modules, "ansible_runner", SimpleNamespace(run=spy))
    assert async_jobs.main([str(path)]) == 0
    (call,) = spy.calls
    assert call["forks"] == 25 and call["cancel_callback"]() is False


def test_the_callback_plugin_notes_only_hosts_an_async_job_may_still_run_on(tmp_path: Path) -> None:
    """A real ansible-playbook (local connection) with the plugin fleetctl installs for a run."""
    playbook = tmp_path / "pb.yml"
    playbook.write_text("""\
- hosts: all
  gather_facts: false
  tasks:
    - {name: plain, command: "true"}
    - {name: polled to its end, command: "true", async: 30, poll: 1}
    - {name: skipped, command: "true", async: 30, poll: 0, when: "inventory_hostname == 'nowhere'"}
    - {name: fire and forget, command: "true", async: 30, poll: 0, when: "inventory_hostname == 'h1'"}
""")
    inventory = tmp_path / "hosts"
    inventory.write_text("".join(f"{h} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
                                 for h in ("h1", "h2")))
    spec = _spec(tmp_path)
    env = {**os.environ, **spec.install_callback(), "ANSIBLE_ASYNC_DIR": str(tmp_path / "jobs"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.run([runner.ansible_bin("ansible-playbook"), "-i", str(inventory), str(playbook)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert read_starts(spec.starts_file) == {"h1"}
