"""A real Slurm cluster on 127.0.0.1 for integration tests: munged + slurmctld + 3 slurmd.

Everything lives in a private temp directory with its own slurm.conf, munge key and munge socket,
so it never touches the machine's /etc/slurm or /run/munge. Ports: slurmctld 16817, slurmd
17001-17003 (node1..node3). Clients (scontrol, sinfo, squeue, sbatch) find the cluster through
``SLURM_CONF``, which :attr:`SlurmCluster.env` carries.

A test module may set ``SLURM_OPTIONS = ClusterOptions(...)`` for other ports (so that its cluster
can run beside another one) or extra slurm.conf lines (a HealthCheckProgram, say); without it the
cluster is the one described above.

A missing binary is a test failure with a message naming it (never a skip): CI installs
``slurm-wlm`` and ``munge`` with apt.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CTLD_PORT = 16817
NODE_PORTS = (17001, 17002, 17003)
NODES = tuple(f"node{i}" for i in range(1, len(NODE_PORTS) + 1))
BINARIES = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch", "scancel")


def _require_binaries() -> None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.fail(
            f"Slurm integration tests need {', '.join(missing)} on PATH: "
            "apt-get install -y slurm-wlm munge",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the Slurm test cluster runs slurmd as root: run the integration tests as root",
                    pytrace=False)


@dataclass(frozen=True)
class ClusterOptions:
    """What a test module may change (``SLURM_OPTIONS`` in the module); the defaults are the cluster
    every other Slurm test uses."""

    ctld_port: int = CTLD_PORT
    node_ports: tuple[int, ...] = NODE_PORTS
    extra_conf: str = ""  # slurm.conf lines, appended

    def __post_init__(self) -> None:
        if len(self.node_ports) != len(NODES):
            raise ValueError(f"node_ports: one port per node ({len(NODES)})")


def _slurm_conf(base: Path, options: ClusterOptions = ClusterOptions()) -> str:
    host = socket.gethostname().split(".")[0]
    node_ports = options.node_ports
    return f"""\
ClusterName=fleetctltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={options.ctld_port}
SlurmdPort={node_ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool/%n
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd-%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=120
MessageTimeout=30
InactiveLimit=0
KillWait=2
MinJobAge=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
NodeName=node[1-{len(NODES)}] NodeAddr=127.0.0.1 NodeHostname=localhost Port=[{node_ports[0]}-{node_ports[-1]}] CPUs=1 RealMemory=100 State=UNKNOWN
PartitionName=debug Nodes=node[1-{len(NODES)}] Default=YES MaxTime=INFINITE State=UP
{options.extra_conf}"""  # noqa: E501 - slurm.conf lines are what they are


class SlurmCluster:
    """Start/stop the daemons; run Slurm clients against this cluster."""

    def __init__(self, base: Path, options: ClusterOptions = ClusterOptions()) -> None:
        self.base = base
        self.options = options
        self.conf = base / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        munge = pwd.getpwnam("munge")
        base = self.base
        base.chmod(0o755)  # munged (as the munge user) must reach its own directory
        for sub in ("state", "spool", "run", "log"):
            (base / sub).mkdir()
        # munged insists: the socket's directory is world-executable, the key's is private.
        mdir = base / "munge"
        mdir.mkdir()
        mdir.chmod(0o755)
        kdir = base / "munge-key"
        kdir.mkdir(mode=0o700)
        key = kdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for p in (mdir, kdir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        self.conf.write_text(_slurm_conf(base, self.options))
        self._spawn(
            ["munged", "-F", f"--socket={mdir}/munge.socket.2", f"--key-file={key}",
             f"--pid-file={mdir}/munged.pid", f"--log-file={mdir}/munged.log",
             f"--seed-file={mdir}/munged.seed"],
            user=munge,
        )
        self._wait_for(lambda: (mdir / "munge.socket.2").exists(), "munged socket")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        port = self.options.ctld_port
        self._wait_for(lambda: self._port_open(port), f"slurmctld on port {port}")
        for node in NODES:
            self._spawn(["slurmd", "-D", "-N", node, "-f", str(self.conf)])
        self._wait_for(self._all_idle, "all slurmd nodes idle", timeout=60)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def _spawn(self, argv: list[str], user: pwd.struct_passwd | None = None) -> None:
        log = open(self.base / "log" / f"{argv[0]}-{len(self._procs)}.out", "wb")
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self._procs.append(proc)

    def _wait_for(self, check: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    pytest.fail(f"{proc.args[0]} exited with {proc.returncode} while waiting for {what}\n"
                                f"{self._log_tails()}", pytrace=False)
            if check():  # type: ignore[operator]
                return
            time.sleep(0.3)
        pytest.fail(f"timed out waiting for {what}\n{self._log_tails()}", pytrace=False)

    def _log_tails(self, lines: int = 15) -> str:
        """The end of every daemon log (the temp directory is removed after the tests)."""
        out = []
        for log in sorted((self.base / "log").glob("*")) + sorted((self.base / "munge").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _all_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(n, "").rstrip("*") == "idle" for n in NODES)

    # -- clients -----------------------------------------------------------------------------
    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check,
                              timeout=30)

    def node_state(self, node: str) -> str:
        """sinfo's compact state of ``node`` (idle, alloc, drng, drain, ...).

        A trailing ``*`` (no answer to slurmctld's last ping: slurmd busy on a loaded 2-core test
        machine) is dropped: these tests are about drain states, not slurmd's liveness.
        """
        return self.run(["sinfo", "-h", "-n", node, "-N", "-o", "%t"]).stdout.strip().rstrip("*")

    def submit_sleep(self, node: str, seconds: int) -> str:
        """Submit ``sleep seconds`` pinned to ``node``; returns the job id once it runs."""
        out = self.run(["sbatch", "--parsable", "-w", node, "-o", "/dev/null",
                        "--wrap", f"sleep {seconds}"]).stdout.strip()
        job = out.split(";")[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = self.run(["squeue", "-h", "-j", job, "-o", "%T"], check=False).stdout.strip()
            if state == "RUNNING":
                return job
            time.sleep(0.3)
        pytest.fail(f"job {job} never started on {node}", pytrace=False)

    def reset_nodes(self) -> None:
        """Cancel all jobs and resume every node, so each test starts from idle and responding."""
        self.run(["scancel", "--full", "-u", "root"], check=False)
        for node in NODES:
            self.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
        self._wait_for(self._all_idle, "nodes idle after reset", timeout=60)
        if not self._all_responding():
            # A slurmd that missed slurmctld's ping (a loaded 2-core machine) stays "not
            # responding" until the next ping, up to 40 s away, and fleetctl rightly counts such a
            # node as unavailable: it would eat a test's max-unavailable budget. Every slurmd
            # registers again on reconfigure.
            self.run(["scontrol", "reconfigure"], check=False)
            self._wait_for(self._all_responding, "every slurmd responding after reset", timeout=60)

    def _all_responding(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in NODES)


# Module scope: each test module imports this fixture (there is no shared conftest for it), and
# two clusters cannot hold the same ports at once; a module's cluster stops before the next starts.
@pytest.fixture(scope="module")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    _require_binaries()
    options = getattr(request.module, "SLURM_OPTIONS", ClusterOptions())
    base = Path(tempfile.mkdtemp(prefix="fleetctl-slurm-"))
    cluster = SlurmCluster(base, options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def slurm(slurm_cluster: SlurmCluster) -> SlurmCluster:
    """The session's cluster, every node idle and no job left from an earlier test."""
    slurm_cluster.reset_nodes()
    return slurm_cluster
