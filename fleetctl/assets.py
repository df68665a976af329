"""Where this installation's playbooks, roles and agent source are, and the roles path Ansible gets.

A checkout has them at the repository root (playbooks/, roles/, agents/); a wheel (pipx, a venv on a
bastion) carries the same three trees as ``fleetctl/_assets/`` (pyproject.toml maps them in), so
``fleetctl provision`` works from any directory, an inventory repository of one's own included. The
two layouts keep the three trees siblings: the fleet_agent role finds the agent's source at
``{{ role_path }}/../../agents`` in both.

Roles resolve through ``ANSIBLE_ROLES_PATH`` (:func:`ansible_roles_path`), built from fleetctl's roles
and the user's own roles path (the environment's, else the one ansible.cfg sets, else Ansible's
default). Which comes first depends on the playbook, as Ansible's own rule (roles next to the
playbook win) would have it: fleetctl's own playbooks get fleetctl's roles first, so a user's role
that happens to be called ``base`` cannot replace fleetctl's inside site.yml; a playbook of one's own
gets the user's path first, so a role of one's own with the same name wins there.
"""

from __future__ import annotations

import configparser
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "_assets"
_CHECKOUT = _PACKAGE.parent
# Ansible's own default roles_path (ansible-core's base.yml, DEFAULT_ROLES_PATH, after $ANSIBLE_HOME's
# roles/), kept when the user sets none: `ansible-galaxy role install` puts roles in the first one.
_ANSIBLE_SYSTEM_ROLES = ("/usr/share/ansible/roles", "/etc/ansible/roles")


def assets_root() -> Path:
    """The directory holding playbooks/, roles/ and agents/ for this installation: the package's
    ``_assets`` when installed from a wheel, else the checkout's root (an editable install too)."""
    if (_INSTALLED / "roles").is_dir():
        return _INSTALLED
    return _CHECKOUT


def playbooks_dir() -> Path:
    """fleetctl's own playbooks (site.yml, verify.yml)."""
    return assets_root() / "playbooks"


def roles_dir() -> Path:
    """fleetctl's roles (base, nvidia_driver, ..., fleet_agent)."""
    return assets_root() / "roles"


def _ansible_cfg(environ: Mapping[str, str], cwd: Path) -> Path | None:
    # Ansible's own search order for its configuration file.
    candidates = [environ.get("ANSIBLE_CONFIG"), str(cwd / "ansible.cfg"),
                  str(Path("~/.ansible.cfg").expanduser()), "/etc/ansible/ansible.cfg"]
    for candidate in candidates:
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_dir():
                path = path / "ansible.cfg"
            if path.is_file():
                return path
    return None


def _read_cfg(cfg: Path | None) -> configparser.ConfigParser | None:
    """``cfg`` parsed as Ansible reads it; None when absent or unreadable."""
    if cfg is None:
        return None
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    try:
        parser.read(cfg, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None  # Ansible reports a broken ansible.cfg itself, with a better message
    return parser


def _configured(parser: configparser.ConfigParser | None, key: str, section: str = "defaults") -> str | None:
    """``[section] key``; None when unset."""
    value = parser.get(section, key, fallback=None) if parser is not None else None
    # Ansible unquotes ini values: `fact_caching_prefix = "site1_"` is site1_.
    if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _configured_roles_path(cfg: Path) -> list[str] | None:
    value = _configured(_read_cfg(cfg), "roles_path")
    if value is None:
        return None
    # Relative entries are relative to the configuration file, as Ansible resolves them.
    return [str(cfg.parent / Path(p).expanduser()) for p in value.split(os.pathsep) if p.strip()]


def user_roles_path(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    """The roles path Ansible would use without fleetctl: ``$ANSIBLE_ROLES_PATH``, else the
    ``roles_path`` of the ansible.cfg Ansible would read, else Ansible's default."""
    env = os.environ if environ is None else environ
    from_env = env.get("ANSIBLE_ROLES_PATH", "")
    if from_env.strip():
        return [p for p in from_env.split(os.pathsep) if p]
    cfg = _ansible_cfg(env, cwd or Path.cwd())
    configured = _configured_roles_path(cfg) if cfg is not None else None
    if configured is not None:
        return configured
    home = env.get("ANSIBLE_HOME") or "~/.ansible"
    return [str(Path(home).expanduser() / "roles"), *_ANSIBLE_SYSTEM_ROLES]


def is_own_playbook(playbook: Path) -> bool:
    """Whether ``playbook`` is one of fleetctl's own (under :func:`playbooks_dir`)."""
    return Path(playbook).expanduser().resolve().is_relative_to(playbooks_dir().resolve())


def ansible_roles_path(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, playbook: Path | None = None
) -> str:
    """The value for ``ANSIBLE_ROLES_PATH`` when fleetctl runs ``playbook``: fleetctl's roles then
    the user's roles path for fleetctl's own playbooks, the other way round for any other playbook
    (or none given); fleetctl's roles listed once."""
    ours = str(roles_dir())
    entries = [p for p in user_roles_path(environ, cwd) if Path(p).expanduser().resolve() != Path(ours)]
    if playbook is not None and is_own_playbook(playbook):
        return os.pathsep.join([ours, *entries])
    return os.pathsep.join([*entries, ours])


def cache_prefixes(
    inventory: Sequence[str], environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> dict[str, str]:
    """The cache prefixes for a run on ``inventory``, as environment variables.

    ``ANSIBLE_CACHE_PLUGIN_PREFIX``: the prefix configured (the environment's, else ansible.cfg's
    ``fact_caching_prefix``) then one naming the fleet. Ansible keys cached facts by host name alone,
    so without it two fleets run from one checkout whose hosts share names (staging's gpu-001,
    production's gpu-001) would each be handed the other's facts (OS release, kernel, interpreter)
    for as long as the cache keeps them.

    ``ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX``: what an inventory plugin's cache would use without
    the first (it reads that variable too), so a cached dynamic inventory stays the one fleetctl's
    own inventory reads use.
    """
    env = os.environ if environ is None else environ
    here = cwd or Path.cwd()
    parser = _read_cfg(_ansible_cfg(env, here))
    configured = _configured(parser, "fact_caching_prefix")
    fact = env.get("ANSIBLE_CACHE_PLUGIN_PREFIX")
    fact = fact if fact is not None else configured
    # Ansible's order for the inventory cache's cache_prefix: the last of its sources that is set wins,
    # and the environment's over ansible.cfg's.
    inventory_prefix = next((v for v in (env.get("ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX"),
                                         env.get("ANSIBLE_CACHE_PLUGIN_PREFIX"),
                                         _configured(parser, "cache_prefix", "inventory"),
                                         configured) if v is not None),
                            "ansible_inventory_")
    sources = []
    for source in inventory:
        path = here / Path(source).expanduser()
        # A path names the fleet by where it is; Ansible's "host1,host2," list by itself.
        sources.append(str(path.resolve()) if source and path.exists() else source)
    fleet = hashlib.sha256("\0".join(sources).encode()).hexdigest()[:12]
    return {"ANSIBLE_CACHE_PLUGIN_PREFIX": f"{fact or ''}fleet-{fleet}-",
            "ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX": inventory_prefix}
