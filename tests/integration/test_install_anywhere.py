"""fleetctl installed from its wheels runs its own playbooks and roles from any directory.

The two wheels are built from a clean copy of the tree (no stale build/ outputs), installed with
``--no-deps`` into a fresh venv under tmp, and that venv reuses this environment's dependencies
through a .pth line (Ansible itself is too large to install per test). Nothing of the checkout is on
that venv's path: fleetctl, fleet_agent, the playbooks and the roles come from the wheels. Then, from
an empty directory outside the repository, with a HOME of its own (no ansible.cfg anywhere):
``fleetctl provision -p site`` finds the packaged site.yml and Ansible resolves its roles, and a
playbook of the user's own runs the packaged fleet_agent role, which builds the agent's wheel from
the source shipped inside fleetctl's wheel.

Also the distributions' metadata: the agent's name, the version pin, the extras, and the
optional Kubernetes client's one-line message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".venv", ".cache")


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    src = tmp_path_factory.mktemp("src")
    for name in ("fleetctl", "playbooks", "roles", "agents"):
        shutil.copytree(REPO / name, src / name, ignore=_JUNK)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheels")
    proc = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                 str(src), str(src / "agents")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"fleetctl", "fleetctl_agent"}, found
    return found


@pytest.fixture(scope="module")
def fresh(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding the two wheels; its dependencies are this environment's."""
    root = tmp_path_factory.mktemp("fresh") / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    assert proc.returncode == 0, proc.stderr
    python = root / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                 "--no-index", *map(str, wheels.values())])
    assert proc.returncode == 0, proc.stderr[-2000:]
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # A plain path line: this environment's .pth files (the editable checkout's) are not read.
    (Path(purelib.stdout.strip()) / "reuse-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for tool in ("ansible", "ansible-playbook", "ansible-config", "ansible-inventory"):
        text = (VENV_BIN / tool).read_text().split("\n", 1)[1]
        (root / "bin" / tool).write_text(f"#!{python}\n{text}")
        (root / "bin" / tool).chmod(0o755)
    return root


@pytest.fixture
def elsewhere(fresh: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty working directory outside the repository, a HOME with no ansible.cfg, and a PATH
    that holds the fresh venv and the system, nothing of this checkout."""
    work = tmp_path / "my-inventory"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (work / "hosts.ini").write_text(
        f"[gpu_nodes]\nlocalhost ansible_connection=local ansible_python_interpreter={fresh}/bin/python\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_", "VIRTUAL_ENV"))}
    # The state database goes to the default place under this HOME.
    env.update(HOME=str(home), PATH=f"{fresh}/bin:/usr/local/bin:/usr/bin:/bin", NO_COLOR="1")
    env.pop("XDG_STATE_HOME", None)
    return work, env


def test_installed_package_is_used_not_the_checkout(fresh: Path) -> None:
    code = ("import fleetctl, fleet_agent; from fleetctl import assets; "
            "print(fleetctl.__file__); print(fleet_agent.__file__); print(assets.roles_dir())")
    out = _run([str(fresh / "bin" / "python"), "-c", code], cwd="/")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert all(line.startswith(str(fresh)) for line in lines), lines
    roles = Path(lines[2])
    assert sorted(p.name for p in roles.iterdir()) == sorted(
        p.name for p in (REPO / "roles").iterdir() if p.is_dir())
    assert not list(roles.glob("*/molecule")), "Molecule scenarios are not shipped"


def test_provision_finds_the_packaged_playbook_and_its_roles(elsewhere: tuple[Path, dict[str, str]],
                                                             fresh: Path) -> None:
    work, env = elsewhere
    # Validation lists site.yml's tags with ansible-playbook: that parses every play and needs every
    # role it names ("the role 'base' was not found" before). An unknown tag then stops the run.
    out = _run([str(fresh / "bin" / "fleetctl"), "provision", "-i", "hosts.ini", "-p", "site",
                "--tags", "no_such_tag"], cwd=work, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "unknown tag(s) no_such_tag in site.yml" in text, text
    for tag in ("base", "nvidia_driver", "fleet_agent", "verify"):
        assert tag in text.split("known:", 1)[1], text


def test_a_playbook_of_ones_own_runs_a_packaged_role(elsewhere: tuple[Path, dict[str, str]],
                                                     fresh: Path, tmp_path: Path) -> None:
    work, env = elsewhere
    result = tmp_path / "result.json"
    cache = tmp_path / "wheel-cache"
    (work / "agent-wheel.yml").write_text(f"""---
- name: Build the agent's wheel with fleetctl's fleet_agent role
  hosts: all
  gather_facts: false
  vars:
    fleet_agent_wheel_cache_dir: {cache}
  tasks:
    - name: Build it on the controller
      ansible.builtin.include_role:
        name: fleet_agent
        tasks_from: build
    - name: Record what the role did
      ansible.builtin.copy:
        content: "{{{{ {{'wheel': fleet_agent_wheel, 'role_path': _role_path}} | to_json }}}}"
        dest: {result}
        mode: "0644"
      vars:
        _role_path: "{{{{ lookup('ansible.builtin.config', 'DEFAULT_ROLES_PATH') }}}}"
""")
    out = _run([str(fresh / "bin" / "fleetctl"), "provision", "-i", "hosts.ini", "-p", "agent-wheel.yml"],
               cwd=work, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    done = json.loads(result.read_text())
    wheel = Path(done["wheel"])
    assert wheel.is_file() and wheel.name == "fleetctl_agent-0.1.0-py3-none-any.whl", done
    assert cache in wheel.parents
    # fleetctl's roles last, after Ansible's default path (nothing of the checkout).
    roles_path = done["role_path"]
    assert roles_path[-1].startswith(str(fresh)) and roles_path[-1].endswith("fleetctl/_assets/roles")
    assert not any(str(REPO) in p for p in roles_path), roles_path
    with zipfile.ZipFile(wheel) as zf:
        assert "fleet_agent/cli.py" in zf.namelist()


def test_the_roles_path_keeps_the_users_own_first_in_the_users_playbooks(fresh: Path, tmp_path: Path) -> None:
    (tmp_path / "ansible.cfg").write_text("[defaults]\nroles_path = my-roles:/srv/roles\n")
    code = ("from pathlib import Path; from fleetctl import assets; import sys; "
            "mine = Path(sys.argv[1]) / 'site.yml'; site = assets.playbooks_dir() / 'site.yml'; "
            "print(assets.ansible_roles_path({}, cwd=Path(sys.argv[1]), playbook=mine)); "
            "print(assets.ansible_roles_path({'ANSIBLE_ROLES_PATH': '/a:/b'}, cwd=Path(sys.argv[1]))); "
            "print(assets.ansible_roles_path({}, cwd=Path(sys.argv[1]), playbook=site))")
    out = _run([str(fresh / "bin" / "python"), "-c", code, str(tmp_path)], cwd="/")
    assert out.returncode == 0, out.stderr
    from_cfg, from_env, for_site = out.stdout.split()
    ours = from_cfg.split(":")[-1]
    assert ours.startswith(str(fresh))
    assert from_cfg == f"{tmp_path}/my-roles:/srv/roles:{ours}"
    assert from_env == f"/a:/b:{ours}"
    assert for_site == f"{ours}:{tmp_path}/my-roles:/srv/roles"  # fleetctl's own playbook: its roles first


def test_a_users_role_named_like_fleetctls_wins_only_in_the_users_playbook(
    elsewhere: tuple[Path, dict[str, str]], fresh: Path
) -> None:
    work, env = elsewhere
    tasks = work / "roles" / "base" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text("- name: The user's own base role\n  ansible.builtin.debug:\n"
                                    "    msg: my own base\n  tags: [my_own_base]\n")
    (work / "ansible.cfg").write_text("[defaults]\nroles_path = roles\n")
    (work / "mine.yml").write_text("- name: Mine\n  hosts: all\n  gather_facts: false\n  roles: [base]\n")
    fleetctl = str(fresh / "bin" / "fleetctl")
    # fleetctl's site.yml keeps fleetctl's base role: the user's tag is not one of its tags.
    site = _run([fleetctl, "provision", "-i", "hosts.ini", "-p", "site", "--tags", "my_own_base"],
                cwd=work, env=env)
    assert site.returncode == 2 and "unknown tag(s) my_own_base in site.yml" in site.stdout + site.stderr, (
        site.stdout + site.stderr)
    # the user's own playbook gets the user's base role (Ansible's rule: the user's roles path first).
    mine = _run([fleetctl, "provision", "-i", "hosts.ini", "-p", "mine.yml", "--tags", "my_own_base"],
                cwd=work, env=env)
    assert mine.returncode == 0, mine.stdout + mine.stderr


# --- the distributions' metadata ---------------------------------------------------------------


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name).decode().splitlines()


def test_distribution_names_versions_and_extras(wheels: dict[str, Path]) -> None:
    agent = _metadata(wheels["fleetctl_agent"])
    ctl = _metadata(wheels["fleetctl"])
    version = tomllib.loads((REPO / "agents" / "pyproject.toml").read_text())["project"]["version"]
    assert "Name: fleetctl-agent" in agent and f"Version: {version}" in agent
    # Released together: fleetctl needs exactly its own version of the agent.
    assert f"Version: {version}" in ctl
    assert f"Requires-Dist: fleetctl-agent=={version}" in ctl
    requires = [line for line in ctl if line.startswith("Requires-Dist:")]
    # Optional parts are extras, not needed by every user.
    assert 'Requires-Dist: kubernetes>=29; extra == "kubernetes"' in requires
    assert 'Requires-Dist: paramiko>=3.4; extra == "ssh-paramiko"' in requires
    assert not [r for r in requires if r.split(":")[1].split()[0].startswith(("kubernetes", "paramiko"))
                and "extra ==" not in r]


def test_versions_agree_everywhere() -> None:
    """One release number: both pyprojects, both packages' __version__ (--version prints them)."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert tomllib.loads((REPO / "agents" / "pyproject.toml").read_text())["project"]["version"] == version
    for init in (REPO / "fleetctl" / "__init__.py", REPO / "agents" / "fleet_agent" / "__init__.py"):
        assert f'__version__ = "{version}"' in init.read_text(), init


def test_every_fleetctl_package_is_in_the_wheel_list() -> None:
    """pyproject.toml lists the packages (package-dir maps the assets in): a new subpackage must be
    added there, or an installed fleetctl would lack it."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fleetctl").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_kubernetes_scheduler_without_the_client_names_the_extra(fresh: Path) -> None:
    # The fresh venv shadows the client with a module that fails to import, as if it were absent.
    code = ("import sys; sys.modules['kubernetes'] = None\n"
            "from fleetctl.schedulers.base import SchedulerError\n"
            "from fleetctl.schedulers.kubernetes import KubernetesScheduler\n"
            "try:\n    KubernetesScheduler.from_kubeconfig(None, None)\n"
            "except SchedulerError as exc:\n    print(exc)\n")
    out = _run([str(fresh / "bin" / "python"), "-c", code], cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("pip install 'fleetctl[kubernetes]'"), out.stdout
    assert len(out.stdout.strip().splitlines()) == 1
