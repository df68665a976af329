"""``fleetctl --version``: both distributions' versions, with no heavy import on the way (its time is
a benchmark figure, benchmarks/bench_health.py, not a test's); ``health --source prometheus`` without
the fan-out client."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLEETCTL = Path(sys.executable).with_name("fleetctl")
# Imported by commands only; --version must not pay for them.
HEAVY = ("ansible", "rich", "msgspec", "asyncio", "yaml", "fleetctl.fanout", "fleetctl.report")


def _pyproject_version(path: Path) -> str:
    return str(tomllib.loads(path.read_text())["project"]["version"])


def test_version_prints_both_distributions() -> None:
    out = subprocess.run([str(FLEETCTL), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"fleetctl {_pyproject_version(ROOT / 'pyproject.toml')}",
        f"fleetctl-agent {_pyproject_version(ROOT / 'agents' / 'pyproject.toml')}",
    ]


def test_version_imports_nothing_heavy() -> None:
    code = ("import sys; sys.argv = ['fleetctl', '--version']\nfrom fleetctl.cli import main\n"
            "try:\n main()\nexcept SystemExit:\n pass\nprint('\\n'.join(sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    loaded = out.stderr.split()
    assert "fleet_agent" in loaded  # the agent's version came from the package, not a guess
    heavy = [m for m in loaded if m.startswith(HEAVY) or m in {h.rstrip(".") for h in HEAVY}]
    assert heavy == []


def test_health_through_prometheus_loads_no_fan_out_client(tmp_path: Path) -> None:
    # asyncio and the fan-out client are a fifth of the imports; Prometheus's path needs neither.
    argv = ["fleetctl", "health", "-i", str(ROOT / "inventory" / "lab" / "hosts.yml"), "--json",
            "--source", "prometheus", "--prometheus-url", "http://127.0.0.1:9"]  # refused: exit 2
    code = (f"import sys; sys.argv = {argv!r}\nfrom fleetctl.cli import main\n"
            "try:\n main()\nexcept SystemExit:\n pass\nprint('\\n'.join(sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLEETCTL_CACHE_DIR": str(tmp_path)})
    loaded = out.stderr.split()
    assert "fleetctl.promsource" in loaded and "fleetctl.report.build" in loaded  # it got that far
    assert "asyncio" not in loaded and "fleetctl.fanout" not in loaded
