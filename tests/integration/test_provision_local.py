"""``fleetctl provision`` as a real process driving real ansible-runner/ansible-playbook.

Hosts use ``ansible_connection=local`` (plus one SSH host on a closed loopback port, which is
really unreachable); the playbook is tests/integration/provision_local/tiny.yml.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
TINY = HERE / "provision_local" / "tiny.yml"
FLEETCTL = [str(Path(sys.executable).parent / "fleetctl")]  # the installed console script
CLOSED_PORT = 1  # nothing listens on 127.0.0.1:1


def write_inventory(tmp_path: Path, hosts: dict[str, str]) -> Path:
    lines = ["[nodes]"] + [f"{name} {extra}".strip() for name, extra in hosts.items()]
    lines += [
        "[all:vars]",
        f"ansible_python_interpreter={sys.executable}",
        f"marker_dir={tmp_path / 'markers'}",
    ]
    (tmp_path / "markers").mkdir(exist_ok=True)
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


LOCAL = "ansible_connection=local"


def fleetctl(
    tmp_path: Path, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLEETCTL, *args], cwd=tmp_path, env=env_for(tmp_path), input=stdin,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def env_for(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "state").mkdir(exist_ok=True)  # fleetctl creates no directory named by --db
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    env.update(
        FLEETCTL_DB=str(tmp_path / "state" / "fleetctl.db"),
        FLEETCTL_CACHE_DIR=str(tmp_path / "cache"),
        HOME=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    return env


def show(tmp_path: Path, run_id: str) -> dict[str, object]:
    proc = fleetctl(tmp_path, "runs", "show", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    record: dict[str, object] = json.loads(proc.stdout)
    return record


def test_failed_and_unreachable_hosts_do_not_hide_the_good_one(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {
        "good": LOCAL,
        "bad": f"{LOCAL} fail_here=true",
        "gone": f"ansible_host=127.0.0.1 ansible_port={CLOSED_PORT}",
    })
    proc = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--json",
                    "-e", "marker_text=hello")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    states = {h["host"]: h for h in result["hosts"]}
    assert [h["host"] for h in result["hosts"]] == ["bad", "gone", "good"]
    assert states["good"]["state"] == "changed" and states["good"]["changed"] == 1
    assert states["bad"]["first_failure"] == "Fail where told to: bad was told to fail"
    assert states["gone"]["state"] == "unreachable"
    assert "Connection refused" in states["gone"]["first_failure"]
    assert (tmp_path / "markers" / "good.txt").read_text() == "good hello\n"

    record = show(tmp_path, result["run_id"])
    assert record["status"] == "failed"
    assert record["inventory"] == str(inventory)
    hosts = {h["host"]: h["state"] for h in record["hosts"]}  # type: ignore[attr-defined]
    assert hosts == {"good": "changed", "bad": "failed", "gone": "unreachable"}
    # ansible-runner's artifacts are where the record says; host key checking stayed on
    artifacts = Path(str(record["artifacts"]))
    command = json.loads((artifacts / "run" / "command").read_text())
    assert command["env"]["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert list((artifacts / "run" / "job_events").glob("*.json"))

    listing = fleetctl(tmp_path, "runs", "list")
    assert listing.returncode == 0
    assert result["run_id"] in listing.stdout and "1 failed, 1 unreachable, 1 changed" in listing.stdout


def test_plain_output_when_not_a_terminal_and_exit_0_when_all_succeed(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL, "b": LOCAL})
    proc = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--tags", "marker")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith("tiny.yml on 2 host(s)")
    assert "PLAY Tiny provision" in lines
    assert "TASK Write a marker file [0/2 hosts done]" in lines
    assert "TASK Sleep where told to [0/2 hosts done]" not in lines  # --tags marker skipped it
    assert any(line.startswith("run ") and " successful: 2 changed" in line for line in lines)


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL})
    cases = {
        ("--tags", "nosuchtag"): "unknown tag(s) nosuchtag in tiny.yml (known: marker, slow)",
        ("-e", "oops"): "fleetctl provision: --extra-vars #1, word 1: not key=value",
        ("--batch", "x"): "fleetctl provision: --batch 'x': expected a number of hosts",
        ("--inventory", "missing.ini"): "missing.ini",
        ("--playbook", "nope"): "fleetctl provision: unknown playbook 'nope'",
        ("nosuchhost",): "nosuchhost",
    }
    for extra, message in cases.items():
        # a later --inventory/--playbook overrides the first, as with any option given twice
        proc = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), *extra)
        assert proc.returncode == 2, (extra, proc.stdout, proc.stderr)
        assert message in proc.stderr, (extra, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # nothing was run, nothing recorded
    assert json.loads(fleetctl(tmp_path, "runs", "list", "--json").stdout) == []


def test_templated_hosts_with_tags_brackets_in_messages_and_secrets_in_task_names(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL})
    book = tmp_path / "odd.yml"
    book.write_text(
        '- name: Odd\n  hosts: "{{ target }}"\n  gather_facts: false\n  tasks:\n'
        '    - name: "Register with {{ api_token }}"\n'
        '      ansible.builtin.fail:\n        msg: "missing [/dev/nvidia0] [bold]x[/bold]"\n'
        '      tags: [marker]\n'
    )
    secrets_file = tmp_path / "secrets.yml"
    secrets_file.write_text("vault_password_for_bmc: bmc-77331\n")
    # --tags: the tag check lists the playbook with the same extra-vars (hosts are templated).
    proc = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(book), "--tags", "marker",
                    "-e", "target=all api_token=tok-991122", "-e", f"@{secrets_file}")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the task failed; nothing crashed
    assert "Traceback" not in proc.stderr and "tok-991122" not in proc.stdout + proc.stderr
    [run] = json.loads(fleetctl(tmp_path, "runs", "list", "--json").stdout)
    [host] = show(tmp_path, run["id"])["hosts"]  # type: ignore[misc]
    assert "missing [/dev/nvidia0] [bold]x[/bold]" in host["first_failure"]  # text, not rich markup
    assert "tok-991122" not in json.dumps(run) + json.dumps(host)


def test_a_playbook_ansible_cannot_load_is_a_config_error(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL})
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - name: x\n      no.such.module: {}\n")
    proc = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(broken))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no.such.module" in proc.stdout


def test_vault_secrets_never_reach_records_artifacts_or_output(tmp_path: Path) -> None:
    password = "vault-pw-7f3a91"
    secret = "topsecret-d41d8c"
    pw_file = tmp_path / "vault-pass"
    pw_file.write_text(password + "\n")
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string", "--vault-password-file",
         str(pw_file), secret, "--name", "marker_text"],
        capture_output=True, text=True, check=True, env=env_for(tmp_path), cwd=tmp_path,
    ).stdout
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "nodes.yml").write_text(encrypted)
    inventory = write_inventory(tmp_path, {"a": LOCAL})

    by_file = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY),
                       "--vault-password-file", str(pw_file), "--tags", "marker")
    assert by_file.returncode == 0, by_file.stdout + by_file.stderr
    assert (tmp_path / "markers" / "a.txt").read_text() == f"a {secret}\n"
    (tmp_path / "markers" / "a.txt").unlink()

    prompted = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--ask-vault-pass",
                        "--tags", "marker", "-e", "api_token=tok-5e1f0c", stdin=password + "\n")
    assert prompted.returncode == 0, prompted.stdout + prompted.stderr
    assert (tmp_path / "markers" / "a.txt").read_text() == f"a {secret}\n"

    wrong = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--ask-vault-pass",
                     "--tags", "marker", stdin="not-the-password\n")
    # A wrong password is a failed run (exit 1) that names the cause on the host's line: not a crash,
    # not a usage error, not a hang at a second prompt.
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr, wrong.stderr
    decryption = [line for line in wrong.stdout.splitlines()
                  if line.startswith("  a: failed: Write a marker file: ")]
    assert len(decryption) == 1, wrong.stdout
    assert decryption[0].endswith("Decryption failed (no vault secrets were found that could decrypt)."), \
        decryption
    assert re.search(r"^run \S+ failed: 1 failed$", wrong.stdout, re.MULTILINE), wrong.stdout

    state = tmp_path / "state"
    for text in (by_file.stdout, by_file.stderr, prompted.stdout, prompted.stderr, wrong.stdout):
        assert password not in text and "tok-5e1f0c" not in text
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert password.encode() not in data, path
            assert b"tok-5e1f0c" not in data, path
    records = json.loads(fleetctl(tmp_path, "runs", "list", "--json").stdout)
    assert {r["options"]["vault"] for r in records} == {"password-file", "prompt"}


def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _sleepers(seconds: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline[:1] == ["sleep"] and cmdline[1:2] == [seconds]:
            found.append(proc)
    return found


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigint_cancels_records_results_so_far_and_leaves_no_processes(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL, "b": LOCAL})
    seconds = "97.31"  # unique: identifies this test's sleep processes
    proc = subprocess.Popen(
        [*FLEETCTL, "provision", "-i", str(inventory), "-p", str(TINY), "-e", f"sleep_seconds={seconds}"],
        cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: len(_sleepers(seconds)) == 2)
        children = _descendants(proc.pid)
        assert any("ansible-playbook" in " ".join(c.cmdline()) for c in children)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "canceling" in stderr
    _wait_for(lambda: not _sleepers(seconds) and not any(c.is_running() and c.status() != "zombie"
                                                       for c in children), timeout=10)
    run_id = stdout.splitlines()[0].split()[1].rstrip(":")
    record = show(tmp_path, run_id)
    assert record["status"] == "canceled"
    hosts = {h["host"]: h for h in record["hosts"]}  # type: ignore[attr-defined]
    assert hosts["a"]["changed"] == 1 and hosts["b"]["changed"] == 1  # the marker task finished
    assert (tmp_path / "markers" / "a.txt").exists()


def test_a_concurrent_run_touching_a_held_host_is_refused(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL, "b": LOCAL})
    seconds = "98.17"
    first = subprocess.Popen(
        [*FLEETCTL, "provision", "a", "-i", str(inventory), "-p", str(TINY),
         "-e", f"sleep_seconds={seconds}"],
        cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: len(_sleepers(seconds)) == 1)
        second = fleetctl(tmp_path, "provision", "all", "-i", str(inventory), "-p", str(TINY))
        assert second.returncode == 1
        assert "refused: a is held by" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "--force" in second.stderr
        other = fleetctl(tmp_path, "provision", "b", "-i", str(inventory), "-p", str(TINY),
                         "--tags", "marker")
        assert other.returncode == 0, other.stdout + other.stderr  # b is free
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    live = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                live.append(p)
        except psutil.NoSuchProcess:
            continue
    return live


def test_a_killed_fleetctl_takes_its_ansible_processes_with_it_and_leaves_an_interrupted_run(
    tmp_path: Path,
) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL, "b": LOCAL})
    seconds = "96.53"
    proc = subprocess.Popen(
        [*FLEETCTL, "provision", "-i", str(inventory), "-p", str(TINY), "-e", f"sleep_seconds={seconds}"],
        cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    tree: list[psutil.Process] = []
    try:
        _wait_for(lambda: len(_sleepers(seconds)) == 2)

        def runs_list() -> list[dict[str, Any]]:
            listed: list[dict[str, Any]] = json.loads(fleetctl(tmp_path, "runs", "list", "--json").stdout)
            return listed

        # the heartbeat (every 5 s) saves the results so far: the marker task's change
        _wait_for(lambda: [h["changed"] for h in runs_list()[0]["hosts"]] == [1, 1], timeout=30)
        assert runs_list()[0]["status"] == "running"
        tree = _descendants(proc.pid)
        playbooks = [c for c in tree if "ansible-playbook" in " ".join(c.cmdline())]
        sleepers = _sleepers(seconds)
        assert playbooks and all(s in tree for s in sleepers)  # the tree really is fleetctl's
        # the run's processes are out of fleetctl's session (pexpect's, then the workers' setsid):
        # nothing that hits fleetctl's process group or terminal reaches them
        assert {os.getsid(p.pid) for p in tree} - {os.getsid(proc.pid)}
        proc.kill()  # SIGKILL: no handler of fleetctl runs
        stdout, _ = proc.communicate(timeout=30)
        # everything it started (ansible-playbook, workers, the sleeps, the guard) ends promptly
        _wait_for(lambda: not _alive(tree) and not _sleepers(seconds), timeout=10)
    finally:
        for child in _alive(tree):  # only if the assertion above failed: don't leak
            child.kill()
    run_id = stdout.splitlines()[0].split()[1].rstrip(":")
    record = show(tmp_path, run_id)
    assert record["status"] == "interrupted"
    assert [h["changed"] for h in record["hosts"]] == [1, 1]  # type: ignore[attr-defined]
    again = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--tags", "marker")
    assert again.returncode == 0, again.stdout + again.stderr  # the dead run's lock does not block


ASYNC_BOOK = """\
- name: Async work
  hosts: all
  gather_facts: false
  tasks:
    - name: Start a long job in the background
      ansible.builtin.command: "sleep {{ async_seconds }}"
      async: 600
      poll: 0
      changed_when: false
    - name: Poll a long job
      ansible.builtin.command: "sleep {{ polled_seconds }}"
      async: 600
      poll: 1
      changed_when: false
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_canceled_run_takes_its_async_tasks_down(tmp_path: Path, sig: signal.Signals) -> None:
    # Ansible runs an async task's module through a wrapper that daemonizes: the job leaves
    # ansible-playbook's process tree, so stopping the tree alone left it running.
    inventory = write_inventory(tmp_path, {"a": LOCAL})
    (tmp_path / "state").mkdir(exist_ok=True)
    book = tmp_path / "async.yml"
    book.write_text(ASYNC_BOOK)
    fired, polled = ("95.41", "95.43") if sig == signal.SIGINT else ("95.47", "95.49")
    proc = subprocess.Popen(
        [*FLEETCTL, "provision", "-i", str(inventory), "-p", str(book),
         "-e", f"async_seconds={fired} polled_seconds={polled}"],
        cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    jobs: list[psutil.Process] = []
    try:
        _wait_for(lambda: len(_sleepers(fired)) == 1 and len(_sleepers(polled)) == 1)
        jobs = _sleepers(fired) + _sleepers(polled)
        tree = _descendants(proc.pid)
        assert not any(job in tree for job in jobs)  # detached: outside fleetctl's process tree
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 130, stdout + stderr
        _wait_for(lambda: not _alive(jobs), timeout=15)
    finally:
        for job in _alive(jobs):  # only if an assertion failed: don't leak
            job.kill()
    run_id = stdout.splitlines()[0].split()[1].rstrip(":")
    assert show(tmp_path, run_id)["status"] == "canceled"


def test_extra_vars_apply_in_command_line_order(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"a": LOCAL})
    (tmp_path / "state").mkdir(exist_ok=True)
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("marker_text: from-file\n")
    later = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--tags", "marker",
                     "-e", f"@{vars_file}", "-e", "marker_text=literal-after")
    assert later.returncode == 0, later.stdout + later.stderr
    assert (tmp_path / "markers" / "a.txt").read_text() == "a literal-after\n"
    earlier = fleetctl(tmp_path, "provision", "-i", str(inventory), "-p", str(TINY), "--tags", "marker",
                       "-e", "marker_text=literal-before", "-e", f"@{vars_file}")
    assert earlier.returncode == 0, earlier.stdout + earlier.stderr
    assert (tmp_path / "markers" / "a.txt").read_text() == "a from-file\n"  # as ansible-playbook does


def test_two_fleets_with_the_same_host_names_never_share_cached_facts(tmp_path: Path) -> None:
    # Ansible keys cached facts by host name: staging's gpu-001 must not be handed production's.
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\ngathering = smart\nfact_caching = jsonfile\nfact_caching_connection = facts\n"
    )
    inventories = {}
    for fleet in ("staging", "production"):
        (tmp_path / fleet).mkdir()
        inventories[fleet] = write_inventory(tmp_path / fleet, {"gpu-001": f"{LOCAL} fleet={fleet}"})
        # Both fleets' markers in one place: write_inventory points marker_dir at its own directory.
        own, shared = str(tmp_path / fleet / "markers"), str(tmp_path / "markers")
        inventories[fleet].write_text(inventories[fleet].read_text().replace(own, shared))
    (tmp_path / "markers").mkdir()
    playbook = HERE / "provision_local" / "fact_cache.yml"

    def run(fleet: str) -> str:
        proc = fleetctl(tmp_path, "provision", "-i", str(inventories[fleet]), "-p", str(playbook))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return (tmp_path / "markers" / f"gpu-001-{fleet}.txt").read_text().strip()

    assert run("staging") == "none"
    assert run("production") == "none"  # not staging's
    assert run("staging") == "staging"  # the cache still works, within a fleet
    assert run("production") == "production"
    cached = sorted(p.name for p in (tmp_path / "facts").iterdir())
    assert len(cached) == 2 and all(name.startswith("fleet-") and name.endswith("gpu-001") for name in cached)
