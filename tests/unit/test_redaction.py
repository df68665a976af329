"""fleetctl.provision's secret redaction: what run records and output show of --extra-vars and the vault.

Written against the mutants that survived the mutation run (docs/mutation.md): each secret-looking key
word, nesting in lists, the order literal/@file parts are shown in, and the longest-first masking.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl import provision
from fleetctl.provision import REDACTED, ExtraVars, Plan, ProvisionOptions, parse_extra_vars


def _plan(extra: ExtraVars, **options: object) -> Plan:
    opts = ProvisionOptions(inventory=["inv.yml"], **options)  # type: ignore[arg-type]
    return Plan(options=opts, playbook=Path("site.yml"), hosts=["h1"], batches=[["h1"]], extra_vars=extra,
                cmdline=[], envvars={}, passwords={}, cwd=Path("."))


@pytest.mark.parametrize("key", ["db_pass", "api_SECRET", "token", "ssh_key", "aws_credential",
                                 "vault_id", "Auth_header"])
def test_every_secret_looking_key_word_is_masked_in_any_case(key: str) -> None:
    assert provision._redact_tree({key: "s3cr3t", "region": "eu"}) == {key: REDACTED, "region": "eu"}


def test_secrets_are_masked_at_any_depth_through_lists_and_dicts() -> None:
    tree = {"users": [{"name": "a", "password": "p1"}, {"name": "b", "token": "t2"}], "n": [1, 2]}
    assert provision._redact_tree(tree) == {
        "users": [{"name": "a", "password": REDACTED}, {"name": "b", "token": REDACTED}], "n": [1, 2]}
    assert provision._redact_tree("plain") == "plain"


def test_secret_leaves_are_every_non_empty_scalar_under_a_secret_key() -> None:
    tree = {"db": {"password": "p1", "users": ["u"]},
            "vault": {"nested": ["v1", {"deeper": "v2"}], "empty": "", "none": None, "n": 0},
            "plain": "not-secret"}
    assert provision._secret_leaves(tree, secret=False) == {"p1", "v1", "v2", "0"}
    assert provision._secret_leaves("x", secret=True) == {"x"}
    assert provision._secret_leaves("x", secret=False) == set()


def test_redacted_shows_literal_pairs_masked_and_files_by_path_in_command_line_order(tmp_path: Path) -> None:
    (tmp_path / "vars.yml").write_text("db_password: fromfile\nzone: b\n")
    extra = parse_extra_vars(["region=eu api_token=abc", "@vars.yml", '{"cfg": {"key": "k1", "n": 2}}'],
                             tmp_path)
    assert extra.redacted() == ["region=eu", f"api_token={REDACTED}", f"@{(tmp_path / 'vars.yml').resolve()}",
                                f'cfg={{"key": "{REDACTED}", "n": 2}}']
    assert extra.secret_values() == ["abc", "fromfile", "k1"]


def test_parts_without_an_order_are_literals_first_then_files() -> None:
    extra = ExtraVars(literal={"a": 1}, files=[Path("/f.yml")])
    assert extra.parts() == [{"a": 1}, Path("/f.yml")]
    assert ExtraVars(literal={}, files=[Path("/f.yml")]).parts() == [Path("/f.yml")]
    assert extra.redacted() == ["a=1", "@/f.yml"]


def test_plan_redact_masks_every_secret_and_the_vault_password_longest_first() -> None:
    extra = ExtraVars(literal={"token": "abc", "api_key": "abcdef"}, files=[], file_secrets=["fsecret"])
    plan = _plan(extra, vault_password="vaultpw")
    text = "t=abcdef k=abc f=fsecret v=vaultpw ok=visible"
    assert plan.redact(text) == f"t={REDACTED} k={REDACTED} f={REDACTED} v={REDACTED} ok=visible"
    secrets = plan._secrets()  # longest first: "abc" must not cut "abcdef" into "********def"
    assert sorted(secrets) == ["abc", "abcdef", "fsecret", "vaultpw"]
    assert [len(s) for s in secrets] == [7, 7, 6, 3]
    assert _plan(extra).redact("v=vaultpw") == "v=vaultpw"


def test_a_secret_inside_a_longer_one_never_leaves_part_of_the_longer_one_visible() -> None:
    # "abc" sorts after "aabc" by text: only longest-first masks "aabc" whole
    plan = _plan(ExtraVars(literal={"token": "abc", "api_key": "aabc"}, files=[]))
    assert plan.redact("aabc / abc") == f"{REDACTED} / {REDACTED}"


def test_recorded_options_keep_no_secret_value_and_say_how_the_vault_was_opened() -> None:
    extra = ExtraVars(literal={"token": "abc"}, files=[])
    prompted = _plan(extra, vault_password="vaultpw", tags=["a"], forks=3).recorded_options()
    assert "vaultpw" not in repr(prompted) and "abc" not in repr(prompted)
    assert prompted["vault"] == "prompt" and prompted["vault_password_file"] is None
    assert prompted["extra_vars"] == [f"token={REDACTED}"]
    assert prompted["tags"] == ["a"] and prompted["forks"] == 3 and prompted["connection"] == "ssh"
    assert prompted["host_key_checking"] is False
    from_file = _plan(extra, vault_password_file=Path("/pw")).recorded_options()
    assert from_file["vault"] == "password-file" and from_file["vault_password_file"] == "/pw"
    assert _plan(extra).recorded_options()["vault"] is None


def test_recorded_options_are_every_option_by_name(tmp_path: Path) -> None:
    extra = ExtraVars(literal={"region": "eu"}, files=[])
    plan = _plan(extra, tags=["t1"], skip_tags=["s1"], check=True, diff=True, forks=7, batch="25%",
                 force=True, connection="local", private_key=tmp_path / "id", remote_user="ops")
    plan.envvars["ANSIBLE_HOST_KEY_CHECKING"] = "True"
    assert plan.recorded_options() == {
        "tags": ["t1"], "skip_tags": ["s1"], "check": True, "diff": True, "forks": 7, "batch": "25%",
        "extra_vars": ["region=eu"], "force": True, "connection": "local",
        "private_key": str(tmp_path / "id"), "remote_user": "ops", "host_key_checking": True,
        "vault": None, "vault_password_file": None,
    }
    bare = _plan(extra).recorded_options()
    assert (bare["private_key"], bare["remote_user"]) == (None, None)
    assert (bare["check"], bare["force"]) == (False, False)

