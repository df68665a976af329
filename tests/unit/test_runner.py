"""EventTally: per-host results counted from ansible-runner events as they arrive."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from fleetctl import async_stop
from fleetctl.async_jobs import (
    AsyncJobs,
    CleanupSpec,
    HostJobs,
    async_dir_for,
    cleanup_cmdline,
    stop_remote_jobs,
)
from fleetctl.orphan_guard import MARK
from fleetctl.runner import (
    AnsibleRunner,
    EventTally,
    HostResult,
    PlaybookRequest,
    failure_message,
    fake_event,
    parse_list_tags,
    worst_first,
)


def _ok(host: str, task: str, changed: bool = False, **kw: object) -> dict[str, object]:
    return fake_event("runner_on_ok", host, task=task, res={"changed": changed}, **kw)


def test_counts_ok_changed_failed_unreachable_skipped_as_events_arrive() -> None:
    tally = EventTally(["a", "b", "c"])
    tally.feed(fake_event("playbook_on_play_start", play="Base"))
    tally.feed(fake_event("playbook_on_task_start", task="install"))
    tally.feed(_ok("a", "install", changed=True,
                   start="2026-01-01T00:00:00+00:00", end="2026-01-01T00:00:02+00:00"))
    tally.feed(fake_event("runner_on_failed", "b", task="install", res={"msg": "apt broke"}))
    tally.feed(fake_event("runner_on_unreachable", "c", task="install", res={"msg": "ssh: refused"}))
    assert tally.current() == ("Base", "install", 2)  # b and c are out of the play
    tally.feed(fake_event("playbook_on_task_start", task="configure"))
    tally.feed(_ok("a", "configure", end="2026-01-01T00:00:05+00:00"))
    tally.feed(fake_event("runner_on_skipped", "a", task="optional"))

    hosts = {h.host: h for h in tally.snapshot()}
    assert (hosts["a"].ok, hosts["a"].changed, hosts["a"].skipped, hosts["a"].state) == (2, 1, 1, "changed")
    assert hosts["a"].duration_s == 5.0
    assert hosts["a"].last_task == "optional"
    assert (hosts["b"].failed, hosts["b"].state) == (1, "failed")
    assert hosts["b"].first_failure == "install: apt broke"
    assert (hosts["c"].unreachable, hosts["c"].state) == (1, "unreachable")
    assert hosts["c"].first_failure == "install: ssh: refused"


def test_ignored_errors_do_not_fail_the_host() -> None:
    tally = EventTally(["a"])
    tally.feed(fake_event("runner_on_failed", "a", task="probe", ignore_errors=True, res={"msg": "nope"}))
    (a,) = tally.snapshot()
    assert (a.failed, a.ignored, a.state, a.first_failure) == (0, 1, "ok", None)


def test_first_failure_is_kept_and_later_ones_do_not_replace_it() -> None:
    tally = EventTally(["a"])
    tally.feed(fake_event("runner_on_failed", "a", task="one", res={"msg": "first"}))
    tally.feed(fake_event("runner_on_failed", "a", task="two", res={"msg": "second"}))
    assert tally.snapshot()[0].first_failure == "one: first"


def test_stats_event_overrides_live_counts_for_the_hosts_it_names() -> None:
    tally = EventTally(["a", "b"])
    tally.feed(_ok("a", "t"))
    tally.feed(fake_event(
        "playbook_on_stats",
        ok={"a": 3}, changed={"a": 2}, failures={}, dark={}, skipped={"a": 1},
        ignored={}, rescued={"a": 1}, processed={"a": 1},
    ))
    hosts = {h.host: h for h in tally.snapshot()}
    assert (hosts["a"].ok, hosts["a"].changed, hosts["a"].skipped, hosts["a"].rescued) == (3, 2, 1, 1)
    assert hosts["b"].state == "pending"  # never reached by a play
    assert tally.current()[2] == 1


def test_hosts_not_known_up_front_are_added() -> None:
    tally = EventTally([])
    tally.feed(_ok("surprise", "t"))
    assert [h.host for h in tally.snapshot()] == ["surprise"]


def test_redaction_applies_to_failure_messages_and_ansible_lines() -> None:
    tally = EventTally(["a"], redact=lambda s: s.replace("hunter2", "***"))
    tally.feed(fake_event("runner_on_failed", "a", task="t", res={"msg": "bad password hunter2"}))
    tally.feed(fake_event("verbose", stdout="ERROR! hunter2 is wrong"))
    assert tally.snapshot()[0].first_failure == "t: bad password ***"
    assert list(tally.tail) == ["ERROR! *** is wrong"]


def test_failure_message_prefers_msg_then_stderr_then_loop_items() -> None:
    assert failure_message({"msg": "  two\nlines "}) == "two lines"
    assert failure_message({"stderr": "E: boom", "stdout": "x"}) == "E: boom"
    loop = {"results": [{"failed": False, "msg": "fine"}, {"failed": True, "msg": "item 2 broke"}]}
    assert failure_message(loop) == "item 2 broke"
    assert failure_message({}) == "failed without a message"


def test_worst_first_orders_failed_unreachable_pending_changed_ok() -> None:
    hosts = [
        HostResult("ok1", ok=1),
        HostResult("chg", ok=1, changed=1),
        HostResult("pend"),
        HostResult("unr", unreachable=1),
        HostResult("bad", ok=2, failed=1),
    ]
    assert [h.host for h in worst_first(hosts)] == ["bad", "unr", "pend", "chg", "ok1"]


def test_host_result_round_trips_through_dict() -> None:
    h = HostResult("a", ok=2, changed=1, failed=1, started="2026-01-01T00:00:00+00:00",
                   ended="2026-01-01T00:01:00+00:00", first_failure="t: x")
    again = HostResult.from_dict(h.to_dict())
    assert again.to_dict() == h.to_dict()
    assert again.duration_s == 60.0


def test_parse_list_tags_reads_every_play() -> None:
    output = """
playbook: site.yml

  play #1 (all): Base\tTAGS: [base]
      TASK TAGS: [base, packages]

  play #2 (gpu): GPU\tTAGS: []
      TASK TAGS: [agent, nvidia]
"""
    assert parse_list_tags(output) == {"base", "packages", "agent", "nvidia"}
    assert parse_list_tags("  play #1 (all): x\tTAGS: []\n      TASK TAGS: []\n") == set()


def test_prompt_patterns_match_what_ansible_prints() -> None:
    import re

    from fleetctl.runner import HOST_KEY_PROMPT, VAULT_PROMPT

    paramiko = (
        "\nparamiko: The authenticity of host '127.0.0.1' can't be established.\n"
        "The ssh-ed25519 key fingerprint is b'ab12'.\n"
        "Are you sure you want to continue connecting (yes/no)?\n"
    )
    assert re.compile(HOST_KEY_PROMPT, re.M).search(paramiko)
    assert re.compile(VAULT_PROMPT, re.M).search("Vault password: ")
    assert not re.compile(VAULT_PROMPT, re.M).search("TASK [set vault password: x] ***")


class _FakeAnsibleRunnerModule:
    """Stands in for the ``ansible_runner`` module: records what ``run_async`` was given and
    checks, while "running", that the orphan guard watching the run is alive."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.guards_seen: list[psutil.Process] = []

    def run_async(self, **kwargs: Any) -> tuple[threading.Thread, SimpleNamespace]:
        self.kwargs = kwargs
        token = kwargs["envvars"][MARK]
        self.guards_seen = [
            p for p in psutil.Process().children() if token in " ".join(p.cmdline())
        ]
        kwargs["event_handler"](fake_event("playbook_on_play_start", play="P"))
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread, SimpleNamespace(status="successful", rc=0)


def test_the_real_adapter_runs_every_playbook_under_an_orphan_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeAnsibleRunnerModule()
    monkeypatch.setitem(sys.modules, "ansible_runner", fake)
    request = PlaybookRequest(playbook=tmp_path / "site.yml", inventory=["hosts.ini"],
                              private_data_dir=tmp_path / "pdd", ident="run", cwd=tmp_path,
                              envvars={"ANSIBLE_HOST_KEY_CHECKING": "True"})
    events: list[object] = []
    outcome = AnsibleRunner().run(request, events.append, lambda: False)

    assert (outcome.status, outcome.rc) == ("successful", 0)
    assert len(events) == 1
    envvars = fake.kwargs["envvars"]
    assert envvars["ANSIBLE_HOST_KEY_CHECKING"] == "True" and len(envvars[MARK]) == 16
    # one watchdog was alive during the run, and a clean end let it go without stopping anything
    (guard,) = fake.guards_seen
    assert not guard.is_running() or guard.status() == psutil.STATUS_ZOMBIE
    second = _FakeAnsibleRunnerModule()
    monkeypatch.setitem(sys.modules, "ansible_runner", second)
    AnsibleRunner().run(request, events.append, lambda: False)
    assert second.kwargs["envvars"][MARK] != envvars[MARK]  # a fresh token per run


# --- async jobs on remote hosts (fleetctl.async_jobs, fleetctl.async_stop) ----------------------


def _job_event(name: str, host: str, jid: object, results_file: object = None) -> dict[str, object]:
    res: dict[str, object] = {"ansible_job_id": jid, "started": 1, "finished": 0}
    if results_file is not None:
        res["results_file"] = results_file
    return fake_event(name, host, task="job", res=res)


def test_async_jobs_record_the_ids_and_files_the_events_name(tmp_path: Path) -> None:
    saved = tmp_path / "jobs.json"
    jobs = AsyncJobs("ab12cd34ef56ab78", async_dir_for("ab12cd34ef56ab78", {}), save_to=saved)
    jobs.feed(fake_event("runner_on_start", "n3", task="polled"))  # no id: the callback plugin's part
    jobs.feed(fake_event("runner_on_unreachable", "n4", res={"msg": "timed out"}))
    jobs.feed(_job_event("runner_on_ok", "n1", "j416.1234", "/root/.ansible_async/j416.1234"))  # poll: 0
    jobs.feed(_job_event("runner_on_async_poll", "n2", "j77.99"))
    jobs.feed(_job_event("runner_on_async_poll", "n2", "j77.99"))  # each poll names it again
    jobs.feed(_job_event("runner_on_ok", "n1", "1; rm -rf /", "/root/.ansible_async/{{ x }}"))
    jobs.feed(_job_event("runner_on_ok", "n1", "j5.6", "/etc/passwd"))  # not a job file: never removed
    assert jobs.async_dir == "~/.ansible_async/fleetctl-ab12cd34ef56ab78"
    expected = {"n1": HostJobs(["j416.1234", "j5.6"], ["/root/.ansible_async/j416.1234"]),
                "n2": HostJobs(["j77.99"])}
    assert jobs.snapshot() == expected
    # what the watchdog reads after a SIGKILL
    assert AsyncJobs.load(saved).snapshot() == expected and AsyncJobs.load(saved).unreachable == {"n4"}


def test_the_runs_async_dir_sits_under_an_inherited_one() -> None:
    assert async_dir_for("ff00", {"ANSIBLE_ASYNC_DIR": "/var/tmp/jobs/"}) == "/var/tmp/jobs/fleetctl-ff00"


def test_the_cleanup_play_drops_the_runs_task_selection_but_keeps_its_connection() -> None:
    cmdline = ["--tags", "agent", "--check", "--diff", "--connection", "paramiko", "--user", "ops",
               "--ask-vault-pass", "--extra-vars", "@/run/vars.json"]
    assert cleanup_cmdline(cmdline, with_vault_prompt=False) == [
        "--connection", "paramiko", "--user", "ops", "--extra-vars", "@/run/vars.json"]
    assert "--ask-vault-pass" in cleanup_cmdline(cmdline, with_vault_prompt=True)


def _spec(tmp_path: Path) -> CleanupSpec:
    return CleanupSpec(inventory=["inv.yml"], cmdline=["--tags", "x", "--user", "ops"], envvars={},
                       cwd=str(tmp_path), directory=str(tmp_path / "async-stop" / "run"), timeout_s=7)


def test_cleanup_names_each_host_it_could_not_clean_in_one_line(tmp_path: Path) -> None:
    jobs = AsyncJobs("ab12cd34", "~/.ansible_async/fleetctl-ab12cd34")
    for host in ("n1", "n2", "n3"):
        jobs.feed(_job_event("runner_on_ok", host, "j1.2"))
    calls: list[dict[str, Any]] = []

    def run(**kw: Any) -> SimpleNamespace:
        calls.append(kw)
        kw["event_handler"](fake_event("runner_on_ok", "n1", res={"stopped": [10, 11, 12], "euid": 0}))
        kw["event_handler"](fake_event("runner_on_unreachable", "n2", res={"msg": "Connection\n timed out"}))
        return SimpleNamespace(status="timeout")

    report = stop_remote_jobs(_spec(tmp_path), jobs, {}, run=run)
    assert report.stopped == {"n1": 3}
    assert report.lines() == ["n2: async jobs not stopped (unreachable): Connection timed out",
                              "async jobs not stopped on n3: no answer within 7 s"]
    (call,) = calls
    assert call["timeout"] == 7  # bounded
    assert call["cmdline"].startswith("--user ops --extra-vars @")  # the run's --tags do not apply
    work = Path(call["playbook"]).parent
    assert (work / "hosts.txt").read_text() == "n1\nn2\nn3\n" and call["limit"] == f"@{work / 'hosts.txt'}"
    assert (work / "library" / "fleetctl_async_stop.py").read_text().count("WANT_JSON") >= 1
    sent = json.loads((work / "vars.json").read_text())["fleetctl_async"]
    assert sent["token"] == "ab12cd34" and sent["hosts"]["n1"]["jobs"] == ["j1.2"]


def test_cleanup_does_nothing_when_no_task_reached_a_host(tmp_path: Path) -> None:
    def run(**kw: Any) -> None:
        pytest.fail("ansible-runner started for nothing")

    assert stop_remote_jobs(_spec(tmp_path), AsyncJobs("ab12cd34", "d"), {}, run=run).lines() == []


def _proc(root: Path, pid: int, ppid: int, argv: list[str], env: dict[str, str] | None) -> None:
    folder = root / str(pid)
    folder.mkdir()
    (folder / "stat").write_bytes(f"{pid} (a (b) c) S {ppid} 1 1".encode())
    (folder / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    if env is not None:  # None: another user's process, whose environment cannot be read
        (folder / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in env.items()))


def test_the_host_side_finds_marked_and_named_jobs_with_their_descendants(tmp_path: Path) -> None:
    ours = {"ANSIBLE_ASYNC_DIR": "~/.ansible_async/fleetctl-ab12cd34"}
    _proc(tmp_path, 100, 1, ["python3", "/t/async_wrapper.py", "j9", "300", "/t/m.py", "_"], ours)
    _proc(tmp_path, 101, 100, ["python3", "/t/AnsiballZ_command.py"], ours)
    _proc(tmp_path, 102, 101, ["sleep", "300"], {})  # a module that cleared its environment
    _proc(tmp_path, 200, 1, ["python3", "/t/async_wrapper.py", "j42", "300", "/t/m.py", "_"], {})  # named
    _proc(tmp_path, 201, 200, ["sleep", "301"], {})
    _proc(tmp_path, 300, 1, ["python3", "/t/async_wrapper.py", "j43", "300"], {})  # another run's job
    _proc(tmp_path, 301, 1, ["sleep", "9"], {"ANSIBLE_ASYNC_DIR": "~/.ansible_async/fleetctl-ffff0000"})
    _proc(tmp_path, 400, 1, ["python3", "/t/async_wrapper.py", "j44"], None)  # root's, unreadable
    found, hidden = async_stop.find(str(tmp_path), "ab12cd34", ["j42"])
    assert found == {100, 101, 102, 200, 201}
    assert hidden == 1  # counted so that fleetctl retries with become


def test_the_host_side_refuses_a_malformed_job_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"token": "ab12cd34", "jobs": ["j1.2", "$(reboot)"]}))
    assert async_stop.main(["module", str(args)]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "failed": True, "msg": "fleetctl async_stop: job id '$(reboot)' is not an Ansible job id"}


def test_the_host_side_removes_only_the_runs_directory_and_job_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "fleetctl-ab12cd34"
    run_dir.mkdir()
    (run_dir / "j1.2").write_text("{}")
    (tmp_path / "j3.4").write_text("{}")
    (tmp_path / "keep").write_text("x")
    removed = async_stop.remove_job_files(str(run_dir), "ab12cd34",
                                          [str(tmp_path / "j3.4"), str(tmp_path / "keep")])
    assert removed == [str(run_dir), str(tmp_path / "j3.4")]
    assert (tmp_path / "keep").exists()
    assert async_stop.remove_job_files(str(tmp_path), "ab12cd34", []) == []  # not the run's own: kept
