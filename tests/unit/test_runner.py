"""EventTally: per-host results counted from ansible-runner events as they arrive."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

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
