"""The roles' skipped writes (roles/*/tasks: a template or copy whose `when` names <role>_files_now).

Such a task is skipped when the host's file already holds [path, sha1, owner, group, mode], read by
one `find` beforehand. The `when` repeats the task's own dest, owner, group and mode: if the two
ever disagreed, a host whose file matched the `when` but not the task would keep its file as it is
for good. So each `when` must be exactly the one derived here from the task's arguments.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
_WHOLE = re.compile(r"\A\{\{\s*(.+?)\s*\}\}\Z")
_PART = re.compile(r"\{\{\s*(.+?)\s*\}\}")
_LOOSE = re.compile(r"\s(if|else|or|and|not|in|is)\s|[-+*/%]")
# What may appear beside a skip: anything else (remote_src, trim_blocks, attributes, ...) changes
# what the write puts there or enforces, and the skip condition would not account for it.
_ARGS = {"ansible.builtin.template": {"src", "dest", "owner", "group", "mode", "validate"},
         "ansible.builtin.copy": {"src", "content", "dest", "owner", "group", "mode", "validate"}}


def jinja(value: object) -> str:
    """A task argument as the Jinja expression that gives the same string."""
    text = str(value)
    whole = _WHOLE.match(text)
    if whole and "{{" not in whole.group(1):
        return whole.group(1)
    pieces: list[str] = []
    at = 0
    for m in _PART.finditer(text):
        if m.start() > at:
            pieces.append(repr(text[at:m.start()]))
        # `~` binds tighter than `if`, `or`, `and`, `+`: such a piece goes in parentheses.
        pieces.append(f"({m.group(1)})" if _LOOSE.search(m.group(1)) else m.group(1))
        at = m.end()
    if at < len(text):
        pieces.append(repr(text[at:]))
    return " ~ ".join(pieces)


def content_sha1(module: str, args: dict[str, Any]) -> str:
    if module == "ansible.builtin.template":
        return f"lookup('ansible.builtin.template', {jinja(args['src'])}) | hash('sha1')"
    if "content" in args:
        return f"({jinja(args['content'])}) | hash('sha1')"
    src = jinja(args["src"])
    if src == "fleet_agent_wheel":  # a binary built on the controller: its SHA-1 comes with it
        return "fleet_agent_wheel_sha1"
    return f"lookup('ansible.builtin.file', {src}, rstrip=false) | hash('sha1')"


def expected_when(role: str, module: str, args: dict[str, Any]) -> str:
    fields = [jinja(args["dest"]), content_sha1(module, args), jinja(args["owner"]), jinja(args["group"]),
              jinja(args["mode"])]
    return f"[{', '.join(fields)}] not in {role}_files_now"


def _flat(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip())
    return text.replace("[ ", "[").replace(" ]", "]")


def _tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for task in items or []:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out += _tasks(task.get(key, []))
    return out


def skipped_writes() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        role = path.parts[-3]
        for task in _tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            when = task.get("when")
            # A removal may read the same list (a file not there is not removed): not a write.
            removal = task.get("ansible.builtin.file", {}).get("state") == "absent"
            if "_files_now" in str(when) and not removal:
                found.append((role, f"{path.name}: {task['name']}", task))
    return found


WRITES = skipped_writes()


def test_the_batched_roles_skip_their_unchanged_writes() -> None:
    # Not vacuous: the writes a lab re-run makes on every host are among them.
    names = {name for _, name, _ in WRITES}
    assert {"kernel.yml: Write the kernel parameters", "hold-Debian.yml: Keep unattended-upgrades away from "
            "kernel and driver packages", "install.yml: Copy the agent's wheel",
            "config.yml: Write the agent's configuration", "service.yml: Install the systemd unit"} <= names


@pytest.mark.parametrize(("role", "name", "task"), WRITES, ids=[name for _, name, _ in WRITES])
def test_a_skip_condition_is_the_tasks_own_dest_content_owner_and_mode(role: str, name: str,
                                                                       task: dict[str, Any]) -> None:
    module = next(k for k in ("ansible.builtin.template", "ansible.builtin.copy") if k in task)
    args = task[module]
    assert set(args) <= _ARGS[module], f"{name}: {sorted(set(args) - _ARGS[module])} beside a skip"
    assert isinstance(task["when"], str), f"{name}: the skip condition must be one string"
    assert re.fullmatch(r"0[0-7]{3}", str(args["mode"])), f"{name}: mode: four octal digits, as find gives it"
    condition = _flat(task["when"])
    wanted = _flat(expected_when(role, module, args))
    assert condition == wanted or condition.endswith(" and " + wanted), f"{name}:\n{condition}\n!=\n{wanted}"


def test_the_derivation_itself() -> None:
    args = {"src": "{{ x_wheel }}", "dest": "{{ d }}/dist/{{ x_wheel | basename }}", "owner": "root",
            "group": "{{ g }}", "mode": "0644"}
    assert expected_when("x", "ansible.builtin.copy", {**args, "src": "a.yaml"}) == (
        "[d ~ '/dist/' ~ x_wheel | basename, lookup('ansible.builtin.file', 'a.yaml', rstrip=false) "
        "| hash('sha1'), 'root', g, '0644'] not in x_files_now")
    assert content_sha1("ansible.builtin.copy", {"content": "{{ t }}\n"}) == "(t ~ '\\n') | hash('sha1')"
    assert jinja("{{ d if c else e }}/f") == "(d if c else e) ~ '/f'"
    assert jinja("{{ a | basename }}/{{ b - 1 }}") == "a | basename ~ '/' ~ (b - 1)"


def test_a_gated_removal_is_of_a_path_the_find_reads_whatever_is_there() -> None:
    removals = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        role = path.parts[-3]
        for task in _tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            args = task.get("ansible.builtin.file", {})
            if args.get("state") == "absent" and "_files_now" in str(task.get("when")):
                removals.append(task["name"])
                gate = f"{args['path']!r} in {role}_files_now | map('first')"
                assert gate in _flat(task["when"]), task["name"]
                main = yaml.safe_load((ROLES / role / "tasks" / "main.yml").read_text(encoding="utf-8"))
                find = next(t["ansible.builtin.find"] for t in main if "ansible.builtin.find" in t)
                # A link or a directory at the path is found too, and so removed as the task would.
                assert find.get("file_type") == "any", f"{role}'s find: file_type any"
    assert "Remove the boot module list when no module is configured" in removals
