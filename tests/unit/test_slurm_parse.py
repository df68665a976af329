"""The Slurm adapter: parsing scontrol's one-line node records, and the commands it runs (fake runner)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from fleetctl.schedulers import SchedulerConfigError, SchedulerFactory
from fleetctl.schedulers.base import ForeignDrainError, SchedState, SchedulerError
from fleetctl.schedulers.slurm import SlurmScheduler, parse_node_line
from fleetctl.schedulers.transport import CommandResult, SshRunner, runner_for

# Captured from slurm-wlm 22.05 (`scontrol show node -o node1`), trimmed of the middle fields.
LINE = ("NodeName={name} Arch=x86_64 CoresPerSocket=1  CPUAlloc=1 CPUEfctv=1 CPUTot=1 CPULoad=0.61 "
        "NodeAddr=127.0.0.1 NodeHostName=localhost Version=22.05.8 OS=Linux 6.18 #1 SMP @0  RealMemory=100 "
        "State={state} ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  "
        "BootTime=2026-11-24T14:56:05 CfgTRES=cpu=1,mem=100M,billing=1 AllocTRES=cpu=1 CapWatts=n/a{reason}")


def line(state: str, reason: str | None = None, name: str = "node1") -> str:
    return LINE.format(name=name, state=state, reason=f" Reason={reason}" if reason is not None else "")


@pytest.mark.parametrize(("state", "expected"), [
    ("IDLE", SchedState.ACTIVE),
    ("ALLOCATED", SchedState.ACTIVE),
    ("MIXED", SchedState.ACTIVE),
    ("ALLOCATED+DRAIN", SchedState.DRAINING),
    ("MIXED+DRAIN", SchedState.DRAINING),
    ("IDLE+COMPLETING+DRAIN", SchedState.DRAINING),
    ("IDLE+DRAIN", SchedState.DRAINED),
    ("DOWN+DRAIN", SchedState.DRAINED),
    ("DOWN", SchedState.DOWN),
    ("IDLE+NOT_RESPONDING", SchedState.DOWN),
    ("DOWN*", SchedState.DOWN),
    ("FUTURE", SchedState.DOWN),
    ("WEIRD", SchedState.UNKNOWN),
])
def test_state_mapping(state: str, expected: SchedState) -> None:
    name, st = parse_node_line(line(state, "fleetctl:alice: fan" if "DRAIN" in state else None))
    assert name == "node1" and st.state is expected and st.detail == state


def test_reason_with_spaces_and_slurm_suffix() -> None:
    _, st = parse_node_line(line("IDLE+DRAIN", "fleetctl:alice: replace fan  [root@2026-11-24T15:03:25]"))
    assert st.reason == "fleetctl:alice: replace fan" and st.ours and not st.foreign_drain
    _, st = parse_node_line(line("ALLOCATED+DRAIN", "bob: PSU swap [bob@2026-11-24T15:03:25]"))
    assert st.reason == "bob: PSU swap" and st.foreign_drain


def test_garbage_is_an_error() -> None:
    with pytest.raises(SchedulerError, match="unexpected scontrol output"):
        parse_node_line("Node node1 not found")


@dataclass(frozen=True)
class FakeHost:
    name: str
    address: str = "127.0.0.1"
    vars: Mapping[str, Any] = field(default_factory=dict)


class FakeRunner:
    """Answers scontrol/squeue like Slurm; records every argv."""

    where = "fake"

    def __init__(self, nodes: dict[str, tuple[str, str | None]]) -> None:
        self.nodes = nodes
        self.calls: list[list[str]] = []
        self.down = False

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        self.calls.append(list(argv))
        if self.down:
            return CommandResult(1, "", "slurm_load_node error: Unable to contact slurm controller "
                                        "(connect failure)")
        if argv[:3] == ["scontrol", "show", "node"]:
            names = argv[4:] or list(self.nodes)
            if any(n not in self.nodes for n in names):
                return CommandResult(1, "", f"Node {names[0]} not found")
            return CommandResult(0, "\n".join(line(*self.nodes[n], name=n) for n in names) + "\n", "")
        if argv[:2] == ["scontrol", "update"]:
            node = argv[2].removeprefix("NodeName=")
            if argv[3] == "State=DRAIN":
                busy = self.nodes[node][0].startswith("ALLOC")
                self.nodes[node] = ("ALLOCATED+DRAIN" if busy else "IDLE+DRAIN",
                                    argv[4].removeprefix("Reason="))
            elif argv[3] == "State=RESUME":
                self.nodes[node] = ("IDLE", None)
            return CommandResult(0, "", "")
        if argv[0] == "squeue":
            busy = self.nodes[argv[3]][0].startswith("ALLOC")
            return CommandResult(0, "17 alice train\n" if busy else "", "")
        raise AssertionError(argv)


def test_drain_runs_scontrol_with_the_reason_as_one_argument() -> None:
    runner = FakeRunner({"gpu-a": ("ALLOCATED", None)})
    s = SlurmScheduler(runner)
    host = FakeHost("h1", vars={"fleet_slurm_node_name": "gpu-a"})
    s.drain(host, "fleetctl:alice: fan; rm -rf /")
    assert ["scontrol", "update", "NodeName=gpu-a", "State=DRAIN", "Reason=fleetctl:alice: fan; rm -rf /"] \
        in runner.calls
    assert s.state(host).state is SchedState.DRAINING
    assert s.running_workloads(host) == ["job 17 alice train"]
    n = len(runner.calls)
    s.drain(host, "fleetctl:alice: fan")  # already ours: no second update
    assert not any(c[:2] == ["scontrol", "update"] for c in runner.calls[n:])
    s.undrain(host)
    assert runner.calls[-1] == ["scontrol", "update", "NodeName=gpu-a", "State=RESUME"]


def test_foreign_drain_is_never_touched() -> None:
    runner = FakeRunner({"n1": ("IDLE+DRAIN", "bob: PSU")})
    s = SlurmScheduler(runner)
    with pytest.raises(ForeignDrainError, match="bob: PSU"):
        s.drain(FakeHost("n1"), "fleetctl:alice: x")
    with pytest.raises(ForeignDrainError):
        s.undrain(FakeHost("n1"))
    assert not any(c[:2] == ["scontrol", "update"] for c in runner.calls)


def test_errors_name_the_node_and_the_controller() -> None:
    runner = FakeRunner({"n1": ("IDLE", None)})
    s = SlurmScheduler(runner)
    with pytest.raises(SchedulerError, match="h9: Slurm has no node named 'h9'"):
        s.state(FakeHost("h9"))
    runner.down = True
    with pytest.raises(SchedulerError, match="Unable to contact slurm controller"):
        s.state(FakeHost("n1"))


def test_bulk_states_is_one_call() -> None:
    runner = FakeRunner({"n1": ("IDLE", None), "n2": ("IDLE+DRAIN", "fleetctl:a: b"), "n3": ("DOWN", "dead")})
    got = SlurmScheduler(runner).states([FakeHost("n1"), FakeHost("n2"), FakeHost("n3"), FakeHost("n4")])
    assert [got[n].state for n in ("n1", "n2", "n3", "n4")] == [
        SchedState.ACTIVE, SchedState.DRAINED, SchedState.DOWN, SchedState.UNKNOWN]
    assert len(runner.calls) == 1


def test_ssh_runner_quotes_each_argument() -> None:
    r = SshRunner("10.0.0.5", port=2222, user="slurm", key_file="/k")
    argv = r.argv(["scontrol", "update", "Reason=fleetctl:a: it's $(bad)"])
    assert argv[:2] == ["ssh", "-o"] and "BatchMode=yes" in argv
    assert argv[-2:] == ["10.0.0.5", "scontrol update 'Reason=fleetctl:a: it'\"'\"'s $(bad)'"]
    assert "StrictHostKeyChecking=no" not in " ".join(argv)


def test_runner_and_factory_from_inventory_vars() -> None:
    local = runner_for(FakeHost("h", vars={"ansible_connection": "local"}))
    assert local.where == "local"
    ssh = runner_for(FakeHost("h", "10.1.1.1", {"ansible_port": "2201", "ansible_user": "ops"}))
    assert ssh.where == "ssh ops@10.1.1.1:2201"
    with pytest.raises(SchedulerConfigError, match="h: ansible_port='x'"):
        runner_for(FakeHost("h", vars={"ansible_port": "x"}))
    hosts = {"ctl": FakeHost("ctl", "10.0.0.2", {"ansible_user": "slurm"})}
    factory = SchedulerFactory(hosts.get)
    s = factory(FakeHost("n1", vars={"fleet_scheduler": "slurm", "fleet_slurm_controller": "ctl"}))
    assert s.kind == "slurm" and s.runner.where == "ssh slurm@10.0.0.2"  # type: ignore[attr-defined]
    with pytest.raises(SchedulerConfigError, match="fleet_slurm_controller='nope' is not a host"):
        factory(FakeHost("n2", vars={"fleet_scheduler": "slurm", "fleet_slurm_controller": "nope"}))
    with pytest.raises(SchedulerConfigError,
                       match="fleet_scheduler='pbs' is not one of slurm, kubernetes, none"):
        factory(FakeHost("n3", vars={"fleet_scheduler": "pbs"}))
    assert factory(FakeHost("n4")).kind == "none"


@pytest.mark.parametrize("name", ["gpu[1-3]", "a,b", "-d", "two words", "node\n1", ""])
def test_a_name_that_is_not_one_plain_node_is_refused_before_any_command(name: str) -> None:
    # A hostlist would drain several nodes while max-unavailable counts one; "-d" is an option.
    runner = FakeRunner({"node1": ("IDLE", None)})
    host = FakeHost("h1", vars={"fleet_slurm_node_name": name} if name else {})
    s = SlurmScheduler(runner)
    if not name:  # the inventory name itself
        host = FakeHost("-x")
    with pytest.raises(SchedulerError, match="is not a single Slurm node name"):
        s.drain(host, "fleetctl:alice: fan")
    with pytest.raises(SchedulerError, match="is not a single Slurm node name"):
        s.state(host)
    assert runner.calls == []


def test_the_reason_ends_where_the_next_field_begins() -> None:
    # Slurm 23+ prints Comment= (and more) after Reason=.
    _, st = parse_node_line(line("IDLE+DRAIN", "fleetctl:al: y [root@2026-11-24T15:03:25] Comment=ticket 7"))
    assert st.reason == "fleetctl:al: y" and st.ours
