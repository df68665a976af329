"""Ask many agents for ``GET /v1/node`` at once, and say precisely why a host did not answer.

The pieces, each with one job:

- :mod:`~fleetctl.fanout.pool` — the fan-out: a fixed pool of workers (bounded concurrency), hung
  hosts stepping aside, one overall deadline after which whatever is still running is reported
  as ``deadline``; every host gets exactly one :class:`FetchResult`;
- :mod:`~fleetctl.fanout.client` — one host: name resolution under its own timer, then connect,
  request and whole response under another; a timeout names the step that ran out, and no timer
  runs while the host waits for something shared (a worker, a socket, a resolver thread);
- :mod:`~fleetctl.fanout.resolver` — lookups in threads that names whose lookups hang cannot use up;
- :mod:`~fleetctl.fanout.sockets` — the connections (raw sockets, addresses tried one by one);
- :mod:`~fleetctl.fanout.http` — the request bytes and a strict, minimal response parser;
- :mod:`~fleetctl.fanout.classify` and :mod:`~fleetctl.fanout.decode` — what each outcome was, and
  the decoding of a body into a node report.

The fleet report is built from the results in :mod:`fleetctl.report.build`.
"""

from fleetctl.fanout.classify import FetchKind, FetchResult
from fleetctl.fanout.client import NODE_PATH, SUMMARY_PATH, fetch_one
from fleetctl.fanout.pool import FanoutOptions, agent_tokens, fan_out, fetch_all, raise_fd_limit

__all__ = [
    "NODE_PATH",
    "SUMMARY_PATH",
    "FanoutOptions",
    "FetchKind",
    "FetchResult",
    "agent_tokens",
    "fan_out",
    "fetch_all",
    "fetch_one",
    "raise_fd_limit",
]
