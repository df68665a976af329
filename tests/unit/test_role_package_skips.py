"""The roles' skipped package installs (roles/*/tasks: an apt task whose `when` reads a dpkg-query).

dpkg is asked about the wanted packages first, and apt runs only when one of them is not installed.
The `when` is evaluated here with Ansible's own templating against dpkg-query answers: a package
not installed, removed with its configuration kept, unknown to dpkg or asked for with a version pin
must each send the names to apt, and the names asked of dpkg must be the names given to apt.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLES = Path(__file__).resolve().parents[2] / "roles"
_NAMES = re.compile(r"\A\{\{\s*([a-z_]+)\s*\}\}\Z")


def _package_skips() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, the dpkg-query task, the apt task) for every apt task skipped on dpkg's word."""
    found = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        tasks = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        queries = {t["register"]: t for t in tasks if "ansible.builtin.command" in t and "register" in t}
        for task in tasks:
            when = str(task.get("when", ""))
            if "ansible.builtin.apt" in task and (m := re.search(r"([a-z_]+)\.stdout_lines", when)):
                where = f"{path.parent.parent.name}/{path.name}: {task['name']}"
                found.append((where, queries[m.group(1)], task))
    return found


SKIPS = _package_skips()


def _skips_apt(query: dict[str, Any], apt: dict[str, Any], wanted: list[str], answer: list[str]) -> bool:
    names = _NAMES.match(apt["ansible.builtin.apt"]["name"])
    assert names, "apt's name: one variable, the one the query's argv adds"
    variables = {names.group(1): wanted, query["register"]: {"stdout_lines": answer},
                 "ansible_facts": {"os_family": "Debian"}}
    templar = Templar(loader=DataLoader(), variables=variables)
    return not templar.evaluate_conditional(trust_as_template(apt["when"]))


def test_the_re_run_s_apt_tasks_are_among_them() -> None:
    files = {where.split(":")[0] for where, _, _ in SKIPS}
    assert files >= {"base/packages-Debian.yml", "fleet_agent/main.yml"}


@pytest.mark.parametrize(("where", "query", "apt"), SKIPS, ids=[w for w, _, _ in SKIPS])
def test_apt_is_skipped_only_when_dpkg_lists_every_name_installed(where: str, query: dict[str, Any],
                                                                 apt: dict[str, Any]) -> None:
    wanted = ["jq", "curl", "python3-venv"]
    assert _skips_apt(query, apt, wanted, ["jq installed", "curl installed", "python3-venv installed"]), where
    # dpkg-query lists every name it knows, in its own order, and nothing of a name it never saw.
    assert _skips_apt(query, apt, wanted, ["python3-venv installed", "curl installed", "jq installed"]), where
    for answer in (["jq installed", "curl not-installed", "python3-venv installed"],
                   ["jq installed", "curl config-files", "python3-venv installed"],
                   ["jq installed", "curl half-configured", "python3-venv installed"],
                   ["jq installed", "python3-venv installed"]):
        assert not _skips_apt(query, apt, wanted, answer), f"{where}: {answer}"
    # A pin or an architecture is apt's to judge: dpkg-query lists the package under its bare name.
    assert not _skips_apt(query, apt, ["jq", "curl=7.88.1-10"], ["jq installed", "curl installed"]), where
    assert not _skips_apt(query, apt, ["jq", "curl:arm64"], ["jq installed", "curl installed"]), where
    # Installed for another architecture only: ${binary:Package} says so, and apt installs the native one.
    assert "${binary:Package}" in str(query["ansible.builtin.command"]["argv"]), where
    assert not _skips_apt(query, apt, ["jq"], ["jq:arm64 installed"]), where
    assert _skips_apt(query, apt, ["jq:arm64"], ["jq:arm64 installed"]), where


@pytest.mark.parametrize(("where", "query", "apt"), SKIPS, ids=[w for w, _, _ in SKIPS])
def test_dpkg_is_asked_about_apt_s_own_names_as_arguments(where: str, query: dict[str, Any],
                                                          apt: dict[str, Any]) -> None:
    names = _NAMES.match(apt["ansible.builtin.apt"]["name"])
    assert names, where
    variables = {names.group(1): ["jq", "a b; touch /tmp/x"]}
    argv = Templar(loader=DataLoader(), variables=variables).template(
        trust_as_template(query["ansible.builtin.command"]["argv"]))
    assert argv[:2] == ["dpkg-query", "--show"], where
    assert argv[-2:] == ["jq", "a b; touch /tmp/x"], f"{where}: the names, each one argument"
    assert query.get("check_mode") is False, f"{where}: a dry run must read dpkg too"
    assert query.get("changed_when") is False, where
