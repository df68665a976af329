"""``fleetctl --version``: both distributions' versions, with no heavy import on the way (its time is
a benchmark figure, benchmarks/bench_health.py, not a test's)."""

from __future__ import annotations

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
