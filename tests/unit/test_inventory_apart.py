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
from pathlib import Path

import pytest

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")

INVENTORY = """\
all:
  children:
    gpu_nodes:
      hosts:
        h100-0001: {ansible_host: 10.0.0.1}
        h100-0002: {ansible_host: 10.0.0.2, fleet_agent_port: 19001, rack: "{{ row }}-2"}
      vars:
        fleet_agent_expected_chips: 8
        row: b
    tpu_nodes:
      hosts:
        v5e-0001: {fleet_agent_expected_chips: 4}
"""

# argv: inventory, cache dir, mode, pid file. Prints the parent's pid, whether the inventory came
# from the cache, and each host as fleetctl sees it.
SCRIPT = """
import json, os, signal, sys, threading, time
from pathlib import Path
import fleetctl.inventory as inventory

source, cache, mode, pids = sys.argv[1:5]
parse = inventory._parse_with_ansible
parent = os.getpid()

def recorded(sources, *args, **kwargs):
    with open(pids, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    if mode == "child-dies" and os.getpid() != parent:
        os._exit(3)
    if mode in ("interrupt", "cancel") and os.getpid() != parent:
        time.sleep(600)  # only a kill ends it before the test times out
    return parse(sources, *args, **kwargs)

inventory._parse_with_ansible = recorded
if mode == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
if mode == "interrupt":
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        inventory.load_inventory(source, cache_dir=Path(cache))
    except KeyboardInterrupt:
        child = int(Path(pids).read_text().split()[0])
        try:
            os.kill(child, 0)
            print(json.dumps({"child": child, "alive": True}))
        except ProcessLookupError:
            print(json.dumps({"child": child, "alive": False}))
    sys.exit(0)
if mode == "cancel":
    pending = inventory.start_loading(source, cache_dir=Path(cache))
    while not Path(pids).exists():
        time.sleep(0.01)
    pending.cancel()
    child = int(Path(pids).read_text().split()[0])
    try:
        os.kill(child, 0)
        print(json.dumps({"child": child, "alive": True}))
    except ProcessLookupError:
        print(json.dumps({"child": child, "alive": False}))
    sys.exit(0)
if mode == "started":  # the parse is under way before the result is asked for
    pending = inventory.start_loading(source, cache_dir=Path(cache))
    for _ in range(1000):
        if Path(pids).exists():
            break
        time.sleep(0.01)
    else:
        sys.exit("no parse started")
    inv = pending.result()
else:  # "nocache": a source never cached (a script's, say): the parse comes back through the pipe
    inv = inventory.load_inventory(source, cache_dir=Path(cache), use_cache=mode != "nocache")
print(json.dumps({
    "parent": parent, "from_cache": inv.from_cache,
    "hosts": {h.name: [h.address, h.agent_port, h.expected_chips, list(h.groups), dict(h.vars)]
              for h in inv.hosts.values()},
}))
"""


def run_script(tmp_path: Path, inv: Path, mode: str = "plain", off: str = "",
               tag: str = "") -> tuple[dict, list[int], Path]:
    cache, pids, home = tmp_path / f"cache{tag}", tmp_path / f"pids{tag}", tmp_path / f"home{tag}"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "FLEETCTL_SPEEDUPS_OFF": off}
    env.pop("ANSIBLE_LOCAL_TEMP", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(inv), str(cache), mode, str(pids)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = pids.read_text().split() if pids.exists() else []
    return json.loads(done.stdout), [int(p) for p in lines], home


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
    assert apart["hosts"]["h100-0002"][4] == {"rack": "{{ row }}-2", "row": "b", "fleet_agent_port": 19001,
                                              "ansible_host": "10.0.0.2", "fleet_agent_expected_chips": 8}
    assert not apart["from_cache"] and not here["from_cache"]
    cached = list((tmp_path / "cachea").iterdir())
    assert len(cached) == 1 and json.loads(cached[0].read_text())["hosts"]
    # The child ran its own exit handlers: Ansible's temporary directory is gone with it.
    assert leftovers(apart_home) == [] and leftovers(here_home) == []


def test_the_child_writes_the_cache_the_next_command_reads(tmp_path: Path, inv: Path) -> None:
    cache, pids = tmp_path / "cache", tmp_path / "pids"
    first = subprocess.run([sys.executable, "-c", SCRIPT, str(inv), str(cache), "plain", str(pids)],
                           capture_output=True, text=True, timeout=120, check=True)
    second = subprocess.run([sys.executable, "-c", SCRIPT, str(inv), str(cache), "plain", str(pids)],
                            capture_output=True, text=True, timeout=120, check=True)
    assert len(pids.read_text().split()) == 1  # parsed once, by the first command's child
    assert json.loads(second.stdout)["from_cache"] and not json.loads(first.stdout)["from_cache"]
    assert json.loads(second.stdout)["hosts"] == json.loads(first.stdout)["hosts"]


def test_with_other_threads_running_the_parse_stays_in_process(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="thread")
    assert pids == [out["parent"]] and len(out["hosts"]) == 3


def test_a_child_that_dies_without_an_answer_means_a_parse_in_process(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="child-dies")
    assert len(pids) == 2 and pids[0] != out["parent"] and pids[1] == out["parent"]
    assert out["hosts"]["h100-0001"][:3] == ["10.0.0.1", out["hosts"]["h100-0001"][1], 8]


def test_ctrl_c_during_the_parse_ends_the_child_too(tmp_path: Path, inv: Path) -> None:
    out, pids, _ = run_script(tmp_path, inv, mode="interrupt")
    assert out["child"] == pids[0] and out["alive"] is False


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
