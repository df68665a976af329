"""The controller-side wheel cache of the fleet_agent role (roles/fleet_agent/files/build_wheel.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "fleet_agent" / "files" / "build_wheel.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_wheel", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bw = _module()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A minimal but real package, so pip really builds a fleet_agent wheel."""
    src = tmp_path / "agents"
    (src / "fleet_agent").mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "fleetctl-agent"\nversion = "0.0.1"\n'
        '[tool.setuptools]\npackages = ["fleet_agent"]\n')
    (src / "fleet_agent" / "__init__.py").write_text("VERSION = 1\n")
    return src


def build(source: Path, cache: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(source), str(cache)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_key_follows_content_and_ignores_build_outputs(source: Path) -> None:
    key = bw.source_key(source)
    (source / "build" / "lib").mkdir(parents=True)
    (source / "build" / "lib" / "x.py").write_text("stale\n")
    (source / "fleet_agent" / "__pycache__").mkdir()
    (source / "fleet_agent" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (source / "fleet_agent.egg-info").mkdir()
    assert bw.source_key(source) == key
    (source / "fleet_agent" / "__init__.py").write_text("VERSION = 2\n")
    assert bw.source_key(source) != key


def test_same_source_reuses_the_wheel_and_a_change_builds_anew(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = build(source, cache)
    assert first["built"] is True and Path(str(first["wheel"])).is_file()
    # The role compares this with the hosts' copy (its skip of an unchanged copy).
    assert first["sha1"] == hashlib.sha1(Path(str(first["wheel"])).read_bytes()).hexdigest()
    again = build(source, cache)
    assert again == {**first, "built": False}
    (source / "fleet_agent" / "__init__.py").write_text("VERSION = 2\n")
    changed = build(source, cache)
    assert changed["built"] is True and changed["key"] != first["key"]
    # No temporary build folders are left behind.
    assert sorted(p.name for p in cache.iterdir()) == sorted([str(first["key"]), str(changed["key"])])


def test_a_rebuild_of_the_same_source_gives_the_same_bytes(source: Path, tmp_path: Path) -> None:
    one = Path(str(build(source, tmp_path / "a")["wheel"])).read_bytes()
    shutil.rmtree(source / "build", ignore_errors=True)
    two = Path(str(build(source, tmp_path / "b")["wheel"])).read_bytes()
    assert one == two


def test_a_failed_build_leaves_no_cache_entry(source: Path, tmp_path: Path) -> None:
    (source / "pyproject.toml").write_text("[project\nbroken")
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(source), str(cache)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "pip wheel" in proc.stderr
    assert list(cache.iterdir()) == []


def test_a_source_without_pyproject_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path / "c")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "fleet_agent_source_dir" in proc.stderr


def test_prune_removes_only_old_cache_entries(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    (cache / "precious").mkdir(parents=True)
    olds = [cache / (f"{i:x}" * 64)[:64] for i in range(bw.KEEP + 2)]
    for old in olds:
        old.mkdir()
    build(source, cache)
    assert (cache / "precious").is_dir()  # not named like a key: never touched
    assert sum(p.is_dir() for p in olds) == bw.KEEP - 1  # the new entry plus the newest others


def test_a_broken_entry_for_the_key_is_replaced(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    entry = cache / bw.source_key(source)
    entry.mkdir(parents=True)
    (entry / "stray.txt").write_text("not a wheel\n")
    doc = build(source, cache)
    assert doc["built"] is True and Path(str(doc["wheel"])).parent == entry
    assert not (entry / "stray.txt").exists()


# The role's install-state probe (tasks/install.yml), run by a real venv's Python over installed
# distributions' metadata: it must call a venv out of date when an extra the host now needs is
# missing (a GPU host's venv from before it got nvml), so the role installs again.
def _probe_code() -> str:
    import yaml

    tasks = yaml.safe_load((REPO / "roles" / "fleet_agent" / "tasks" / "install.yml").read_text())
    code: str = next(t["vars"]["_fleet_agent_probe"] for t in tasks
                     if "_fleet_agent_probe" in t.get("vars", {}))
    return code


def _fake_dist(site: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("probe") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    python = root / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(python), "-c", purelib],
                               check=True, capture_output=True, text=True).stdout.strip())
    _fake_dist(site, "fleetctl-agent", "0.1.0", (
        "h11>=0.14", 'nvidia-ml-py>=12.535; extra == "nvml"', 'tpu-info>=0.2; extra == "tpu"',
        'grpcio>=1.60; extra == "tpu"'))
    _fake_dist(site, "h11", "0.16.0")
    return python, site


def _probe(python: Path, tmp_path: Path, version: str, extras: str) -> subprocess.CompletedProcess[str]:
    stamp = tmp_path / "stamp"
    stamp.write_text("abc123\n")
    return subprocess.run([str(python), "-c", _probe_code(), version, str(stamp), extras],
                          capture_output=True, text=True, check=False)


def test_probe_calls_a_venv_without_a_needed_extra_out_of_date(venv: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    python, site = venv
    plain = _probe(python, tmp_path, "0.1.0", "")
    assert plain.returncode == 0 and plain.stdout.strip() == "abc123", plain.stderr
    missing = _probe(python, tmp_path, "0.1.0", "nvml")
    assert missing.returncode != 0 and "nvidia-ml-py" in missing.stderr
    assert _probe(python, tmp_path, "0.1.0", "nvml,tpu").returncode != 0
    _fake_dist(site, "nvidia-ml-py", "11.0")  # older than the extra accepts
    too_old = _probe(python, tmp_path, "0.1.0", "nvml")
    assert too_old.returncode != 0 and "nvidia-ml-py 11.0 does not satisfy" in too_old.stderr
    shutil.rmtree(site / "nvidia_ml_py-11.0.dist-info")
    _fake_dist(site, "nvidia-ml-py", "13.615.71")
    assert _probe(python, tmp_path, "0.1.0", "nvml").returncode == 0
    # tpu still missing; another agent version is out of date whatever the extras.
    assert "tpu-info" in _probe(python, tmp_path, "0.1.0", "nvml,tpu").stderr
    assert "0.2.0 wanted" in _probe(python, tmp_path, "0.2.0", "").stderr
