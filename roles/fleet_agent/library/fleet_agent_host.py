#!/usr/bin/python
"""Read what the fleet_agent role needs to know about a host, changing nothing."""

# Ansible modules put their documentation strings before the imports.
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_agent_host
short_description: Read a host's accelerators, listen address, agent Python and agent venv
description:
  - NVIDIA GPUs and TPUs on the PCI bus or as device nodes (sysfs is read directly; Ansible's facts
    list no PCI devices).
  - Whether O(listen_address) resolves to addresses of this host, and to more than loopback.
  - The version and real path of O(python), the interpreter the agent's venv is to be made from; it
    may be missing (a dry run on a host the role has yet to give it).
  - The interpreter and version the venv at O(venv) was made from (its C(pyvenv.cfg)).
  - Runs under the Python that runs Ansible's modules, so none of this depends on the agent's.
options:
  listen_address:
    description: The agent's listen address (an IP literal, possibly bracketed, or a name).
    type: str
    required: true
  python:
    description: Path of the interpreter the agent's venv is to be made from.
    type: str
    required: true
  venv:
    description: The agent's venv directory.
    type: path
    required: true
  paths:
    description:
      - Paths whose type, owner, group and mode the role compares with what its tasks would leave, to
        skip a task with nothing to change (a directory already right, a removal of nothing). Taken
        as the role's tasks give them.
    type: list
    elements: str
    default: []
author: fleetctl
"""

RETURN = r"""
nvidia:
  description: An NVIDIA GPU is on the PCI bus or /dev/nvidiactl exists.
  type: bool
  returned: always
tpu:
  description: A TPU is on the PCI bus or /dev/accel* exists.
  type: bool
  returned: always
addresses:
  description: What O(listen_address) resolves to on the host.
  type: list
  elements: str
  returned: always
listen_error:
  description: Why the agent could not listen there; empty when it can.
  type: str
  returned: always
loopback_only:
  description: Every address is loopback.
  type: bool
  returned: always
python:
  description: O(python)'s version as [major, minor, micro]; null when it cannot run.
  type: list
  elements: int
  returned: always
python_installed:
  description: O(python) exists.
  type: bool
  returned: always
python_error:
  description: Why O(python) gave no version; empty when it did.
  type: str
  returned: always
python_executable:
  description: The real path of the binary O(python) runs; null when it cannot run.
  type: str
  returned: always
venv_stale:
  description:
    - The venv (its C(bin/python), a dangling link included) exists and was made from another
      interpreter or major.minor than O(python)'s, or has no record of it; false when O(python) cannot run.
  type: bool
  returned: always
venv_executable:
  description: The real path the venv was made from; null without a venv (or its record).
  type: str
  returned: always
venv_version:
  description: The Python version the venv was made with; null without a venv.
  type: str
  returned: always
paths:
  description:
    - Each of O(paths) that exists, as given, to [type, owner, group, mode], type being C(directory),
      C(file), C(link) or C(other), mode four octal digits; a link is not followed. One that does not
      exist is not listed.
  type: dict
  returned: always
venv_previous:
  description:
    - C(<venv>.previous) exists, the venv the agent ran from before a run that did not finish began making
      the venv anew; the role puts it back, so the other C(venv_*) values describe it.
  type: bool
  returned: always
"""

import errno
import glob
import grp
import ipaddress
import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence

from ansible.module_utils.basic import AnsibleModule

# TPU device ids as the agent's collectors/tpu.py knows them (v2/v3, v4, v5p, v5e, v6e, TPU7x); Google's
# vendor id alone also matches its virtual NIC (gVNIC) on every Compute Engine VM.
_TPU_IDS = {"0x0027", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}
# Asked of the agent's interpreter: its version, then the binary it really is (a shim or wrapper
# script execs the real one, which is what a venv made from it records).
_ASK = "import os, sys; print(*sys.version_info[:3]); print(os.path.realpath(sys.executable))"
# Isolated (-I): no PYTHONPATH, PYTHONHOME or user site from the task's environment; and the last two
# lines are the answer, whatever a sitecustomize printed first.


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip().lower()
    except OSError:
        return ""


def _chips() -> tuple[bool, bool]:
    nvidia = os.path.exists("/dev/nvidiactl")
    tpu = bool(glob.glob("/dev/accel[0-9]*"))
    for dev in glob.glob("/sys/bus/pci/devices/*"):
        vendor = _read(dev + "/vendor")
        # Display class (0x03xx): GPUs; NVSwitches (bridge class) come with GPUs anyway.
        nvidia = nvidia or (vendor == "0x10de" and _read(dev + "/class").startswith("0x03"))
        tpu = tpu or (vendor == "0x1ae0" and _read(dev + "/device") in _TPU_IDS)
    return nvidia, tpu


def _listen(address: str) -> dict[str, object]:
    bare, error, addresses = address.strip("[]"), "", []
    try:
        infos = socket.getaddrinfo(bare, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        infos, error = [], f"does not resolve on this host ({exc})"
    for family, _, _, _, sockaddr in infos:
        addresses.append(sockaddr[0])
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    error = error or f"{sockaddr[0]} is not an address of this host"
    loopback = bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    return {"addresses": sorted(set(addresses)), "listen_error": error, "loopback_only": loopback}


def _python(path: str) -> dict[str, object]:
    found: dict[str, object] = {"python": None, "python_installed": True, "python_error": "",
                                "python_executable": None}
    real = os.path.realpath(path)
    if os.path.isabs(path) and real == os.path.realpath(sys.executable):  # this one (Debian's python3)
        return {**found, "python": list(sys.version_info[:3]), "python_executable": real}
    try:
        ran = subprocess.run([path, "-I", "-c", _ASK], capture_output=True, text=True, timeout=60,
                             check=False)
    except FileNotFoundError:
        return {**found, "python_installed": False, "python_error": "is not installed"}
    except (OSError, subprocess.SubprocessError) as exc:
        return {**found, "python_error": f"cannot be run ({exc})"}
    lines = ran.stdout.splitlines()[-2:]
    try:
        if ran.returncode != 0 or len(lines) != 2:
            raise ValueError
        return {**found, "python": [int(part) for part in lines[0].split()], "python_executable": lines[1]}
    except ValueError:
        return {**found, "python_error": f"exits {ran.returncode}: {ran.stderr.strip()[-200:]}"}


def _venv(path: str, python: dict[str, object]) -> dict[str, object]:
    """What the venv at ``path`` was made from, and whether that is no longer ``python`` (another
    binary or major.minor; a symlink, a shim or a patch release is no change). A venv made by Python
    3.10 or older records no executable, its version says enough; one without pyvenv.cfg, nothing:
    stale too. Where a cut-off run left ``<path>.previous``, the role puts that one back first: it is
    the one judged."""
    previous = path.rstrip("/") + ".previous"
    made: dict[str, object] = {"venv_executable": None, "venv_version": None,
                               "venv_previous": os.path.lexists(previous)}
    if made["venv_previous"]:
        path = previous
    try:
        with open(os.path.join(path, "pyvenv.cfg")) as f:
            for line in f:
                key, sep, value = line.partition("=")
                if sep and key.strip() in ("executable", "version"):
                    made[f"venv_{key.strip()}"] = value.strip()
    except OSError:
        pass
    version, executable, wanted = made["venv_version"], made["venv_executable"], python["python"]
    made["venv_stale"] = (
        os.path.lexists(os.path.join(path, "bin", "python")) and isinstance(wanted, list)
        and (version is None or str(version).split(".")[:2] != [str(part) for part in wanted[:2]]
             or (executable is not None and executable != python["python_executable"])))
    return made


def _name(lookup: Callable[[int], Sequence[str]], ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:  # no name for that id: the number, which no task's owner or group equals
        return str(ident)


def _paths(paths: list[str]) -> dict[str, list[str]]:
    """[type, owner, group, mode] of each path that exists (expanded as a task's path argument is)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        try:
            st = os.lstat(os.path.expanduser(os.path.expandvars(path)))
        except OSError:
            continue
        kind = ("directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                else "link" if stat.S_ISLNK(st.st_mode) else "other")
        found[path] = [kind, _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid),
                       format(stat.S_IMODE(st.st_mode), "04o")]
    return found


def main() -> None:
    module = AnsibleModule(
        argument_spec={"listen_address": {"type": "str", "required": True},
                       "python": {"type": "str", "required": True},
                       "venv": {"type": "path", "required": True},
                       "paths": {"type": "list", "elements": "str", "default": []}},
        supports_check_mode=True,
    )
    nvidia, tpu = _chips()
    python = _python(module.params["python"])
    module.exit_json(changed=False, nvidia=nvidia, tpu=tpu, **_listen(module.params["listen_address"]),
                     **python, **_venv(module.params["venv"], python), paths=_paths(module.params["paths"]))


if __name__ == "__main__":
    main()
