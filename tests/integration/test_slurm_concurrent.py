"""20 ``fleetctl drain`` processes at once against a real Slurm never exceed max-unavailable, with the state
in SQLite and in a real PostgreSQL (as if from several machines sharing it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from postgres_server import pg_server, pg_url  # noqa: F401 - fixtures
from slurm_cluster import NODES, ClusterOptions, SlurmCluster, slurm, slurm_cluster  # noqa: F401 - fixtures

from fleetctl.state import db, lifecycle

pytestmark = pytest.mark.integration

# Ports of its own, so that this module's cluster can run beside another module's.
SLURM_OPTIONS = ClusterOptions(ctld_port=38827, node_ports=(38811, 38812, 38813))

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_twenty_concurrent_drains_never_exceed_max_unavailable(
        slurm: SlurmCluster, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:  # noqa: F811
    database = str(tmp_path / "fleetctl.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"fleet_scheduler": "slurm", "ansible_connection": "local"},
        "hosts": {n: {"ansible_host": "127.0.0.1"} for n in NODES},
    }}))
    env = {**slurm.env, "FLEETCTL_DB": database, "FLEETCTL_INVENTORY": str(inventory),
           "FLEETCTL_CACHE_DIR": str(tmp_path / "cache")}
    # one status first: parses (and caches) the inventory, creates the database
    assert subprocess.run([FLEETCTL, "status"], env=env, capture_output=True, timeout=120).returncode == 0
    conn = db.connect(database)
    for n in NODES:  # in service: a person's drain takes each to repairing, once
        lifecycle.set_state(conn, n, lifecycle.LifeState.IN_SERVICE, actor="ci", reason="burned in")

    limit = 2
    procs = [subprocess.Popen([FLEETCTL, "drain", NODES[i % len(NODES)], "--reason", f"race {i}",
                               "--max-unavailable", str(limit), "--no-wait", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(20)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode in (0, 1), err
        results.append((p.returncode, json.loads(out)["hosts"][0] if out.strip() else None, err))

    drained_in_slurm = [n for n in NODES if slurm.node_state(n) in ("drain", "drng")]
    # The fixture starts from every node idle and responding, so the budget is all ours: exactly
    # `limit` drains win. Every refusal names what it counted as unavailable; only nodes this race
    # drained may be in it (a node Slurm saw as not responding would show there, naming the cause).
    refusals = [host["message"] for code, host, _err in results if code == 1 and host is not None]
    counted = {n for m in refusals for n in re.findall(r"node\d+", m.split("already unavailable", 1)[-1])}
    assert counted <= set(drained_in_slurm), (counted, refusals)
    assert len(drained_in_slurm) == limit, ([slurm.node_state(n) for n in NODES], refusals[:3])
    states = dict(conn.execute("SELECT host, state FROM host_state").fetchall())
    assert sorted(h for h, s in states.items() if s != "active") == sorted(drained_in_slurm)
    # every request for a node that got the budget succeeded; every other one was refused with the numbers
    for code, host, err in results:
        assert host is not None, err
        if host["host"] in drained_in_slurm:
            assert code == 0 and host["ok"], host
        else:
            assert code == 1 and f"max-unavailable is {limit} of 3 hosts" in host["message"], host
            assert re.search(r"; \d+ already unavailable \(.*\) \+ 1 requested = \d+", host["message"]), host
    # the audit log shows exactly one cordon per drained node, whoever won the race
    cordons = conn.execute("SELECT host FROM host_audit WHERE to_state = 'cordoned'").fetchall()
    assert sorted(h for (h,) in cordons) == sorted(drained_in_slurm)
    # and one lifecycle move per drained node: in_service -> repairing, never twice
    moves = conn.execute("SELECT host, from_state FROM lifecycle_audit WHERE to_state = ?", ("repairing",))
    assert sorted((h, f) for h, f in moves.fetchall()) == sorted((n, "in_service") for n in drained_in_slurm)
    conn.close()
