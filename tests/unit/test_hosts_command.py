"""``fleetctl hosts``, ``hosts set``, ``hosts show``: the CLI end to end (CliRunner), and the views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_peers import node_json, threaded_agent
from typer.testing import CliRunner

from fleetctl.cli import app
from fleetctl.state import db, lifecycle

UNUSED_PORT = 37411  # this helper's range; nothing listens: quickly refused


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  vars:\n    fleet_scheduler: none\n    ansible_connection: local\n"
                   "    ansible_host: 127.0.0.1\n"
                   f"  hosts:\n    h1:\n      fleet_agent_port: {UNUSED_PORT}\n    h2:\n    h10:\n")
    monkeypatch.setenv("FLEETCTL_INVENTORY", str(inv))
    monkeypatch.setenv("FLEETCTL_DB", str(tmp_path / "state.db"))
    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("USER", "sre")
    monkeypatch.delenv("SUDO_USER", raising=False)
    return tmp_path


def fleetctl(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, list(args))
    return done.exit_code, done.stdout, done.stderr


def test_hosts_lists_every_host_new_by_default_and_takes_patterns(env: Path) -> None:
    code, out, _ = fleetctl("hosts", "-o", "json")
    assert code == 0
    assert [(h["host"], h["state"], h["implied"], h["health"], h["drain_state"])
            for h in json.loads(out)["hosts"]] == [
        ("h1", "new", True, None, "active"), ("h2", "new", True, None, "active"),
        ("h10", "new", True, None, "active")]
    code, out, _ = fleetctl("hosts", "h1", "h10", "-o", "name")
    assert (code, out) == (0, "h1\nh10\n")
    code, _, err = fleetctl("hosts", "h3")
    assert code == 2 and err.startswith("fleetctl hosts: ") and "'h3' matches no host" in err


def test_hosts_set_records_and_refuses_in_one_line(env: Path) -> None:
    code, out, err = fleetctl("hosts", "set", "h1", "burn-in", "--reason", "racked in B7")
    assert code == 0, err
    assert out == "h1: new -> burn_in (racked in B7)\n"
    code, _, err = fleetctl("hosts", "set", "h1", "rma", "-r", "dead")
    assert code == 1
    assert err == ("fleetctl hosts set: state conflict: h1: cannot go from burn_in to rma (from burn_in: "
                   "in_service, quarantined, repairing, retired, suspect); --force to override\n")
    code, _, err = fleetctl("hosts", "set", "h1", "rma")
    assert code == 2 and err == "fleetctl hosts set: a reason is required: --reason TEXT\n"
    code, out, _ = fleetctl("hosts", "set", "h1", "rma", "-r", "dead", "--force", "-o", "json")
    assert code == 0 and json.loads(out)["from"] == "burn_in" and json.loads(out)["state"] == "rma"
    code, _, err = fleetctl("hosts", "set", "h", "rma", "-r", "x")
    assert code == 2 and "matches no host" in err


def test_hosts_table_in_a_pipe_is_one_line_per_host_with_since_why_and_health(env: Path) -> None:
    conn = db.connect(env / "state.db")
    lifecycle.set_state(conn, "h2", lifecycle.LifeState.SUSPECT, actor="sre", reason="XID 48 on chip 3")
    lifecycle.record_health(conn, {"h2": "chip 3: XID 48", "h1": None}, source="undrain")
    conn.execute("INSERT INTO host_lifecycle VALUES ('h10', 'soak_test', 'newer', 'x@y', 1.0, 'person')")
    conn.close()
    code, out, _ = fleetctl("hosts")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "STATE", "SINCE", "WHY", "HEALTH", "DRAIN"]
    h1, h2, h10 = lines[1:]
    assert h1.split() == ["h1", "new", "-", "-", "healthy", "active"]
    assert h2.startswith("h2 ") and " suspect " in h2 and "XID 48 on chip 3" in h2 and "unfit: chip 3" in h2
    assert h10.split()[:3] == ["h10", "soak_test", "1970-01-01T00:00:01Z"]  # a newer fleetctl's: as written
    code, out, _ = fleetctl("hosts", "-o", "wide", "h2")
    assert out.splitlines()[0].split()[-4:] == ["BY", "SOURCE", "HEALTH", "AT"]
    assert "sre@" in out and "person" in out


def test_hosts_show_json_with_an_unreachable_agent_is_not_an_error(env: Path) -> None:
    code, out, err = fleetctl("hosts", "set", "h1", "in_service", "-r", "provisioned by hand")
    assert code == 0, err
    code, out, err = fleetctl("hosts", "show", "h1", "--timeout", "2", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["host"] == "h1" and doc["state"] == "in_service"
    assert [(e["from_state"], e["to_state"]) for e in doc["history"]] == [("new", "in_service")]
    assert doc["drains"] == [] and doc["runs"] == []
    assert doc["agent"]["reachable"] is False and doc["agent"]["outcome"] == "refused"
    assert doc["agent"]["endpoint"] == f"127.0.0.1:{UNUSED_PORT}"


def test_hosts_show_renders_the_agents_report(env: Path) -> None:
    body = json.loads(node_json("h1"))
    body["driver_version"], body["cuda_driver_version"] = "535.216.01", "12.2"
    body["chips"][0]["gpu"] = {"xid_counts": {"79": 1}, "xid_total": 1, "last_xid": 79}
    with threaded_agent(json.dumps(body).encode()) as port:
        (env / "hosts.yml").write_text((env / "hosts.yml").read_text().replace(str(UNUSED_PORT), str(port)))
        code, out, err = fleetctl("hosts", "describe", "h1", "-o", "json")
        assert code == 0, err
        agent = json.loads(out)["agent"]
        assert agent["reachable"] and agent["driver_version"] == "535.216.01"
        assert agent["cuda_driver_version"] == "12.2"
        assert agent["chips"][0]["xid_counts"] == {"79": 1} and agent["chips"][0]["last_xid"] == 79
        code, out, err = fleetctl("hosts", "show", "h1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["host", "h1"] and lines[1].split() == ["lifecycle", "new"]
    assert any(line.split() == ["since", "-", "(implied)"] for line in lines)
    assert "lifecycle history: none" in out and "drains: none" in out and "provision runs: none" in out
    assert any(line.split() == ["driver", "535.216.01"] for line in lines)
    assert any(line.split() == ["cuda", "12.2"] for line in lines)
    chip0 = next(line for line in lines if line.startswith("0 "))
    assert "79 x1" in chip0 and chip0.split()[-1] == "79"


def test_hosts_show_of_an_agent_from_before_the_cuda_version(env: Path) -> None:
    body = json.loads(node_json("h1"))
    body["driver_version"] = "535.216.01"
    del body["cuda_driver_version"]  # an older agent does not send the field at all
    with threaded_agent(json.dumps(body).encode()) as port:
        (env / "hosts.yml").write_text((env / "hosts.yml").read_text().replace(str(UNUSED_PORT), str(port)))
        code, out, err = fleetctl("hosts", "show", "h1", "-o", "json")
        assert code == 0, err
        agent = json.loads(out)["agent"]
        assert agent["reachable"] and agent["cuda_driver_version"] is None
        code, out, err = fleetctl("hosts", "show", "h1")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.split() == ["driver", "535.216.01"] for line in lines)
    assert any(line.split() == ["cuda", "-"] for line in lines)


def test_hosts_show_escapes_a_hostile_reason(env: Path) -> None:
    conn = db.connect(env / "state.db")
    lifecycle.set_state(conn, "h2", lifecycle.LifeState.SUSPECT, actor="sre", reason="\x1b[2Jgone [bold]x[/]")
    conn.close()
    code, out, _ = fleetctl("hosts", "show", "h2", "--timeout", "0.5")
    assert code == 0
    assert "\x1b" not in out and "\\x1b[2Jgone [bold]x[/]" in out


def test_options_may_come_before_the_subcommand_and_double_dash_makes_words_patterns(env: Path) -> None:
    inv = str(env / "hosts.yml")
    code, out, err = fleetctl("hosts", "-i", inv, "--db", str(env / "state.db"), "set", "h2", "suspect",
                              "-r", "fans")
    assert (code, out) == (0, "h2: new -> suspect (fans)\n"), err
    code, out, _ = fleetctl("hosts", "-o", "name", "show", "h2")  # show, not a pattern "show"
    assert code == 0 and out.startswith("h2")
    code, _, err = fleetctl("hosts", "-o", "name", "--", "show")  # after --: a pattern
    assert code == 2 and "'show' matches no host" in err
