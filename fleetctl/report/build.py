"""Building the fleet report: a row per host from its node report (fetched from the agent or
rebuilt from Prometheus) or from why there is none. A host's state is always
:mod:`fleet_agent.verdict`'s."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fleet_agent.schema import NodeReport, Problem
from fleet_agent.verdict import host_verdict, no_report

from fleetctl.inventory import Host
from fleetctl.report.identity import identity_findings
from fleetctl.report.model import FleetReport, HostRow, ProblemRow, problem_row, sort_problem_rows
from fleetctl.speedups import gc_paused

if TYPE_CHECKING:
    from fleetctl.fanout import FanoutOptions

# The reason kind of a host whose answer came from another host's agent (see report.identity).
WRONG_AGENT = "wrong_agent"


def host_row_from_node(name: str, address: str, port: int, groups: tuple[str, ...], node: NodeReport,
                       now: float, *, expected_chips: int | None = None,
                       host_vars: Mapping[str, Any] | None = None,
                       sample_time_known: bool = True, uncertainty_s: float = 0.0,
                       also: Sequence[Problem] = (), chips_present: int | None = None) -> HostRow:
    """A reachable host: its state is :func:`fleet_agent.verdict.host_verdict`'s (the agent's own
    judgement plus what only the controller sees); its problems are the agent's and those the
    verdict added, its chips as the verdict judged them (impossible readings blanked).
    ``chips_present``: the host's chip count when ``node`` lists only some (host_verdict's)."""
    verdict = host_verdict(node, now, expected_chips=expected_chips, sample_time_known=sample_time_known,
                           uncertainty_s=uncertainty_s, also=also, chips_present=chips_present)
    chips = list(verdict.chips)
    problems = [problem_row(p, None) for p in node.problems]
    problems += [problem_row(p, c.index) for c in chips if c.problems for p in c.problems]
    problems += [problem_row(p, None) for p in verdict.added]
    return HostRow(
        name=name, address=address, port=port, groups=groups, status=verdict.health,
        agent_version=node.agent_version, sampled_at=verdict.sampled_at,
        age_s=verdict.age_s, drained=node.drained,
        chips_expected=expected_chips if expected_chips is not None else verdict.chips_expected,
        chips=chips, problems=sort_problem_rows(problems), vars=host_vars if host_vars is not None else {},
    )


def host_row_failed(name: str, address: str, port: int, groups: tuple[str, ...], *, reachable: bool,
                    kind: str, reason: str, expected_chips: int | None = None,
                    host_vars: Mapping[str, Any] | None = None,
                    problems: Sequence[ProblemRow] = ()) -> HostRow:
    """A host without a report: ``reachable`` False -> unreachable, True -> error."""
    return HostRow(
        name=name, address=address, port=port, groups=groups,
        status=no_report(reachable=reachable),
        reason_kind=kind, reason=reason, chips_expected=expected_chips,
        vars=host_vars if host_vars is not None else {},
        problems=list(problems),
    )


def agents_report(hosts: Sequence[Host], options: FanoutOptions | None = None, *,
                  inventory: str = "", pattern: str = "all") -> FleetReport:
    """Fan out to ``hosts`` and build the fleet report from their answers."""
    started = time.monotonic()
    # Here, not at the top: the rows through Prometheus are built here too, without the fan-out client
    # (asyncio and its event loop: a fifth of `health --source prometheus`'s imports).
    from fleetctl.fanout import FanoutOptions, agent_tokens, fetch_all

    options = options or FanoutOptions()
    tokens = agent_tokens(hosts)
    with gc_paused():  # the reports and rows all stay alive: collection passes would free nothing
        results = fetch_all(hosts, lambda h: tokens[h.name], options)
        now = time.time()
        # One clock reading for every answer: each came at most this long before it.
        span = time.monotonic() - started
        identity = identity_findings([r.host for r in results],
                                     {r.host.name: r.report.host for r in results if r.report is not None})
        rows = []
        for r in results:
            h = r.host
            found = identity.get(h.name)
            if r.report is not None and found is not None and found.foreign:
                rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups, reachable=True,
                                            kind=WRONG_AGENT, reason=found.problem.message,
                                            expected_chips=h.expected_chips, host_vars=h.vars,
                                            problems=[problem_row(found.problem, None)]))
            elif r.report is not None:
                rows.append(host_row_from_node(h.name, h.address, h.agent_port, h.groups, r.report, now,
                                               expected_chips=h.expected_chips, host_vars=h.vars,
                                               uncertainty_s=span,
                                               also=() if found is None else (found.problem,)))
            else:
                rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups,
                                            reachable=r.kind.reachable, kind=r.kind.value, reason=r.detail,
                                            expected_chips=h.expected_chips, host_vars=h.vars))
    return FleetReport(generated_at=now, source="agents", hosts=rows, inventory=inventory, pattern=pattern,
                       duration_s=time.monotonic() - started)
