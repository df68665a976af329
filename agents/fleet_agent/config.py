"""The agent's configuration: one YAML file, validated once at start-up.

Every problem is a :class:`ConfigError` whose message is one line naming the file and the key
(``config.yaml: interval_s: expected a positive number``); the CLI prints it and exits 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = "/etc/fleet-agent/config.yaml"
# Outside the 9100-9999 range where Prometheus exporters register their ports (dcgm-exporter 9400,
# node_exporter 9100, nvidia_gpu_exporter 9835, ...), below the ephemeral range; easy to remember
# next to dcgm-exporter's 9400. fleetctl uses the same default.
DEFAULT_PORT = 10400
KNOWN_COLLECTORS = ("nvml", "tpu", "host")
# Where the agent keeps what must survive a restart (the XID history); systemd's StateDirectory=.
DEFAULT_STATE_DIR = "/var/lib/fleet-agent"


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is the one-line message for the operator."""


@dataclass(frozen=True)
class XidConfig:
    kernel_log: bool = True  # read "NVRM: Xid" lines from the kernel log as a second source
    kmsg_path: str = "/dev/kmsg"
    window_s: float = 3600.0


@dataclass(frozen=True)
class SimulationConfig:
    scenario: str
    host_index: int = 0


@dataclass(frozen=True)
class AgentConfig:
    listen_address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    interval_s: float = 5.0
    collector_timeout_s: float = 2.0
    hostname: str | None = None
    expected_chips: int | None = None
    collectors: tuple[str, ...] | None = None  # None = auto
    simulation: SimulationConfig | None = None
    health: dict[str, Any] = field(default_factory=dict)
    drained_file: str | None = None
    xid: XidConfig = field(default_factory=XidConfig)
    request_timeout_s: float = 10.0  # a request must arrive whole within this; idle keep-alive too
    max_connections: int = 128
    state_dir: str = DEFAULT_STATE_DIR
    source: str = "<defaults>"

    def with_scenario(self, scenario: str, host_index: int = 0) -> AgentConfig:
        return replace(self, simulation=SimulationConfig(scenario=scenario, host_index=host_index))


_TOP_KEYS = {
    "listen_address", "port", "token", "token_file", "interval_s", "collector_timeout_s", "hostname",
    "expected_chips", "collectors", "simulation", "health", "drained_file", "xid",
    "request_timeout_s", "max_connections", "state_dir",
}


def load_config(path: str | None) -> AgentConfig:
    """Read and validate ``path``; ``None`` means the default path, or defaults when it is absent."""
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG_PATH):
            return AgentConfig()
        path = DEFAULT_CONFIG_PATH
    name = path
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 (byte {exc.start})") from None
    # Here, not at the top: fleetctl imports this module for DEFAULT_PORT on its start-up path.
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{name}: not valid YAML{where}") from None
    if doc is None:
        doc = {}
    return config_from_dict(doc, name)


def config_from_dict(doc: Any, name: str = "<config>") -> AgentConfig:
    """Validate a decoded document (``name`` is used in messages)."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: expected a mapping at the top level")
    for key in doc:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{name}: {key}: unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    v = _Validator(name)
    token = v.opt_str(doc, "token")
    token_file = v.opt_str(doc, "token_file")
    if token is not None and token_file is not None:
        raise ConfigError(f"{name}: token_file: give either token or token_file, not both")
    if token_file is not None:
        token = _read_token_file(name, token_file)
    if token is not None and not token.strip():
        raise ConfigError(f"{name}: {'token_file' if token_file else 'token'}: must not be empty")
    if token is not None and not _TOKEN.fullmatch(token):
        # It travels in an HTTP header: a space or a line break (a second line in the file) would
        # make every request fail authentication, silently.
        raise ConfigError(f"{name}: {'token_file' if token_file else 'token'}: must be one word of "
                          "printable ASCII (no spaces, no second line)")
    interval = v.positive(doc, "interval_s", 5.0)
    timeout = v.positive(doc, "collector_timeout_s", 2.0)
    if timeout >= interval:
        raise ConfigError(f"{name}: collector_timeout_s: must be shorter than interval_s ({interval})")
    port = v.integer(doc, "port", DEFAULT_PORT, lo=0, hi=65535)
    expected = doc.get("expected_chips")
    if expected is not None:
        expected = v.integer(doc, "expected_chips", 0, lo=0, hi=4096)
    listen = v.opt_str(doc, "listen_address") or "127.0.0.1"
    if token is None and not is_loopback(listen):
        # Beyond loopback, /v1/node and /metrics would answer anyone who can reach the port.
        raise ConfigError(f"{name}: listen_address: {listen} is not a loopback address: "
                          "set token or token_file (an agent reachable from the network needs one)")
    return AgentConfig(
        listen_address=listen,
        port=port,
        token=token.strip() if token is not None else None,
        interval_s=interval,
        collector_timeout_s=timeout,
        hostname=v.opt_str(doc, "hostname"),
        expected_chips=expected,
        collectors=_collectors(name, doc.get("collectors", "auto")),
        simulation=_simulation(name, doc.get("simulation")),
        health=_mapping(name, "health", doc.get("health")),
        drained_file=v.opt_str(doc, "drained_file"),
        xid=_xid(name, doc.get("xid")),
        request_timeout_s=v.positive(doc, "request_timeout_s", 10.0),
        max_connections=v.integer(doc, "max_connections", 128, lo=1, hi=100_000),
        state_dir=_state_dir(name, doc.get("state_dir", DEFAULT_STATE_DIR)),
        source=name,
    )


class _Validator:
    def __init__(self, name: str, prefix: str = "") -> None:
        self.name = name
        self.prefix = prefix

    def _err(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.name}: {self.prefix}{key}: {what}")

    def opt_str(self, doc: dict[str, Any], key: str) -> str | None:
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._err(key, "expected a non-empty string")
        return value

    def positive(self, doc: dict[str, Any], key: str, default: float) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
                or value == float("inf"):
            raise self._err(key, "expected a positive number")
        return float(value)

    def integer(self, doc: dict[str, Any], key: str, default: int, *, lo: int, hi: int) -> int:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self._err(key, f"expected an integer from {lo} to {hi}")
        return value

    def boolean(self, doc: dict[str, Any], key: str, default: bool) -> bool:
        value = doc.get(key, default)
        if not isinstance(value, bool):
            raise self._err(key, "expected true or false")
        return value


def _collectors(name: str, value: Any) -> tuple[str, ...] | None:
    if value == "auto":
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise ConfigError(f"{name}: collectors: expected 'auto' or a list of {', '.join(KNOWN_COLLECTORS)}")
    for c in value:
        if c not in KNOWN_COLLECTORS:
            raise ConfigError(f"{name}: collectors: unknown collector {c!r} "
                              f"(known: {', '.join(KNOWN_COLLECTORS)})")
    return tuple(dict.fromkeys(value))


def _mapping(name: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: {key}: expected a mapping")
    return dict(value)


def _simulation(name: str, value: Any) -> SimulationConfig | None:
    if value is None:
        return None
    doc = _mapping(name, "simulation", value)
    for key in doc:
        if key not in ("scenario", "host_index"):
            raise ConfigError(f"{name}: simulation.{key}: unknown key (known: host_index, scenario)")
    v = _Validator(name, "simulation.")
    scenario = v.opt_str(doc, "scenario")
    if scenario is None:
        raise ConfigError(f"{name}: simulation.scenario: missing (path of a scenario file)")
    return SimulationConfig(scenario=scenario, host_index=v.integer(doc, "host_index", 0, lo=0, hi=10**6))


def _xid(name: str, value: Any) -> XidConfig:
    doc = _mapping(name, "xid", value)
    for key in doc:
        if key not in ("kernel_log", "kmsg_path", "window_s"):
            raise ConfigError(f"{name}: xid.{key}: unknown key (known: kernel_log, kmsg_path, window_s)")
    v = _Validator(name, "xid.")
    return XidConfig(
        kernel_log=v.boolean(doc, "kernel_log", True),
        kmsg_path=v.opt_str(doc, "kmsg_path") or "/dev/kmsg",
        window_s=v.positive(doc, "window_s", 3600.0),
    )


def _state_dir(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: state_dir: expected a directory path")
    if not os.path.isabs(value) or "\x00" in value:
        raise ConfigError(f"{name}: state_dir: expected an absolute path, got {value!r}")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ConfigError(f"{name}: state_dir: {value} exists and is not a directory")
    return os.path.normpath(value)


_TOKEN = re.compile(r"[!-~]+")


def is_loopback(address: str) -> bool:
    """Whether binding ``address`` keeps the agent on this machine: a loopback IP literal or
    ``localhost``. Names are not resolved (a name may map to any interface, and loading a config
    must not wait on DNS), and the wildcards 0.0.0.0 and :: are every interface."""
    literal = address.strip("[]")
    if literal.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        return False


def _read_token_file(name: str, path: str) -> str:
    try:
        mode = os.stat(path).st_mode
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: token_file: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: token_file: {path} is not UTF-8 text") from None
    if mode & stat.S_IROTH:
        # A warning, not an error: refusing to start would take monitoring down over a chmod.
        print(f"fleet-agent: warning: token_file {path} is world-readable; chmod 0600 it",
              file=sys.stderr)
    return token
