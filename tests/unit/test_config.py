"""fleet_agent.config: defaults, validation messages (one line naming file and key), token files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleet_agent.config import DEFAULT_PORT, AgentConfig, ConfigError, config_from_dict, load_config


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_bind_loopback_and_avoid_exporter_ports() -> None:
    cfg = config_from_dict({})
    assert cfg.listen_address == "127.0.0.1"
    assert cfg.port == DEFAULT_PORT
    assert DEFAULT_PORT not in (9100, 9400, 9090, 9093, 9835, 9445)
    assert cfg.interval_s == 5.0 and cfg.collector_timeout_s == 2.0
    assert cfg.collectors is None  # auto
    assert cfg.token is None


def test_full_config_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path, """
listen_address: 0.0.0.0
port: 18555
token: s3cret
interval_s: 10
collector_timeout_s: 1.5
hostname: gpu-17
expected_chips: 8
collectors: [nvml, host]
simulation: {scenario: /tmp/s.yaml, host_index: 3}
health: {temperature_margin_c: 3}
drained_file: /run/fleet-agent/drained
xid: {kernel_log: false, window_s: 600}
""")
    cfg = load_config(path)
    assert cfg.port == 18555 and cfg.token == "s3cret" and cfg.interval_s == 10.0
    assert cfg.collectors == ("nvml", "host")
    assert cfg.simulation is not None and cfg.simulation.host_index == 3
    assert cfg.health == {"temperature_margin_c": 3}
    assert cfg.xid.kernel_log is False and cfg.xid.window_s == 600.0
    assert cfg.source == path


@pytest.mark.parametrize(("text", "message"), [
    ("interval_s: -1\n", "config.yaml: interval_s: expected a positive number"),
    ("interval_s: fast\n", "config.yaml: interval_s: expected a positive number"),
    ("intervall_s: 5\n", "config.yaml: intervall_s: unknown key"),
    ("port: 70000\n", "config.yaml: port: expected an integer from 0 to 65535"),
    ("port: true\n", "config.yaml: port: expected an integer from 0 to 65535"),
    ("collectors: [nvml, gpu]\n", "config.yaml: collectors: unknown collector 'gpu'"),
    ("collectors: everything\n", "config.yaml: collectors: expected 'auto' or a list"),
    ("interval_s: 2\ncollector_timeout_s: 3\n", "config.yaml: collector_timeout_s: must be shorter"),
    ("simulation: {host_index: 1}\n", "config.yaml: simulation.scenario: missing"),
    ("xid: {window: 5}\n", "config.yaml: xid.window: unknown key"),
    ("xid: {kernel_log: yes please}\n", "config.yaml: xid.kernel_log: expected true or false"),
    ("token: a\ntoken_file: /x\n", "config.yaml: token_file: give either token or token_file"),
    ("- a\n- b\n", "config.yaml: expected a mapping at the top level"),
    ("port: [\n", "config.yaml: not valid YAML at line"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_config(str(tmp_path / "nope.yaml"))


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == AgentConfig(source=str(tmp_path / "config.yaml"))


def test_token_file_is_read_and_world_readable_warns(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    os.chmod(token, 0o600)
    cfg = config_from_dict({"token_file": str(token)}, "c.yaml")
    assert cfg.token == "abc123"
    assert capsys.readouterr().err == ""
    os.chmod(token, 0o644)
    config_from_dict({"token_file": str(token)}, "c.yaml")
    err = capsys.readouterr().err
    assert "world-readable" in err and "abc123" not in err


def test_unreadable_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^c\.yaml: token_file: cannot read"):
        config_from_dict({"token_file": str(tmp_path / "missing")}, "c.yaml")


def test_empty_token_rejected(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    os.chmod(token, 0o600)
    with pytest.raises(ConfigError, match=r"c\.yaml: token_file: must not be empty"):
        config_from_dict({"token_file": str(token)}, "c.yaml")


def test_a_config_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes("hostname: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"agent.yaml: not UTF-8 \(byte 13\)"):
        load_config(str(path))


@pytest.mark.parametrize(("content", "message"), [
    (b"s3cret\nold-token\n", "must be one word of printable ASCII"),  # two lines
    ("s3cret".encode("utf-16"), "is not UTF-8 text"),
    (b"two words\n", "must be one word"),
])
def test_a_token_file_that_no_header_could_carry_is_refused(tmp_path: Path, content: bytes,
                                                            message: str) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    os.chmod(token, 0o600)
    with pytest.raises(ConfigError, match=rf"c\.yaml: token_file: .*{message}"):
        config_from_dict({"token_file": str(token)}, "c.yaml")


def test_an_inline_token_with_a_line_break_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: token: must be one word"):
        config_from_dict({"token": "abc\ndef"}, "c.yaml")


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "2001:db8::7", "gpu-017.example.net",
                                     "127.0.0.1.example.net"])
def test_listening_beyond_loopback_without_a_token_is_refused(address: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"listen_address": address}, "c.yaml")
    assert str(err.value).startswith(f"c.yaml: listen_address: {address} is not a loopback address: ")
    assert "token" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_needs_no_token(address: str) -> None:
    assert config_from_dict({"listen_address": address}).listen_address == address


def test_beyond_loopback_with_a_token_or_token_file_is_accepted(tmp_path: Path) -> None:
    assert config_from_dict({"listen_address": "10.1.2.3", "token": "s3cret"}).token == "s3cret"
    token = tmp_path / "token"
    token.write_text("from-file\n")
    os.chmod(token, 0o600)
    cfg = config_from_dict({"listen_address": "gpu-017.example.net", "token_file": str(token)})
    assert cfg.listen_address == "gpu-017.example.net" and cfg.token == "from-file"


def test_an_empty_token_file_beyond_loopback_names_the_token_file(tmp_path: Path) -> None:
    # The empty token is the problem to fix, not the address.
    token = tmp_path / "token"
    token.write_text("\n")
    os.chmod(token, 0o600)
    with pytest.raises(ConfigError, match=r"c\.yaml: token_file: must not be empty"):
        config_from_dict({"listen_address": "10.1.2.3", "token_file": str(token)}, "c.yaml")
