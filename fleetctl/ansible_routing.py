"""Ansible's plugin routing tables, parsed once per ansible-core install instead of once per run.

The first plugin Ansible looks up (the inventory plugins, on every cold inventory parse) makes its
collection loader read ``ansible/config/ansible_builtin_runtime.yml``: 370 KB of YAML, ~50 ms,
a tenth of a cold ``fleetctl health`` on a 1,000-host fleet. The loader parses such files through
``_meta_yml_to_dict(data, content_id)``, which ansible-core documents as a hook to replace "to
allow other implementations to cache the output". Ours keeps the result as JSON in fleetctl's
cache directory, keyed by the SHA-256 of the YAML: any other content (a new ansible-core, another
collection's meta/runtime.yml) is parsed by Ansible's own function and cached under its own key.
``BaseLoader`` makes every scalar a string, so JSON holds the result exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetctl.cachefile import write_cache_file

PREFIX = "ansible-routing-"


def install(cache_dir: Path) -> None:
    """Route the collection loader's metadata parsing through the cache in ``cache_dir``.

    Does nothing when ansible-core no longer has the hook (its parse then runs as before).
    """
    from ansible.utils.collection_loader import _collection_finder

    parse = getattr(_collection_finder, "_meta_yml_to_dict", None)
    if parse is None or getattr(parse, "fleetctl_cache", None) is not None:
        return
    cached = _caching(parse, cache_dir)
    cached.fleetctl_cache = cache_dir  # type: ignore[attr-defined]
    _collection_finder._meta_yml_to_dict = cached


def _caching(parse: Callable[[Any, Any], Any], cache_dir: Path) -> Callable[[Any, Any], Any]:
    def load(data: bytes | str, content_id: Any) -> Any:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        path = cache_dir / f"{PREFIX}{hashlib.sha256(raw).hexdigest()}.json"
        with contextlib.suppress(OSError, ValueError):
            cached = json.loads(path.read_bytes())
            if isinstance(cached, dict):
                return cached
        result = parse(data, content_id)
        with contextlib.suppress(TypeError, ValueError):  # not JSON-shaped: used, never cached
            write_cache_file(path, json.dumps(result, separators=(",", ":")))
        return result

    return load

