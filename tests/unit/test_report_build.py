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
