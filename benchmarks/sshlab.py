"""The SSH test lab (tests/lab/lab.py) for the benchmarks that run on it; not a benchmark itself."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

LAB_DIR = Path(__file__).resolve().parents[1] / "tests" / "lab"


def load_lab() -> ModuleType:
    """tests/lab/lab.py as a module (tests/ is not a package)."""
    if str(LAB_DIR) not in sys.path:
        sys.path.insert(0, str(LAB_DIR))
    import lab

    return lab
