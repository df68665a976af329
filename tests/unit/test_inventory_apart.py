"""The cold inventory parse in a forked child (``parse_apart``): same inventory, same errors, the
cache written, nothing left behind (no Ansible temporary directory, no child after Ctrl-C), and the
in-process parse where a fork is not safe or the child dies.

Each case runs in a fresh interpreter: whether fleetctl forks depends on the threads of the process,
and pytest's may have some from other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_inventory import INVENTORY  # the same hosts as the in-process parse's tests

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")


# argv: inventory, cache dir, mode, pid file. Prints the parent's pid, whether the inventory came
# from the cache, how often the parent read the cache file, and each host as fleetctl sees it.
SCRIPT = """
import json, os, signal, sys, threading, time
from pathlib import Path
import fleetctl.inventory as inventory

source, cache, mode, pids = sys.argv[1:5]
parse, read_cache = inventory._parse_with_ansible, inventory._read_cache
parent = os.getpid()
cache_reads = []

def recorded(sources, *args, **kwargs):
    with open(pids, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    if os.getpid() != parent:
        if mode == "child-dies":
            os._exit(3)
        if mode in ("interrupt", "cancel", "orphan"):
            from ansible import constants  # Ansible's temporary directory, removed at exit
            Path(pids + ".tmp").write_text(constants.DEFAULT_LOCAL_TMP)
            time.sleep(600)  # only fleetctl ending it ends it before the test times out
        if mode == "noted-sigint":
            time.sleep(1.5)  # the parent is sent Ctrl-C meanwhile
    return parse(sources, *args, **kwargs)

def counted(*args, **kwargs):
    cache_reads.append(os.getpid())
    return read_cache(*args, **kwargs)

def child_state():
    child = int(Path(pids).read_text().split()[0])
    for _ in range(300):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return {"child": child, "alive": False}
        time.sleep(0.01)
    return {"child": child, "alive": True}

def started():
    for _ in range(1000):
        waits = mode in ("interrupt", "cancel", "orphan")  # until Ansible made its temporary directory
        if Path(pids).exists() and (not waits or Path(pids + ".tmp").exists()):
            return
        time.sleep(0.01)
    sys.exit("no parse started")

inventory._parse_with_ansible, inventory._read_cache = recorded, counted
if mode == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
if mode == "sigchld-ignored":  # inherited so from a parent process: the kernel reaps children itself
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
if mode == "buffered":
    print("HEADER")  # held in the buffer of a piped stdout at the fork
if mode == "interrupt":
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGALRM, interrupt)
    pending = inventory.start_loading(source, cache_dir=Path(cache))
    started()
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        pending.result()
    except KeyboardInterrupt:
        print(json.dumps(child_state()))
    sys.exit(0)
if mode == "orphan":
    pending = inventory.start_loading(source, cache_dir=Path(cache))
    started()
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "cancel":
    pending = inventory.start_loading(source, cache_dir=Path(cache))
    started()
    pending.cancel()
    print(json.dumps(child_state()))
    sys.exit(0)
if mode == "error":
    try:
        inventory.load_inventory(source, cache_dir=Path(cache))
    except inventory.InventoryError as exc:
        print(json.dumps({"parent": parent, "error": str(exc)}))
    sys.exit(0)
if mode == "noted-sigint":  # provision's handler: Ctrl-C noted, the command goes on to its own end
    noted = []
    signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    signal.signal(signal.SIGALRM, lambda signum, frame: os.killpg(0, signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, 0.5)
if mode == "started":  # the parse is under way before the result is asked for
    pending = inventory.start_loading(source, cache_dir=Path(cache))
    started()
    inv = pending.result()
else:  # "nocache": a source never cached (a script's, say): the parse comes back through the pipe
    inv = inventory.load_inventory(source, cache_dir=Path(cache), use_cache=mode != "nocache")
print(json.dumps({
    "parent": parent, "from_cache": inv.from_cache, "cache_reads": cache_reads,
    "noted": noted if mode == "noted-sigint" else None,
    "hosts": {h.name: [h.address, h.agent_port, h.expected_chips, list(h.groups), dict(h.vars)]
              for h in inv.hosts.values()},
}))
"""


def run_raw(tmp_path: Path, inv: Path, mode: str = "plain", off: str = "", tag: str = "",
            cache: Path | None = None) -> tuple[subprocess.CompletedProcess[str], list[int], Path]:
    pids, home = tmp_path / f"pids{tag}", tmp_path / f"home{tag}"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "FLEETCTL_SPEEDUPS_OFF": off}
    env.pop("ANSIBLE_LOCAL_TEMP", None)
    env.pop("PYTHONUNBUFFERED", None)  # a piped stdout holds what is printed, as a user's would
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(inv), str(cache or tmp_path / f"cache{tag}"),
                           mode, str(pids)], capture_output=True, text=True, env=env, timeout=120,
                          check=False, start_new_session=True)  # its own group: it signals the group
    lines = pids.read_text().split() if pids.exists() else []
    return done, [int(p) for p in lines], home


def run_script(tmp_path: Path, inv: Path, mode: str = "plain", off: str = "", tag: str = "",
               cache: Path | None = None) -> tuple[dict[str, Any], list[int], Path]:
    done, pids, home = run_raw(tmp_path, inv, mode, off, tag, cache)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), pids, home


def leftovers(home: Path) -> list[str]:
    tmp = home / ".ansible" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return path


def test_a_cold_parse_in_a_child_reads_as_the_parse_in_process(tmp_path: Path, inv: Path) -> None:
    apart, apart_pids, apart_home = run_script(tmp_path, inv, tag="a")
    here, here_pids, here_home = run_script(tmp_path, inv, off="parse_apart", tag="b")
    assert apart_pids and apart_pids[0] != apart["parent"], "the parse ran in the command's own process"
    assert here_pids == [here["parent"]]
    assert apart["hosts"] == here["hosts"]
    assert apart["hosts"]["h100-0002"][:3] == ["10.0.0.2", 19001, 8]
    assert apart["hosts"]["h100-0002"][4] == {"fleet_agent_port": 19001, "ansible_host": "10.0.0.2",
                                              "fleet_agent_expected_chips": 8}
    assert not apart["from_cache"] and not here["from_cache"]
    # The child wrote the cache entry and the command read it from there (as a warm start does).
    assert apart["cache_reads"] == [apart["parent"]]
    cached = list((tmp_path / "cachea").iterdir())
    assert len(cached) == 1 and json.loads(cached[0].read_text())["hosts"]
    # The child ran its own exit handlers: Ansible's temporary directory is gone with it.
    assert leftovers(apart_home) == [] and leftovers(here_home) == []


def test_the_child_writes_the_cache_the_next_command_reads(tmp_path: Path, inv: Path) -> None:
    cache = tmp_path / "cache"
    first, _, _ = run_script(tmp_path, inv, cache=cache)
    second, pids, _ = run_script(tmp_path, inv, cache=cache)
    assert len(pids) == 1  # parsed once, by the first command's child
    assert second["from_cache"] and not first["from_cache"] and second["hosts"] == first["hosts"]


def test_a_cache_that_cannot_be_written_still_means_one_parse(tmp_path: Path, inv: Path) -> None:
    (tmp_path / "a-file").write_text("")
    out, pids, _ = run_script(tmp_path, inv, cache=tmp_path / "a-file" / "cache")
    assert len(pids) == 1 and pids[0] != out["parent"]  # the parse came back through the pipe
    assert out["cache_reads"] == [] and len(out["hosts"]) == 4


def test_with_other_threads_running_the_parse_stays_in_process(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="thread")
    assert pids == [out["parent"]] and len(out["hosts"]) == 4


def test_a_child_that_dies_without_an_answer_means_a_parse_in_process(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="child-dies")
    assert len(pids) == 2 and pids[0] != out["parent"] and pids[1] == out["parent"]
    assert out["hosts"]["h100-0001"][:3] == ["10.0.0.1", out["hosts"]["h100-0001"][1], 8]


def test_ctrl_c_during_the_parse_ends_the_child_too(tmp_path: Path, inv: Path) -> None:
    out, pids, home = run_script(tmp_path, inv, mode="interrupt")
    assert out["child"] == pids[0] and out["alive"] is False
    made = Path((tmp_path / "pids.tmp").read_text())
    assert made.parent == home / ".ansible" / "tmp" and not made.exists()  # its exit handlers ran


def test_a_ctrl_c_the_command_only_notes_does_not_stop_the_parse(tmp_path: Path, inv: Path) -> None:
    # provision's handler: the run goes on to a clean end; the parse must not start over in the command.
    out, pids, _ = run_script(tmp_path, inv, mode="noted-sigint")
    assert out["noted"] and len(pids) == 1 and pids[0] != out["parent"] and len(out["hosts"]) == 4


def test_a_killed_command_takes_its_parse_child_along(tmp_path: Path, inv: Path) -> None:
    done, pids, _ = run_raw(tmp_path, inv, mode="orphan")
    assert done.returncode == -9 and len(pids) == 1
    for _ in range(500):
        try:
            os.kill(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"the parse child {pids[0]} outlived the command")
    assert not Path((tmp_path / "pids.tmp").read_text()).exists()


def test_with_sigchld_ignored_the_child_is_reaped_by_the_kernel(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="sigchld-ignored")
    assert len(pids) == 1 and pids[0] != out["parent"] and len(out["hosts"]) == 4


def test_what_the_command_printed_before_the_fork_is_printed_once(tmp_path: Path, inv: Path) -> None:
    done, pids, _ = run_raw(tmp_path, inv, mode="buffered")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("HEADER") == 1 and len(pids) == 1


def test_an_inventory_error_comes_from_the_child_as_from_the_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    h1: {fleet_expected_chips: 8}\n")
    apart, apart_pids, _ = run_script(tmp_path, bad, mode="error", tag="a")
    here, here_pids, _ = run_script(tmp_path, bad, mode="error", off="parse_apart", tag="b")
    assert apart_pids != [] and apart_pids[0] != apart["parent"] and len(apart_pids) == 1  # no second parse
    assert here_pids == [here["parent"]]
    assert apart["error"] == here["error"] and "fleet_expected_chips" in apart["error"]


@pytest.mark.parametrize("text", [
    "all:\n  hosts: [unclosed\n",  # Ansible's parse fails
    "all:\n  hosts:\n    h1: {fleet_expected_chips: 8}\n",  # fleetctl's reading of the vars fails
])
def test_errors_in_the_child_read_as_in_process(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    results = []
    for off in ("", "parse_apart"):
        env = {**os.environ, "FLEETCTL_SPEEDUPS_OFF": off, "FLEETCTL_CACHE_DIR": str(tmp_path / f"c{off}")}
        done = subprocess.run([FLEETCTL, "health", "-i", str(bad), "--json"], capture_output=True,
                              text=True, env=env, timeout=120, check=False)
        results.append((done.returncode, done.stderr.strip()))
    assert results[0] == results[1]
    rc, err = results[0]
    assert rc == 2 and str(bad) in err and len(err.splitlines()) == 1


def test_a_cancelled_load_ends_its_child(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="cancel")
    assert out["child"] == pids[0] and out["alive"] is False


def test_a_stale_cache_entry_is_parsed_again_from_the_start(tmp_path: Path, inv: Path) -> None:
    first, _, _ = run_script(tmp_path, inv, mode="started", tag="x")
    inv.write_text(INVENTORY.replace("10.0.0.1", "10.0.0.9"))
    (tmp_path / "pidsx").unlink()
    again, pids, _ = run_script(tmp_path, inv, mode="started", tag="x")
    assert len(pids) == 1 and pids[0] != again["parent"] and not again["from_cache"]
    assert again["hosts"]["h100-0001"][0] == "10.0.0.9" and first["hosts"]["h100-0001"][0] == "10.0.0.1"
    warm, pids, _ = run_script(tmp_path, inv, tag="x")
    assert warm["from_cache"] and warm["hosts"] == again["hosts"]
    assert len(pids) == 1  # the cache entry matched: no parse, no child


def test_an_uncached_parse_comes_back_whole_from_the_child(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="nocache", tag="n")
    here, _, _ = run_script(tmp_path, inv, off="parse_apart", tag="h")
    assert len(pids) == 1 and pids[0] != out["parent"] and not (tmp_path / "cachen").exists()
    assert out["hosts"] == here["hosts"]
