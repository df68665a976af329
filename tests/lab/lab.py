"""The SSH test lab: Debian 12 containers with systemd and sshd on the host's network.

Names and ports come from ``inventory/lab/hosts.yml`` (the one place they are kept): each host
becomes a container ``fleetctl-lab-<host>`` whose sshd listens on ``127.0.0.1:<ansible_port>``.
The controller's key, and a known_hosts file holding each container's host key, live under
``.cache/lab/``; host key checking stays on.

    python tests/lab/lab.py up          # start (or reuse) the lab; prints the inventory path
    python tests/lab/lab.py down        # remove the containers and the lab's key
    python tests/lab/lab.py inventory   # print the inventory path
    python tests/lab/lab.py playbook playbooks/site.yml [ansible-playbook args...]

pytest and the fleet-level Molecule scenario (tests/molecule/fleet) call the same functions.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "lab"
STATE_DIR = REPO / ".cache" / "lab"
KEY = STATE_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
# The agent's dependencies as wheels: the lab installs offline (fleet_agent_wheelhouse), as an
# air-gapped fleet would; the containers need no route to PyPI.
WHEELHOUSE = STATE_DIR / "wheelhouse"
IMAGE = "fleetctl/debian12-systemd:latest"
SSH_USER = "fleetops"
CONTAINER_PREFIX = "fleetctl-lab-"
# Settings systemd needs as PID 1 here (no --privileged): see tests/molecule/README.md.
SYSTEMD_RUN_ARGS = (
    "--network", "host", "--cap-add", "SYS_ADMIN", "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--cgroupns", "host",
    "--stop-signal", "SIGRTMIN+3",
)


class LabError(RuntimeError):
    """The lab could not be brought up or used; the message says which host and why."""


@dataclass(frozen=True)
class LabHost:
    name: str
    ssh_port: int
    agent_port: int

    @property
    def container(self) -> str:
        return CONTAINER_PREFIX + self.name


def lab_hosts(inventory: Path = INVENTORY / "hosts.yml") -> list[LabHost]:
    """The lab's hosts, read from the inventory (every host under the ``lab`` group)."""
    doc = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    found: dict[str, LabHost] = {}

    def walk(group: dict[str, object], path: str) -> None:
        hosts = group.get("hosts") or {}
        children = group.get("children") or {}
        if not isinstance(hosts, dict) or not isinstance(children, dict):
            raise LabError(f"{inventory}: {path}: hosts and children must be mappings")
        for name, hvars in hosts.items():
            hvars = hvars or {}
            try:
                found[name] = LabHost(name, int(hvars["ansible_port"]), int(hvars["fleet_agent_port"]))
            except (KeyError, TypeError, ValueError):
                raise LabError(f"{inventory}: {path}.hosts.{name}: needs integer ansible_port and "
                               "fleet_agent_port") from None
        for child, sub in children.items():
            walk(sub or {}, f"{path}.children.{child}")

    walk(doc["all"]["children"]["lab"], "all.children.lab")
    if not found:
        raise LabError(f"{inventory}: no hosts under the lab group")
    return list(found.values())


def _run(argv: Sequence[str], *, check: bool = True, input_text: str | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc


def _exec(host: LabHost, argv: Sequence[str], *, input_text: str | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["docker", "exec", "-i", host.container, *argv], input_text=input_text, check=check)


def _container_state(host: LabHost) -> str | None:
    proc = _run(["docker", "inspect", "-f", "{{.State.Status}}", host.container], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ensure_key() -> str:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetctl-lab", "-f", str(KEY)])
    return KEY.with_suffix(".pub").read_text(encoding="utf-8").strip()


# A reboot inside a container ends its PID 1 (systemd) and with it the container; Docker starts it
# again, as a host's firmware would (sshd and the agent come back as enabled units). `maintain
# --reboot` is tested that way.
RESTART_POLICY = "unless-stopped"


def _start_container(host: LabHost) -> None:
    state = _container_state(host)
    if state == "running":
        # A lab started before the policy existed gets it now (docker update applies it live).
        _run(["docker", "update", "--restart", RESTART_POLICY, host.container])
        return
    if state is not None:
        _run(["docker", "rm", "-f", host.container])
    # Each port must be free: another lab, or a stray sshd, would answer in the lab's place.
    for port in (host.ssh_port, host.agent_port):
        if _port_open(port):
            raise LabError(f"{host.name}: port 127.0.0.1:{port} is already in use")
    _run(["docker", "run", "-d", "--name", host.container, "--hostname", host.name,
          "--label", "fleetctl.lab=1", "--restart", RESTART_POLICY, *SYSTEMD_RUN_ARGS, IMAGE,
          "/lib/systemd/systemd"])


def _configure_sshd(host: LabHost, pubkey: str) -> None:
    # systemd must be up before units can be started; "degraded" is fine for the lab.
    deadline = time.monotonic() + 120
    while True:
        state = _exec(host, ["systemctl", "is-system-running"], check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: systemd did not finish booting (state {state!r})")
        time.sleep(1)
    script = f"""set -eu
id {SSH_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {SSH_USER}
install -d -m 0700 -o {SSH_USER} -g {SSH_USER} /home/{SSH_USER}/.ssh
cat > /home/{SSH_USER}/.ssh/authorized_keys
chown {SSH_USER}:{SSH_USER} /home/{SSH_USER}/.ssh/authorized_keys
chmod 0600 /home/{SSH_USER}/.ssh/authorized_keys
echo '{SSH_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{SSH_USER}
chmod 0440 /etc/sudoers.d/{SSH_USER}
test -e /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
printf '%s\\n' 'Port {host.ssh_port}' 'ListenAddress 127.0.0.1' 'HostKey /etc/ssh/ssh_host_ed25519_key' \\
  'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'PermitRootLogin no' \\
  'UseDNS no' > /etc/ssh/sshd_config.d/fleetctl-lab.conf
systemctl enable --now ssh.service >/dev/null 2>&1
systemctl reload-or-restart ssh.service
"""
    # The script is a constant apart from integers and the public key, which goes in on stdin.
    _exec(host, ["sh", "-c", script], input_text=pubkey + "\n")


def _host_key(host: LabHost) -> str:
    """The container's host key, read out of band (docker exec), not over the network."""
    key = _exec(host, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()
    return f"{key[0]} {key[1]}"


def _scan(host: LabHost) -> str:
    deadline = time.monotonic() + 60
    while True:
        proc = _run(["ssh-keyscan", "-t", "ed25519", "-p", str(host.ssh_port), "127.0.0.1"], check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith("#")]
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: sshd on 127.0.0.1:{host.ssh_port} did not answer ssh-keyscan")
        time.sleep(1)


def _write_known_hosts(hosts: list[LabHost]) -> None:
    entries = []
    for host in hosts:
        scanned = _scan(host)
        expected = f"[127.0.0.1]:{host.ssh_port} {_host_key(host)}"
        # ssh-keyscan trusts whoever answers on the port; the key read through docker proves it
        # is this container's sshd and not something else listening there.
        if scanned.strip() != expected:
            raise LabError(f"{host.name}: the key sshd presents on port {host.ssh_port} is not the "
                           "container's host key")
        entries.append(expected)
    tmp = KNOWN_HOSTS.with_suffix(".tmp")
    tmp.write_text("\n".join(entries) + "\n", encoding="utf-8")
    tmp.replace(KNOWN_HOSTS)


def _check_ssh(host: LabHost) -> None:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes",
            "-i", str(KEY), "-p", str(host.ssh_port),
            f"{SSH_USER}@127.0.0.1", "sudo", "-n", "true"]
    _run(argv, timeout=60)


def wheelhouse_requirements(pyproject: Path = REPO / "agents" / "pyproject.toml") -> list[str]:
    """The agent's dependencies and those of every extra (the lab's GPU hosts get nvml, its TPU
    host tpu: fleet_agent_extras), from agents/pyproject.toml."""
    with pyproject.open("rb") as f:
        project = tomllib.load(f)["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(req for name in sorted(extras) for req in extras[name])]


def ensure_wheelhouse() -> None:
    """Download the wheels wheelhouse_requirements() names, unless the wheelhouse holds them."""
    requirements = wheelhouse_requirements()
    stamp = "\n".join(requirements) + "\n"
    try:
        if (WHEELHOUSE / "requirements.txt").read_text(encoding="utf-8") == stamp:
            return
    except OSError:
        pass  # none yet, or one from before the extras were added: download again
    tmp = WHEELHOUSE.with_name("wheelhouse.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # The controller and the image both run CPython 3.11 on x86_64 Linux: the same wheels fit.
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
          "--only-binary=:all:", "--dest", str(tmp), *requirements], timeout=600)
    (tmp / "requirements.txt").write_text(stamp, encoding="utf-8")
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    tmp.replace(WHEELHOUSE)


def ensure_image() -> None:
    _run(["bash", str(REPO / "tests" / "images" / "build.sh")], timeout=1200)


def up(hosts: list[LabHost] | None = None) -> Path:
    """Start (or reuse) the lab; returns the inventory directory to pass to ansible (-i)."""
    hosts = hosts or lab_hosts()
    ensure_image()
    pubkey = _ensure_key()
    ensure_wheelhouse()
    for host in hosts:
        _start_container(host)
    for host in hosts:
        _configure_sshd(host, pubkey)
    _write_known_hosts(hosts)
    for host in hosts:
        _check_ssh(host)
    return INVENTORY


def down(hosts: list[LabHost] | None = None) -> None:
    """Remove the lab's containers and its key material."""
    for host in hosts or lab_hosts():
        if _container_state(host) is not None:
            _run(["docker", "rm", "-f", host.container])
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def close_ssh_masters(hosts: list[LabHost] | None = None, control_dir: Path | None = None) -> int:
    """Stop the SSH control masters Ansible keeps open to the lab (ControlPersist), so the next
    run connects afresh; returns how many were stopped. Only the lab's own sockets are touched:
    Ansible names them by a hash of host, port and user (the ssh plugin's default ControlPath)."""
    control_dir = control_dir or Path.home() / ".ansible" / "cp"  # Ansible's control_path_dir default
    stopped = 0
    for host in hosts or lab_hosts():
        name = f"127.0.0.1-{host.ssh_port}-{SSH_USER}".encode()
        socket_path = control_dir / hashlib.sha1(name, usedforsecurity=False).hexdigest()[:10]
        if not socket_path.exists():
            continue
        proc = _run(["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", "-p", str(host.ssh_port),
                     f"{SSH_USER}@127.0.0.1"], check=False, timeout=30)
        stopped += proc.returncode == 0
    return stopped


def host_cpu_seconds(host: LabHost) -> float | None:
    """CPU time the host's container has used so far (its cgroup's counter, read on this machine),
    or None where neither cgroup v1's cpuacct nor cgroup v2's cpu.stat is found for it."""
    cid = _run(["docker", "inspect", "-f", "{{.Id}}", host.container]).stdout.strip()
    v1 = Path("/sys/fs/cgroup/cpuacct/docker", cid, "cpuacct.usage")
    if v1.is_file():
        return int(v1.read_text(encoding="utf-8")) / 1e9
    for v2 in (Path("/sys/fs/cgroup/system.slice", f"docker-{cid}.scope", "cpu.stat"),
               Path("/sys/fs/cgroup/docker", cid, "cpu.stat")):
        if v2.is_file():
            fields = dict(line.split() for line in v2.read_text(encoding="utf-8").splitlines())
            return int(fields["usage_usec"]) / 1e6
    return None


def playbook_env(config: Path | None = None) -> dict[str, str]:
    """A clean environment for ansible-playbook: the repository's ansible.cfg (or ``config``) and
    nothing that a caller (Molecule sets ANSIBLE_CONFIG, ANSIBLE_ROLES_PATH, ...) would leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env["ANSIBLE_CONFIG"] = str(config or REPO / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_playbook(playbook: str, extra: Sequence[str] = (), *, config: Path | None = None,
                 quiet: bool = False) -> int:
    """ansible-playbook -i inventory/lab PLAYBOOK over SSH, from the repository root."""
    exe = Path(sys.executable).with_name("ansible-playbook")
    argv = [str(exe if exe.exists() else "ansible-playbook"), "-i", str(INVENTORY), playbook, *extra]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(argv, cwd=REPO, env=playbook_env(config), check=False, stdout=out).returncode


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab.py", description="The fleetctl SSH test lab.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start or reuse the lab containers; print the inventory path")
    sub.add_parser("down", help="remove the lab containers and key")
    sub.add_parser("inventory", help="print the inventory path")
    pb = sub.add_parser("playbook", help="run ansible-playbook against the lab")
    pb.add_argument("playbook")
    pb.add_argument("extra", nargs=argparse.REMAINDER, help="more ansible-playbook arguments")
    args = p.parse_args(argv)
    try:
        if args.command == "up":
            print(up())
        elif args.command == "down":
            down()
        elif args.command == "inventory":
            print(INVENTORY)
        else:
            return run_playbook(args.playbook, args.extra)
    except (LabError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"lab.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
