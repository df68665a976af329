"""fleetctl.report.build: fleet report rows from the real fan-out against fake agents."""

from __future__ import annotations

import asyncio

from agent_peers import FAST, free_port, host, http, node_json, replying

from fleetctl.report.build import agents_report


def test_agents_report_builds_rows_for_every_host() -> None:
    async def scenario() -> None:
        good = await asyncio.start_server(replying(http(node_json("good"))), "127.0.0.1", 0)
        bad = await asyncio.start_server(replying(b"garbage\r\n\r\n"), "127.0.0.1", 0)
        hosts = [
            host("good", good.sockets[0].getsockname()[1]),
            host("bad", bad.sockets[0].getsockname()[1]),
            host("gone", free_port()),
        ]
        loop = asyncio.get_running_loop()
        # agents_report runs its own event loop: call it from a worker thread.
        report = await loop.run_in_executor(None, lambda: agents_report(hosts, FAST, pattern="all"))
        good.close()
        bad.close()
        states = {h.name: (h.status.value, h.reason_kind) for h in report.hosts}
        assert states == {
            "good": ("healthy", None),
            "bad": ("error", "garbage"),
            "gone": ("unreachable", "refused"),
        }
        assert report.exit_code == 1

    asyncio.run(scenario())


def test_one_agent_never_makes_two_healthy_rows() -> None:
    """Two inventory hosts with one agent endpoint (a copied ansible_host), and an agent that names
    another host: flagged, naming both, and the copy's row does not show the other host's report."""
    async def scenario() -> None:
        real = await asyncio.start_server(replying(http(node_json("good"))), "127.0.0.1", 0)
        stranger = await asyncio.start_server(replying(http(node_json("node-17"))), "127.0.0.1", 0)
        port = real.sockets[0].getsockname()[1]
        hosts = [host("good", port), host("copy", port), host("gpu9", stranger.sockets[0].getsockname()[1])]
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(None, lambda: agents_report(hosts, FAST, pattern="all"))
        real.close()
        stranger.close()
        rows = {h.name: h for h in report.hosts}
        assert rows["copy"].status.value == "error" and rows["copy"].reason_kind == "wrong_agent"
        assert "'good'" in (rows["copy"].reason or "") and rows["copy"].chips == []
        assert rows["good"].status.value == "unknown" and "copy" in rows["good"].problems[0].message
        assert rows["gpu9"].status.value == "unknown"
        assert [p.check for p in rows["gpu9"].problems] == ["agent_identity"]
        assert "'node-17'" in rows["gpu9"].problems[0].message
        assert not any(h.status.value == "healthy" for h in report.hosts)

    asyncio.run(scenario())
