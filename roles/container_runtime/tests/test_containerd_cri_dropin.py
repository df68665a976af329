"""Unit tests of the containerd_cri_dropin module's merge, TOML writer and imports edit."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

MODULE_PATH = Path(__file__).resolve().parents[1] / "library" / "containerd_cri_dropin.py"


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("containerd_cri_dropin", MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dropin = load_module()


def test_deep_merge_keeps_existing_tables_and_replaces_scalars() -> None:
    base: dict[str, Any] = {
        "cni": {"bin_dir": "/usr/lib/cni"},
        "containerd": {"runtimes": {"runc": {"x": 1}}},
    }
    extra = {
        "containerd": {"runtimes": {"nvidia": {"runtime_type": "io.containerd.runc.v2"}}},
        "cni": {"bin_dir": "/opt"},
    }
    merged = dropin.deep_merge(base, extra)
    assert merged["containerd"]["runtimes"].keys() == {"runc", "nvidia"}
    assert merged["cni"]["bin_dir"] == "/opt"
    assert base["cni"]["bin_dir"] == "/usr/lib/cni"  # inputs are not modified


def test_dumps_round_trips_through_tomllib() -> None:
    document = {
        "version": 2,
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": 'reg.example/pause:3.9 "quoted" \\ back',
                "enable_cdi": True,
                "max_concurrent_downloads": 3,
                "cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"],
                "containerd": {
                    "runtimes": {"nvidia": {"options": {"BinaryName": "/usr/bin/x"}}, "empty": {}}
                },
                "registry": {"mirrors": [{"endpoint": "https://m.example"}, {"endpoint": "https://n.example"}]},
            }
        },
    }
    assert tomllib.loads(dropin.dumps(document)) == document


def test_dumps_quotes_keys_that_are_not_bare() -> None:
    text = dropin.dumps({"plugins": {"io.containerd.grpc.v1.cri": {"a b": 1}}})
    assert '[plugins."io.containerd.grpc.v1.cri"]' in text
    assert '"a b" = 1' in text


@pytest.mark.parametrize(
    ("text", "expected_imports"),
    [
        ("version = 2\noom_score = -500\n", ["/d.toml"]),
        ('version = 2\nimports = ["/a.toml"]\n', ["/a.toml", "/d.toml"]),
        (
            'version = 2\nimports = [\n  "/a.toml",\n  "/b.toml",\n]\n[plugins]\n',
            ["/a.toml", "/b.toml", "/d.toml"],
        ),
        # A key called imports inside a table is not the top-level list.
        ('version = 2\n[plugins.x]\nimports = ["/z.toml"]\n', ["/d.toml"]),
        ('imports = ["/d.toml"]\nversion = 2\n', ["/d.toml"]),
        ("[plugins]\n", ["/d.toml"]),
    ],
)
def test_with_import_adds_the_dropin_once(text: str, expected_imports: list[str]) -> None:
    updated = dropin.with_import(text, tomllib.loads(text), "/d.toml")
    parsed = tomllib.loads(updated)
    assert parsed["imports"] == expected_imports
    # Everything but the imports line is as it was.
    assert {k: v for k, v in parsed.items() if k != "imports"} == {
        k: v for k, v in tomllib.loads(text).items() if k != "imports"
    }


def test_with_import_leaves_text_alone_when_present() -> None:
    text = 'version = 2\nimports = ["/d.toml"]  # ours\n'
    assert dropin.with_import(text, tomllib.loads(text), "/d.toml") == text
