#!/usr/bin/python
"""Merge settings into containerd's CRI plugin table through a drop-in file."""

# Ansible modules put their documentation strings before the imports.
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
---
module: containerd_cri_dropin
short_description: Merge settings into containerd's CRI plugin configuration without rewriting config.toml
description:
  - containerd (1.x) replaces a whole plugin table when an imported file defines it, so a drop-in
    holding only new keys would silently drop the CRI settings of config.toml. This module reads
    config.toml, deep-merges O(settings) into its CRI plugin table, writes the complete table to
    O(dropin), and adds O(dropin) to config.toml's top-level C(imports) list (the only edit made
    to config.toml; every other line stays as it was).
  - The drop-in is a snapshot of config.toml's CRI table: re-run after editing that table.
  - Needs Python 3.11 (tomllib) or the tomli package on the managed host.
options:
  config:
    description: containerd's main configuration file.
    type: path
    default: /etc/containerd/config.toml
  dropin:
    description: Drop-in file to write.
    type: path
    required: true
  settings:
    description: Settings deep-merged into the CRI plugin table (for example C(containerd.runtimes.nvidia)).
    type: dict
    required: true
  defaults_toml:
    description:
      - Output of C(containerd config default). Its CRI table is the base the rest is merged onto,
        so runtimes containerd defines by default (runc) survive the table replacement.
    type: str
    default: ""
  inherit_runc_options:
    description:
      - Copy C(SystemdCgroup) from the runc runtime's options into every new runtime that does not set it.
    type: bool
    default: true
author: fleetctl maintainers
"""

EXAMPLES = r"""
- name: Add the NVIDIA runtime to containerd
  containerd_cri_dropin:
    dropin: /etc/containerd/conf.d/99-nvidia.toml
    settings:
      containerd:
        runtimes:
          nvidia:
            runtime_type: io.containerd.runc.v2
            options:
              BinaryName: /usr/bin/nvidia-container-runtime
"""

RETURN = r"""
plugin:
  description: Name of the CRI plugin table merged into.
  type: str
  returned: always
config_updated:
  description: Whether config.toml's imports line was changed.
  type: bool
  returned: always
"""

import copy
import json
import os
import re
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

try:
    import tomllib as toml_reader
except ImportError:  # Python < 3.11
    try:
        import tomli as toml_reader  # type: ignore[no-redef]
    except ImportError:
        toml_reader = None  # type: ignore[assignment]

# containerd 1.x (config version 2) and 2.x (version 3) keep runtimes under different plugins.
CRI_PLUGIN_BY_VERSION = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
IMPORTS_LINE = re.compile(r"(?ms)^imports\s*=\s*\[.*?\]")
VERSION_LINE = re.compile(r"(?m)^version\s*=.*$")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Return base with extra merged in; nested tables merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def is_table_array(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(item, dict) for item in value)


def dump_table(table: dict[str, Any], path: list[str], out: list[str]) -> None:
    """Append the TOML text of table (at dotted path) to out: its scalars, then its sub-tables."""
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not is_table_array(v)}
    if path:
        out.append("")
        out.append("[" + ".".join(toml_key(part) for part in path) + "]")
    for key, value in scalars.items():
        out.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            dump_table(value, [*path, key], out)
        elif is_table_array(value):
            for item in value:
                out.append("")
                out.append("[[" + ".".join(toml_key(part) for part in [*path, key]) + "]]")
                for item_key, item_value in item.items():
                    out.append(f"{toml_key(item_key)} = {toml_value(item_value)}")


def dumps(document: dict[str, Any]) -> str:
    out: list[str] = []
    dump_table(document, [], out)
    return "\n".join(out).lstrip("\n") + "\n"


def with_import(text: str, parsed: dict[str, Any], dropin: str) -> str:
    """Return config.toml's text with dropin in its top-level imports (text otherwise unchanged)."""
    imports = list(parsed.get("imports", []))
    if dropin in imports:
        return text
    line = "imports = " + toml_value([*imports, dropin])
    # Top-level keys come before the first table header; an `imports` key inside a table is not ours.
    first_table = re.search(r"(?m)^\s*\[", text)
    top_level_end = first_table.start() if first_table else len(text)
    match = IMPORTS_LINE.search(text, 0, top_level_end)
    if match:
        return text[: match.start()] + line + text[match.end():]
    version = VERSION_LINE.search(text, 0, top_level_end)
    if version:
        return text[: version.end()] + "\n" + line + text[version.end():]
    return line + "\n" + text


def atomic_write(module: AnsibleModule, path: str, content: str, mode: int) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ansible-", suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(tmp, mode)
    module.atomic_move(tmp, path)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "default": "/etc/containerd/config.toml"},
            "dropin": {"type": "path", "required": True},
            "settings": {"type": "dict", "required": True},
            "defaults_toml": {"type": "str", "default": ""},
            "inherit_runc_options": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    if toml_reader is None:
        module.fail_json(msg="containerd_cri_dropin needs Python 3.11+ or the tomli package on the host")
    config_path: str = module.params["config"]
    dropin_path: str = module.params["dropin"]

    config_text = read_text(config_path)
    if config_text is None:
        config_text = "version = 2\n"
    try:
        config = toml_reader.loads(config_text)
    except toml_reader.TOMLDecodeError as exc:
        module.fail_json(msg=f"{config_path}: not valid TOML ({exc}); nothing was changed")

    version = config.get("version", 1)
    if version not in CRI_PLUGIN_BY_VERSION:
        module.fail_json(
            msg=f"{config_path}: config version {version!r} is not supported (2 or 3); nothing was changed"
        )
    plugin = CRI_PLUGIN_BY_VERSION[version]

    defaults: dict[str, Any] = {}
    if module.params["defaults_toml"]:
        try:
            defaults = toml_reader.loads(module.params["defaults_toml"])
        except toml_reader.TOMLDecodeError as exc:
            module.fail_json(msg=f"defaults_toml: not valid TOML ({exc}); nothing was changed")
    current_cri = deep_merge(
        defaults.get("plugins", {}).get(plugin, {}), config.get("plugins", {}).get(plugin, {})
    )
    settings: dict[str, Any] = copy.deepcopy(module.params["settings"])
    if module.params["inherit_runc_options"]:
        runtimes = current_cri.get("containerd", {}).get("runtimes", {})
        runc_options = runtimes.get("runc", {}).get("options", {})
        for runtime in settings.get("containerd", {}).get("runtimes", {}).values():
            if "SystemdCgroup" in runc_options and isinstance(runtime, dict):
                runtime.setdefault("options", {}).setdefault("SystemdCgroup", runc_options["SystemdCgroup"])

    dropin_doc = {"version": version, "plugins": {plugin: deep_merge(current_cri, settings)}}
    dropin_text = (
        "# Managed by Ansible (container_runtime). containerd replaces a plugin table from an import\n"
        f"# wholesale, so this holds {os.path.basename(config_path)}'s CRI table merged with the runtimes.\n"
        + dumps(dropin_doc)
    )
    new_config_text = with_import(config_text, config, dropin_path)

    # What is written must read back as what was meant.
    if toml_reader.loads(dropin_text) != dropin_doc:
        module.fail_json(msg=f"{dropin_path}: the generated TOML does not round-trip; nothing was changed")
    if dropin_path not in toml_reader.loads(new_config_text).get("imports", []):
        module.fail_json(msg=f"{config_path}: could not add {dropin_path} to imports; nothing was changed")

    dropin_changed = read_text(dropin_path) != dropin_text
    config_changed = read_text(config_path) != new_config_text
    diff = {"before": read_text(dropin_path) or "", "after": dropin_text, "after_header": dropin_path}
    if not module.check_mode:
        if dropin_changed:
            os.makedirs(os.path.dirname(dropin_path), mode=0o755, exist_ok=True)
            atomic_write(module, dropin_path, dropin_text, 0o644)
        if config_changed:
            os.makedirs(os.path.dirname(config_path), mode=0o755, exist_ok=True)
            atomic_write(module, config_path, new_config_text, 0o644)
    module.exit_json(
        changed=dropin_changed or config_changed,
        plugin=plugin,
        config_updated=config_changed,
        diff=diff,
    )


if __name__ == "__main__":
    main()
