"""``ansible HOST -m ping`` on the SSH lab as the repository runs it, against a given known_hosts file.

Usage: ping_with_known_hosts.py HOST KNOWN_HOSTS. The repository's ansible.cfg and inventory/lab are
used unchanged (host keys checked) except for two things: the known_hosts file (an extra var, above
the inventory's ansible_ssh_common_args) and no SSH connection sharing, so that a control master
left open by an earlier run cannot carry this one past the host key check. Exits with ansible's
status; its output is printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
import lab


def main() -> int:
    host, known_hosts = sys.argv[1:3]
    env = lab.playbook_env()
    env["ANSIBLE_SSH_ARGS"] = "-o ControlMaster=no -o ControlPath=none"
    exe = Path(sys.executable).with_name("ansible")
    argv = [str(exe), host, "-i", str(lab.INVENTORY), "-m", "ansible.builtin.ping",
            "-e", f"ansible_ssh_common_args='-o UserKnownHostsFile={known_hosts} -o IdentitiesOnly=yes'"]
    proc = subprocess.run(argv, cwd=lab.REPO, env=env, capture_output=True, text=True, timeout=120)
    sys.stdout.write(proc.stdout + proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
