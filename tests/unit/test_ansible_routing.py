"""The cache of Ansible's plugin routing tables: the same answer as Ansible's parser, parsed once
per content, never trusted when damaged, and harmless when the cache cannot be written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.utils.collection_loader import _collection_finder, _collection_meta

from fleetctl import ansible_routing

RUNTIME = (b"plugin_routing:\n  modules:\n    old_name:\n      redirect: ansible.builtin.new_name\n"
           b"requires_ansible: '>=2.15'\n")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Ansible's own parser, counted, as the function the cache wraps."""
    seen: list[Any] = []

    def counting(data: bytes | str, content_id: Any) -> Any:
        seen.append(content_id)
        return _collection_meta._meta_yml_to_dict(data, content_id)

    monkeypatch.setattr(_collection_finder, "_meta_yml_to_dict", counting)
    return seen


def test_parsed_once_per_content_with_ansibles_answer(tmp_path: Path, calls: list[Any]) -> None:
    ansible_routing.install(tmp_path)
    parse = _collection_finder._meta_yml_to_dict
    expected = _collection_meta._meta_yml_to_dict(RUNTIME, None)
    assert expected["requires_ansible"] == ">=2.15"  # BaseLoader: every scalar a string
    assert parse(RUNTIME, ("ns.coll", "runtime.yml")) == expected
    assert parse(RUNTIME, ("ns.coll", "runtime.yml")) == expected
    assert calls == [("ns.coll", "runtime.yml")]  # the second answer came from the cache
    other = RUNTIME.replace(b"new_name", b"newer_name")
    assert parse(other.decode(), ("ns.coll", "runtime.yml"))["plugin_routing"]["modules"]["old_name"] == {
        "redirect": "ansible.builtin.newer_name"}
    assert len(calls) == 2  # other content: parsed, not served the first one's answer
    assert len(list(tmp_path.glob(f"{ansible_routing.PREFIX}*.json"))) == 2


def test_installing_twice_wraps_once(tmp_path: Path, calls: list[Any]) -> None:
    ansible_routing.install(tmp_path)
    first = _collection_finder._meta_yml_to_dict
    ansible_routing.install(tmp_path / "elsewhere")
    assert _collection_finder._meta_yml_to_dict is first


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]"])
def test_a_damaged_cache_file_is_parsed_again_and_replaced(tmp_path: Path, calls: list[Any],
                                                           damage: bytes) -> None:
    ansible_routing.install(tmp_path)
    parse = _collection_finder._meta_yml_to_dict
    parse(RUNTIME, "id")
    (cached,) = tmp_path.glob(f"{ansible_routing.PREFIX}*.json")
    cached.write_bytes(damage)
    assert parse(RUNTIME, "id")["requires_ansible"] == ">=2.15"
    assert len(calls) == 2
    assert cached.read_bytes() != damage


def test_an_unwritable_cache_path_costs_speed_not_answers(tmp_path: Path, calls: list[Any]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    ansible_routing.install(blocker / "cache")
    parse = _collection_finder._meta_yml_to_dict
    assert parse(RUNTIME, "id") == parse(RUNTIME, "id")
    assert len(calls) == 2
    assert not list(tmp_path.glob(f".{ansible_routing.PREFIX}*"))  # no temp file left behind
