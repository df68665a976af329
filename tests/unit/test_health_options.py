"""``fleetctl health``'s own options: validated choices, one-line errors with a "did you mean"."""

from __future__ import annotations

import pytest
from fleet_agent.verdict import HostHealth
from typer.testing import CliRunner

from fleetctl.cli import app
from fleetctl.commands.health import _complete_states, parse_states
from fleetctl.errors import UsageError
from fleetctl.report import HostRow, check_group_by, group_keys


def test_status_takes_a_comma_list_of_states() -> None:
    assert parse_states("degraded, Unhealthy") == frozenset({"degraded", "unhealthy"})
    assert parse_states(None) is None
    with pytest.raises(UsageError, match=r"--status 'degradd': not a state; did you mean 'degraded'\?"):
        parse_states("unhealthy,degradd")
    with pytest.raises(UsageError, match="expected a comma list"):
        parse_states(" , ")


def test_status_completion_continues_the_list() -> None:
    assert _complete_states("deg") == ["degraded"]
    assert "degraded,unhealthy" in _complete_states("degraded,un")
    assert not any(c.endswith(",degraded") for c in _complete_states("degraded,"))


def rows() -> list[HostRow]:
    return [HostRow("h1", "a", 1, ("gpu_nodes", "rack12"), HostHealth.HEALTHY, vars={"site": "ams"}),
            HostRow("h2", "a", 1, ("tpu_nodes", "rack3"), HostHealth.HEALTHY, vars={"site": "fra"})]


def test_group_by_knows_groups_variables_and_group_prefixes() -> None:
    keys = group_keys(rows())
    assert {"group", "model", "site", "rack", "gpu", "tpu"} <= set(keys)
    for key in ("rack", "site", "gpu_nodes", "rack1", "model"):
        assert check_group_by(key, rows()) == key


def test_an_unknown_group_by_key_is_an_error_with_the_closest_keys() -> None:
    with pytest.raises(UsageError, match=r"--group-by 'rak': .*did you mean 'rack'\?"):
        check_group_by("rak", rows())
    with pytest.raises(UsageError, match=r"--group-by 'zone': no such variable or group prefix"):
        check_group_by("zone", rows())


@pytest.mark.parametrize(("argv", "message"), [
    (["--sort", "bogus"], "--sort"),
    (["--source", "snmp"], "--source"),
    (["-o", "xml"], "--output"),
])
def test_bad_choices_are_refused_before_any_agent_is_asked(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["health", "-i", "/nonexistent/inventory.yml", *argv])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(("argv", "message"), [
    (["--summary", "--map"], "--summary and --map are two views"),
    (["--chips", "--map"], "--chips and --map are two views"),
    (["--map", "-o", "name"], "--map and -o name are two views"),
    (["-o", "name", "--watch", "2"], "-o name lists the hosts once"),
    (["--json", "-o", "yaml"], "two formats"),
])
def test_views_that_exclude_each_other(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["health", "-i", "/nonexistent/inventory.yml", *argv])
    assert result.exit_code == 2 and message in result.output
