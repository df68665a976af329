"""The provision core against FakeRunner: validation, locks, recording, secrets, cancel, batches."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from fleetctl import provision
from fleetctl.errors import EXIT_CANCELED, UsageError
from fleetctl.provision import HostsLocked, ProvisionOptions
from fleetctl.runner import VAULT_PROMPT, EventTally, FakeRunner, PlaybookRequest, fake_event
from fleetctl.state import db, locks, runs

HOSTS = ["n1", "n2", "n3"]


def select(sources: Sequence[str], pattern: str) -> list[str]:
    if pattern == "nothing":
        return []
    return [h for h in HOSTS if pattern in ("all", h)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.ini").write_text("n1\nn2\nn3\n")
    monkeypatch.delenv("ANSIBLE_HOST_KEY_CHECKING", raising=False)
    return tmp_path


def opts(env: Path, **kw: object) -> ProvisionOptions:
    return ProvisionOptions(inventory=[str(env / "hosts.ini")], **kw)  # type: ignore[arg-type]


def play(*host_events: dict[str, object]) -> list[dict[str, object]]:
    return [
        fake_event("playbook_on_play_start", play="Site"),
        fake_event("playbook_on_task_start", task="install"),
        *host_events,
    ]


def ok(host: str, changed: bool = False) -> dict[str, object]:
    return fake_event("runner_on_ok", host, task="install", res={"changed": changed})


def failed(host: str, msg: str) -> dict[str, object]:
    return fake_event("runner_on_failed", host, task="install", res={"msg": msg})


def run(env: Path, runner: FakeRunner, **kw: object) -> provision.ProvisionResult:
    options = kw.pop("options", None) or opts(env, **{k: v for k, v in kw.items() if k != "cancel"})
    cancel = kw.get("cancel")
    return provision.run(
        options,  # type: ignore[arg-type]
        runner,
        db_path=env / "state.db",
        cwd=env,
        select_hosts=select,
        cancel=cancel,  # type: ignore[arg-type]
    )


def stored(env: Path, run_id: str) -> runs.RunRecord:
    conn = runs.connect(env / "state.db")
    record = runs.get(conn, run_id)
    assert record is not None
    return record


def test_successful_run_is_recorded_and_unlocks(env: Path) -> None:
    runner = FakeRunner(play(ok("n1", True), ok("n2"), ok("n3")))
    result = run(env, runner)
    assert (result.status, result.exit_code) == ("successful", 0)
    record = stored(env, result.run_id)
    assert record.status == "successful"
    assert record.playbook == str((env / "playbooks" / "site.yml").resolve())
    assert {h.host: h.state for h in record.hosts} == {"n1": "changed", "n2": "ok", "n3": "ok"}
    assert record.artifacts == str(env / "runs" / result.run_id / "artifacts")
    for private in (env / "runs", env / "runs" / result.run_id):  # artifacts hold the environment
        assert private.stat().st_mode & 0o777 == 0o700
    assert locks.held(db.connect(env / "state.db", schema=locks.SCHEMA)) == []
    (request,) = runner.requests
    assert request.limit == "all" and request.playbook.name == "site.yml"
    assert request.envvars["ANSIBLE_HOST_KEY_CHECKING"] == "True"


def test_a_failed_host_never_hides_the_others(env: Path) -> None:
    runner = FakeRunner(play(ok("n1"), failed("n2", "apt: no such package"), ok("n3", True)),
                        status="failed", rc=2)
    result = run(env, runner)
    assert (result.status, result.exit_code) == ("failed", 1)
    rows = result.to_dict()["hosts"]
    assert [r["host"] for r in rows] == ["n2", "n3", "n1"]  # worst first
    assert rows[0]["first_failure"] == "install: apt: no such package"
    assert result.to_dict()["summary"] == {"failed": 1, "changed": 1, "ok": 1}


def test_unreachable_host_exits_1(env: Path) -> None:
    unreachable = fake_event("runner_on_unreachable", "n3", task="install", res={"msg": "timed out"})
    result = run(env, FakeRunner(play(ok("n1"), ok("n2"), unreachable), status="failed", rc=4))
    assert result.exit_code == 1
    assert {h.host: h.state for h in result.hosts}["n3"] == "unreachable"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"playbook": "nope"},
         "unknown playbook 'nope': not a file, not in playbooks/ (available: burn_in, site"),
        ({"extra_vars": ["novalue"]}, "--extra-vars #1, word 1: not key=value"),
        ({"extra_vars": ["a=1", "b=2 1x=2"]}, "--extra-vars #2, word 2: not key=value"),
        ({"extra_vars": ["{not json"]}, "--extra-vars #1 (a JSON object): malformed JSON: "),
        ({"extra_vars": ["@missing.yml"]}, "--extra-vars '@missing.yml': no such file"),
        ({"batch": "0"}, "--batch '0': expected a number of hosts N >= 1"),
        ({"batch": "150%"}, "--batch '150%'"),
        ({"forks": 0}, "--forks 0: must be at least 1"),
        ({"connection": "telnet"}, "--connection 'telnet': expected ssh or paramiko"),
        ({"pattern": "nothing"}, "pattern 'nothing' matches no host"),
        ({"vault_password_file": Path("/nonexistent/vault")}, "--vault-password-file /nonexistent/vault"),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_runs(
    env: Path, kw: dict[str, object], message: str
) -> None:
    runner = FakeRunner(play(ok("n1")))
    with pytest.raises(UsageError) as info:
        run(env, runner, **kw)
    assert message in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    assert runner.requests == []
    assert runs.list_runs(runs.connect(env / "state.db")) == []


@pytest.mark.parametrize("broken", ["garbage", "under_a_file"])
def test_an_unusable_state_database_is_one_line_before_anything_runs(env: Path, broken: str) -> None:
    runner = FakeRunner(play(ok("n1")))
    if broken == "garbage":
        path = env / "state.db"
        path.write_bytes(b"this is not an sqlite database, just bytes" * 100)
    else:
        (env / "a_file").write_text("")
        path = env / "a_file" / "state.db"
    with pytest.raises(UsageError) as err:
        provision.run(opts(env), runner, db_path=path, cwd=env, select_hosts=select)
    assert str(err.value).startswith(f"state database {path}: ") and "\n" not in str(err.value)
    assert err.value.exit_code == 2
    assert runner.requests == []


def test_a_newer_fleetctls_database_is_refused_before_anything_runs(env: Path) -> None:
    from fleetctl.state import db

    c = db.connect(env / "state.db")
    c.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    c.close()
    runner = FakeRunner(play(ok("n1")))
    with pytest.raises(UsageError) as err:
        provision.run(opts(env), runner, db_path=env / "state.db", cwd=env, select_hosts=select)
    assert "written by a newer fleetctl" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2
    assert runner.requests == []


def test_missing_inventory_file_is_a_usage_error(env: Path) -> None:
    with pytest.raises(UsageError, match=r"inventory 'gone\.ini': no such file"):
        run(env, FakeRunner(), options=ProvisionOptions(inventory=["gone.ini"]))


def test_extra_vars_file_must_be_a_mapping(env: Path) -> None:
    (env / "list.yml").write_text("- a\n- b\n")
    (env / "bad.yml").write_text("a: [\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        run(env, FakeRunner(), extra_vars=["@list.yml"])
    with pytest.raises(UsageError, match=r"bad\.yml is not valid YAML/JSON"):
        run(env, FakeRunner(), extra_vars=["@bad.yml"])


def test_unknown_tag_is_refused_naming_the_known_ones(env: Path) -> None:
    runner = FakeRunner(play(ok("n1")), tags={"agent", "base"})
    with pytest.raises(UsageError, match=r"unknown tag\(s\) nvidia in site.yml \(known: agent, base\)"):
        run(env, runner, tags=["agent", "nvidia"])
    (probe,) = runner.requests  # only the --list-tags probe, never a run
    assert "--tags" not in probe.cmdline


def test_known_tags_pass_to_ansible(env: Path) -> None:
    runner = FakeRunner(play(ok("n1")), tags={"agent", "base"})
    run(env, runner, tags=["agent"], skip_tags=["base"], check=True, diff=True, forks=7)
    request = runner.requests[-1]
    args = list(request.cmdline)
    assert args[:6] == ["--tags", "agent", "--skip-tags", "base", "--check", "--diff"]
    assert request.forks == 7


def test_extra_vars_stay_out_of_argv_and_secrets_out_of_records(env: Path) -> None:
    (env / "more.yml").write_text("region: eu\n")
    seen: dict[str, object] = {}

    def capture(request: PlaybookRequest) -> list[dict[str, object]]:
        # the literal values come first, as on the command line; the @file after them
        path = Path(request.cmdline[request.cmdline.index("--extra-vars") + 1][1:])
        seen["path"] = path
        seen["content"] = json.loads(path.read_text())
        seen["mode"] = oct(path.stat().st_mode & 0o777)
        return play(failed("n1", "login with s3cret failed"), ok("n2"), ok("n3"))

    result = run(env, FakeRunner(events_for=capture, status="failed"),
                 extra_vars=["db_password=s3cret release=42", "@more.yml"])
    assert seen["content"] == {"db_password": "s3cret", "release": "42"}
    assert seen["mode"] == "0o600"
    assert not Path(str(seen["path"])).exists()  # removed after the run
    record = stored(env, result.run_id)
    assert record.options["extra_vars"] == ["db_password=********", "release=42", f"@{env / 'more.yml'}"]
    dumped = json.dumps(record.to_dict()) + json.dumps(result.to_dict())
    assert "s3cret" not in dumped
    assert "login with ******** failed" in dumped


def test_prompted_vault_password_goes_to_pexpect_only(env: Path) -> None:
    runner = FakeRunner(play(failed("n1", "decrypt with hunter22 failed"), ok("n2"), ok("n3")))
    result = run(env, runner, vault_password="hunter22")
    request = runner.requests[-1]
    assert "--ask-vault-pass" in request.cmdline
    assert dict(request.passwords) == {VAULT_PROMPT: "hunter22"}
    assert "hunter22" not in " ".join(request.cmdline) + json.dumps(dict(request.envvars))
    record = stored(env, result.run_id)
    assert record.options["vault"] == "prompt"
    assert "hunter22" not in json.dumps(record.to_dict())


def test_vault_password_file_is_passed_by_path(env: Path) -> None:
    (env / "vault.txt").write_text("pw\n")
    runner = FakeRunner(play(ok("n1")))
    result = run(env, runner, vault_password_file=env / "vault.txt")
    args = list(runner.requests[-1].cmdline)
    assert args[args.index("--vault-password-file") + 1] == str(env / "vault.txt")
    assert stored(env, result.run_id).options["vault"] == "password-file"


def test_host_key_checking_is_only_off_when_asked(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = FakeRunner(play(ok("n1")))
    result = run(env, runner, host_key_checking=False, connection="paramiko")
    request = runner.requests[-1]
    assert request.envvars["ANSIBLE_HOST_KEY_CHECKING"] == "False"
    assert list(request.cmdline)[-2:] == ["--connection", "paramiko"]
    assert stored(env, result.run_id).options["host_key_checking"] is False


def test_an_inherited_host_key_checking_false_does_not_turn_checking_off(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ansible-runner copies os.environ; the run's envvars must override it, or the record lies.
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    runner = FakeRunner(play(ok("n1")))
    result = run(env, runner)
    assert runner.requests[-1].envvars["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert stored(env, result.run_id).options["host_key_checking"] is True


def test_nested_secret_extra_vars_stay_out_of_records(env: Path) -> None:
    nested = {"agent": {"token": "s3cret", "port": 9400, "peers": [{"api_key": "k3y-v4lue"}]},
              "credentials": {"user": "u-name", "pw": "pw-value"}}
    runner = FakeRunner(events_for=lambda r: play(failed("n1", "s3cret k3y-v4lue pw-value rejected"),
                                                   ok("n2"), ok("n3")))
    result = run(env, runner, extra_vars=[json.dumps(nested)])
    record = stored(env, result.run_id)
    assert record.options["extra_vars"] == [
        'agent={"peers": [{"api_key": "********"}], "port": 9400, "token": "********"}',
        "credentials=********",
    ]
    dumped = json.dumps(record.to_dict()) + json.dumps(result.to_dict())
    for secret in ("s3cret", "k3y-v4lue", "pw-value", "u-name"):
        assert secret not in dumped
    assert "******** ******** ******** rejected" in dumped


def test_stale_extra_vars_files_of_ended_runs_are_removed(env: Path) -> None:
    conn = db.connect(env / "state.db", schema=(*runs.SCHEMA, *locks.SCHEMA))
    dead_pid = _exited_pid()

    def leftover(run_id: str, pid: int) -> Path:
        runs.start(conn, runs.RunRecord(
            id=run_id, user="alice", machine=runs.this_machine(), pid=pid, started_at=runs.now_iso(),
            heartbeat_at=runs.now_iso(), inventory="hosts.ini", pattern="all", playbook="site.yml",
            options={},
        ))
        (env / "runs" / run_id).mkdir(parents=True, exist_ok=True)
        path = env / "runs" / run_id / ".extra-vars-0000.json"
        path.write_text('{"db_password": "s3cret"}')
        return path

    killed = leftover("run-killed", dead_pid)  # still "running" in the store, process gone
    alive = leftover("run-alive", os.getpid())
    (env / "runs" / "no-record").mkdir()
    unknown = env / "runs" / "no-record" / ".extra-vars-1111.json"
    unknown.write_text("{}")
    result = run(env, FakeRunner(play(ok("n1"))), pattern="n1")
    assert result.status == "successful"
    assert not killed.exists()
    assert alive.exists() and unknown.exists()
    assert runs.status_of(conn, "run-killed") == "interrupted"


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_heartbeat_survives_store_errors_and_warns_once(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = db.connect(env / "state.db", schema=(*runs.SCHEMA, *locks.SCHEMA))
    me = locks.Holder("run-1", "provision site.yml", "alice", runs.this_machine(), os.getpid())
    locks.acquire(conn, ["n1"], me)
    real_refresh = locks.refresh
    calls: list[int] = []
    stop = threading.Event()

    def flaky_refresh(c: object, holder_id: str) -> int:
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        if len(calls) == 3:
            return real_refresh(c, holder_id)  # type: ignore[arg-type]
        if len(calls) >= 5:
            stop.set()
        return 0  # taken over by a --force run

    monkeypatch.setattr(provision, "HEARTBEAT_INTERVAL_S", 0.01)
    monkeypatch.setattr(locks, "refresh", flaky_refresh)
    beats: list[str] = []
    monkeypatch.setattr(runs, "heartbeat", lambda c, run_id, hosts: beats.append(run_id))
    tally = EventTally(["n1"])
    beat = provision._Heartbeat(env / "state.db", "run-1", "run-1", tally, stop)
    beat.start()
    beat.join(timeout=10)
    assert not beat.is_alive()
    assert len(calls) >= 5 and len(beats) == len(calls) - 2  # kept beating after the errors
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "fleetctl: warning: run run-1: heartbeat failed, retrying: database is locked",
        "fleetctl: warning: run run-1: its host locks were taken over (--force by another run);"
        " this run goes on but no longer holds the hosts",
    ]


def test_a_held_host_refuses_the_run_naming_the_holder(env: Path) -> None:
    conn = db.connect(env / "state.db", schema=(*runs.SCHEMA, *locks.SCHEMA))
    other = locks.Holder("run-other", "provision site.yml", "bob", runs.this_machine(), os.getpid())
    locks.acquire(conn, ["n2"], other)
    runner = FakeRunner(play(ok("n1")))
    with pytest.raises(HostsLocked) as info:
        run(env, runner)
    assert info.value.exit_code == 1
    assert "n2 is held by run-other (provision site.yml) of bob@" in str(info.value)
    assert runner.requests == []
    result = run(env, runner, force=True)
    assert result.status == "successful"
    assert stored(env, result.run_id).options["forced_over"] == ["run-other"]


def test_cancel_records_canceled_with_results_so_far(env: Path) -> None:
    cancel = threading.Event()

    def ctrl_c_after_two_results(index: int) -> None:
        if index == 4:
            cancel.set()

    events = play(ok("n1", True), ok("n2"), ok("n3"), fake_event("playbook_on_task_start", task="two"))
    runner = FakeRunner(events, on_cancel_poll=ctrl_c_after_two_results)
    result = run(env, runner, cancel=cancel)
    assert (result.status, result.exit_code) == ("canceled", EXIT_CANCELED)
    record = stored(env, result.run_id)
    assert record.status == "canceled"
    assert {h.host: h.state for h in record.hosts} == {"n1": "changed", "n2": "ok", "n3": "pending"}


def test_async_jobs_a_cancel_could_not_stop_are_warned_and_recorded(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cancel = threading.Event()
    line = "n2: async jobs not stopped (unreachable): Failed to connect to the host via ssh"

    def ctrl_c_after_two_results(index: int) -> None:
        if index == 2:
            cancel.set()

    runner = FakeRunner(play(ok("n1"), ok("n2")), on_cancel_poll=ctrl_c_after_two_results, notes=(line,))
    result = run(env, runner, cancel=cancel)
    assert result.status == "canceled"
    assert stored(env, result.run_id).message == line
    assert f"fleetctl: warning: {line}" in capsys.readouterr().err


def test_config_error_before_any_play_exits_2_with_ansibles_message(env: Path) -> None:
    runner = FakeRunner([fake_event("verbose", stdout="[ERROR]: couldn't resolve module/action 'nope.x'")],
                        status="failed", rc=4)
    result = run(env, runner)
    assert result.exit_code == 2
    assert result.message == "[ERROR]: couldn't resolve module/action 'nope.x'"
    assert stored(env, result.run_id).status == "failed"


def test_batches_run_one_after_another_and_stop_after_a_failure(env: Path) -> None:
    def per_batch(request: PlaybookRequest) -> list[dict[str, object]]:
        host = str(request.limit)
        return play(failed(host, "broke") if host == "n2" else ok(host))

    runner = FakeRunner(events_for=per_batch)
    result = run(env, runner, batch="1")
    assert [r.limit for r in runner.requests] == ["n1", "n2"]
    assert {h.host: h.state for h in result.hosts} == {"n1": "ok", "n2": "failed", "n3": "pending"}
    assert result.message == "stopped after batch 2 of 3: a host failed"
    assert [r.ident for r in runner.requests] == ["batch-1", "batch-2"]


def test_percentage_batches(env: Path) -> None:
    runner = FakeRunner(events_for=lambda r: play(*(ok(h) for h in str(r.limit).split(","))))
    result = run(env, runner, batch="67%")
    assert [r.limit for r in runner.requests] == ["n1,n2", "n3"]
    assert result.status == "successful"


@pytest.mark.parametrize(("value", "total", "size"), [(None, 5, 5), ("2", 5, 2), ("50%", 5, 2), ("1%", 5, 1),
                                                      ("100%", 5, 5), ("10", 3, 10)])
def test_parse_batch(value: str | None, total: int, size: int) -> None:
    assert provision.parse_batch(value, total) == size


def test_playbook_by_path_and_by_name_with_extension(env: Path) -> None:
    (env / "other.yaml").write_text("- hosts: all\n  tasks: []\n")
    assert provision.resolve_playbook("other.yaml", env) == (env / "other.yaml").resolve()
    assert provision.resolve_playbook("site.yml", env) == (env / "playbooks" / "site.yml").resolve()
    assert provision.resolve_playbook("site", env) == (env / "playbooks" / "site.yml").resolve()


def test_an_adapter_error_still_ends_the_record_and_frees_the_hosts(env: Path) -> None:
    class Broken(FakeRunner):
        def run(self, request: PlaybookRequest, on_event: object, should_cancel: object) -> object:  # type: ignore[override]
            raise RuntimeError("pexpect exploded")

    with pytest.raises(RuntimeError):
        run(env, Broken())
    (record,) = runs.list_runs(runs.connect(env / "state.db"))
    assert (record.status, record.message) == ("failed", "pexpect exploded")
    assert locks.held(db.connect(env / "state.db", schema=locks.SCHEMA)) == []


def test_a_caller_holding_the_locks_can_run_provision_inside_them(env: Path) -> None:
    conn = db.connect(env / "state.db", schema=(*runs.SCHEMA, *locks.SCHEMA))
    mine = locks.Holder("maintain-7", "maintain", "alice", runs.this_machine(), os.getpid())
    locks.acquire(conn, HOSTS, mine)
    with pytest.raises(HostsLocked, match="held by maintain-7"):
        run(env, FakeRunner(play(ok("n1"))))
    result = provision.run(opts(env), FakeRunner(play(ok("n1"))), db_path=env / "state.db", cwd=env,
                           select_hosts=select, held_by="maintain-7")
    assert result.status == "successful"
    assert {lk.holder.id for lk in locks.held(conn)} == {"maintain-7"}  # still held by the caller


def test_extra_vars_errors_never_echo_values_and_file_secrets_are_masked(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        provision.parse_extra_vars(["api_token=s3cr3t oops"], tmp_path)  # the shell split a value
    assert "s3cr3t" not in str(err.value) and "oops" not in str(err.value) and "word 2" in str(err.value)
    with pytest.raises(UsageError) as err:
        provision.parse_extra_vars(['{"vault_pass": "s3cr3t",}'], tmp_path)
    assert "s3cr3t" not in str(err.value) and "malformed JSON" in str(err.value)
    secrets_file = tmp_path / "secrets.yml"
    secrets_file.write_text("bmc:\n  password: bmc-77331\nplain: visible\n")
    extra = provision.parse_extra_vars(["region=eu", f"@{secrets_file}"], tmp_path)
    assert extra.secret_values() == ["bmc-77331"]


def test_ansible_colour_codes_stay_out_of_the_recorded_error() -> None:
    tally = EventTally([])
    tally.tail.append("\x1b[0;31m[ERROR]: couldn't resolve module/action 'no.such.module'\x1b[0m")
    assert provision._tail_error(tally) == "[ERROR]: couldn't resolve module/action 'no.such.module'"


def test_extra_vars_reach_ansible_in_command_line_order(env: Path) -> None:
    # ansible-playbook applies --extra-vars in order, a later one winning: a literal given after an
    # @file must come after it, one given before it must not override it.
    (env / "one.yml").write_text("release: from-file\n")
    seen: list[object] = []

    def capture(request: PlaybookRequest) -> list[dict[str, object]]:
        args = list(request.cmdline)
        for i, arg in enumerate(args):
            if arg == "--extra-vars":
                path = Path(args[i + 1][1:])
                seen.append("one.yml" if path.name == "one.yml" else json.loads(path.read_text()))
        return play(ok("n1"), ok("n2"), ok("n3"))

    result = run(env, FakeRunner(events_for=capture),
                 extra_vars=["release=early", "@one.yml", "release=late site=x", '{"tier": 2}'])
    assert seen == [{"release": "early"}, "one.yml", {"release": "late", "site": "x", "tier": 2}]
    assert stored(env, result.run_id).options["extra_vars"] == [
        "release=early", f"@{env / 'one.yml'}", "release=late", "site=x", "tier=2"]
    extra = provision.parse_extra_vars(["@one.yml", "release=late"], env)
    assert extra.literal == {"release": "late"} and extra.files == [env / "one.yml"]
