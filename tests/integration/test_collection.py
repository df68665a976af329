"""The roles as the Ansible collection fleetctl.fleet (galaxy.yml), used from outside the repository.

``ansible-galaxy collection build`` over the repository, ``collection install`` of the artifact into
a temporary path (offline: --no-deps, community.general comes with the ansible package), then a
playbook in an empty directory calls the roles by FQCN: nvidia_driver's argument_specs validate a
good value and refuse a wrong one, and fleet_agent builds the agent's wheel from the source the
collection carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCAL = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    proc = _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = out.glob("fleetctl-fleet-*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def collections(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("installed")
    home = tmp_path_factory.mktemp("galaxy-home")
    # --force and a bare HOME/cwd: a copy installed elsewhere (ansible-lint puts the project's own
    # collection in ~/.ansible/collections and ./.ansible) must not make this one "already installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_COLLECTIONS_PATH=str(path))
    proc = _run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "--no-deps",
                 "-p", str(path), str(artifact)], cwd=home, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


def test_the_collection_holds_the_roles_and_no_junk(artifact: Path) -> None:
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
    roles = {n.split("/")[1] for n in names if n.startswith("roles/") and n.count("/") >= 2}
    assert roles == {p.name for p in (REPO / "roles").iterdir() if p.is_dir()}
    assert "agents/fleet_agent/cli.py" in names and "meta/runtime.yml" in names
    for name in names:
        assert not name.startswith(("fleetctl/", "tests/", "playbooks/", "inventory/", ".")), name
        assert "/molecule/" not in name and "__pycache__" not in name and "/build/" not in name, name
    manifest = json.loads(tar_read(artifact, "MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "fleetctl"
    assert manifest["collection_info"]["name"] == "fleet"


def tar_read(artifact: Path, member: str) -> str:
    with tarfile.open(artifact) as tar:
        f = tar.extractfile(member)
        assert f is not None
        return f.read().decode()


def _play(work: Path, result: Path, cache: Path, source: str) -> Path:
    playbook = work / "site.yml"
    playbook.write_text(f"""---
- name: A GPU play of one's own
  hosts: all
  gather_facts: false
  roles:
    # Only its argument validation runs (tagged always); --tags keeps the driver tasks away.
    - role: fleetctl.fleet.nvidia_driver
      vars:
        nvidia_driver_source: {source}
      tags: [driver]

- name: The agent's wheel with the collection's fleet_agent role
  hosts: all
  gather_facts: false
  tasks:
    - name: Build it on the controller
      ansible.builtin.include_role:
        name: fleetctl.fleet.fleet_agent
        tasks_from: build
        apply:
          tags: [always]
      vars:
        fleet_agent_wheel_cache_dir: {cache}
      tags: [always]
    - name: Record the wheel
      ansible.builtin.copy:
        content: "{{{{ {{'wheel': fleet_agent_wheel}} | to_json }}}}"
        dest: {result}
        mode: "0644"
      tags: [always]
""")
    return playbook


def _ansible_env(tmp_path: Path, collections: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1",
               PATH=f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    return env


def test_a_playbook_elsewhere_calls_the_roles_by_fqcn(collections: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "hosts.ini").write_text(LOCAL)
    result, cache = tmp_path / "result.json", tmp_path / "cache"
    playbook = _play(work, result, cache, "distro")
    out = _run([str(BIN / "ansible-playbook"), "-i", "hosts.ini", "--tags", "nothing_else", str(playbook)],
               cwd=work, env=_ansible_env(tmp_path, collections))
    assert out.returncode == 0, out.stdout + out.stderr
    validated = "fleetctl.fleet.nvidia_driver : Validating arguments against arg spec 'main'"
    assert validated in out.stdout, out.stdout
    wheel = Path(json.loads(result.read_text())["wheel"])
    assert wheel.is_file() and wheel.name.startswith("fleetctl_agent-") and cache in wheel.parents


def test_the_argument_specs_refuse_a_wrong_value(collections: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "hosts.ini").write_text(LOCAL)
    playbook = _play(work, tmp_path / "result.json", tmp_path / "cache", "cuda_repo")
    out = _run([str(BIN / "ansible-playbook"), "-i", "hosts.ini", "--tags", "nothing_else", str(playbook)],
               cwd=work, env=_ansible_env(tmp_path, collections))
    assert out.returncode != 0
    assert "nvidia_driver_source" in out.stdout and "cuda_repo" in out.stdout, out.stdout
    assert not (tmp_path / "result.json").exists()


def test_the_collections_roles_find_their_own_modules(collections: Path, tmp_path: Path) -> None:
    # Ansible adds a role's library/ to the module path only outside a collection: the collection
    # carries the roles' modules in plugins/modules/. Both roles that call one load whole (an action
    # that resolves to nothing fails the syntax check), and the agent's host detection runs through
    # the collection's module on this machine.
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "hosts.ini").write_text(LOCAL)
    env = _ansible_env(tmp_path, collections)
    load = work / "load.yml"
    load.write_text("""---
- name: The roles that call modules of their own
  hosts: all
  gather_facts: false
  roles:
    - role: fleetctl.fleet.container_runtime
    - role: fleetctl.fleet.fleet_agent
""")
    out = _run([str(BIN / "ansible-playbook"), "-i", "hosts.ini", str(load), "--syntax-check"],
               cwd=work, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    result = tmp_path / "detected.json"
    detect = work / "detect.yml"
    detect.write_text(f"""---
- name: The collection's fleet_agent detection
  hosts: all
  gather_facts: false
  tasks:
    - name: Detect
      ansible.builtin.include_role:
        name: fleetctl.fleet.fleet_agent
        tasks_from: detect
      vars:
        fleet_agent_python: {sys.executable}
    - name: Record it
      ansible.builtin.copy:
        content: "{{{{ fleet_agent_detect | to_json }}}}"
        dest: {result}
        mode: "0644"
""")
    out = _run([str(BIN / "ansible-playbook"), "-i", "hosts.ini", str(detect)], cwd=work, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    detected = json.loads(result.read_text())
    assert detected["python"] == list(sys.version_info[:3]), detected
    assert detected["python_executable"] == os.path.realpath(sys.executable), detected
