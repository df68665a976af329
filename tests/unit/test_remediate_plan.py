"""The decision function over recorded sequences: a simulated fleet whose health changes over time,
the plan applied each round as the remediation loop would (drain, repair for a while, return)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fleetctl.remediate.budget import pools
from fleetctl.remediate.flap import Started
from fleetctl.remediate.hysteresis import Observation
from fleetctl.remediate.plan import (
    BUDGET,
    REPORTED,
    STOPPED,
    UNAVAILABLE,
    WAITING,
    HostHistory,
    Plan,
    Skipped,
    plan,
)
from fleetctl.remediate.policy import BudgetRule, Kind, Policy, StopRule, parse_policy
from fleetctl.validation import Size

POLICY = parse_policy("""\
hysteresis: {count: 3, span_s: 60}
flap_damping: {max_remediations: 2, window_s: 3600}
budgets:
  max_unavailable: [{scope: all, max: 10%}, {scope: rack, max: 1}]
  max_starts_per_hour: 4
fleet_stop: [{scope: all, fraction: 0.33}, {scope: rack, fraction: 0.33, min_hosts: 2}]
actions:
  reset_chip: {steps: [drain, reset_gpu, burn_in, undrain]}
  reboot: {steps: [drain, reboot, burn_in, undrain]}
  rma: {terminal: rma}
""", "policy.yaml")
INTERVAL = 30.0
HEALTHY: tuple[str, tuple[str, ...]] = ("healthy", ())
Health = Callable[[str, float, "Sim"], tuple[str, tuple[str, ...]]]
Fault = tuple[float, tuple[str, ...], float]  # from, actions, clears by itself at


def fleet(racks: int, per_rack: int) -> dict[str, str]:
    """host -> rack: h001.. in racks r01.."""
    return {f"h{r * per_rack + i + 1:03d}": f"r{r + 1:02d}" for r in range(racks) for i in range(per_rack)}


@dataclass
class Sim:
    """The remediation loop's bookkeeping, the way `fleetctl remediate --watch` keeps it: observations
    per host, the remediation history, the hosts out of service; a repair takes ``repair_s``."""

    racks: dict[str, str]
    policy: Policy = POLICY
    repair_s: float = 300.0
    terminal_s: float = float("inf")  # a quarantined host's return (hardware replaced): never by default
    keep: int = 20
    obs: dict[str, list[Observation]] = field(default_factory=dict)
    history: list[Started] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    returned: dict[str, float] = field(default_factory=dict)  # host -> when it last went back to service
    plans: list[Plan] = field(default_factory=list)

    def round(self, now: float, health: Health) -> Plan:
        for i, s in enumerate(self.history):
            takes = self.repair_s if s.kind == "repair" else self.terminal_s
            if s.ended_at is None and now >= s.at + takes:
                self.history[i] = Started(s.host, s.at, s.kind, ended_at=now)
                del self.unavailable[s.host]
                self.returned[s.host] = now
        for h in self.racks:
            status, actions = health(h, now, self)
            window = self.obs.setdefault(h, [])
            window.append(Observation(now, status, actions))
            del window[:-self.keep]
        hosts = [HostHistory(h, self.obs[h], {"rack": r}) for h, r in self.racks.items()]
        p = plan(self.policy, hosts, self.history, dict(self.unavailable), now)
        for a in p.actions:
            self.history.append(Started(a.host, now, a.remediation.value))
            self.unavailable[a.host] = "remediating" if a.remediation is Kind.REPAIR else "quarantined"
        self.plans.append(p)
        return p

    def run(self, until: float, health: Health, start: float = 0.0) -> None:
        t = start
        while t <= until:
            self.round(t, health)
            t += INTERVAL

    def starts(self) -> list[tuple[float, str, str]]:
        return [(s.at, s.host, s.kind) for s in self.history]

    def plan_at(self, t: float) -> Plan:
        return next(p for p in self.plans if p.at == t)


def skipped(p: Plan, host: str) -> Skipped:
    return next(s for s in p.skipped if s.host == host)


def fails_from(faults: dict[str, tuple[float, tuple[str, ...]]], until: float = float("inf")) -> Health:
    """Each faulty host unhealthy with its actions from its time on (until ``until``), until repaired."""
    def health(h: str, now: float, sim: Sim) -> tuple[str, tuple[str, ...]]:
        if h in faults and faults[h][0] <= now < until and sim.returned.get(h, -1.0) < faults[h][0]:
            return "unhealthy", faults[h][1]
        return HEALTHY
    return health


def test_a_chip_fails_and_stays_drained_after_hysteresis_then_returns():
    sim = Sim(fleet(3, 4))
    sim.run(1200.0, fails_from({"h003": (300.0, ("reset_chip",))}))
    assert sim.starts() == [(360.0, "h003", "repair")]  # K=3 observations, 300..360 = 60 s
    waiting = skipped(sim.plan_at(330.0), "h003")
    assert (waiting.kind, waiting.why) == (WAITING, "reset_chip: unhealthy 2 of 3 observations over 30s of "
                                                    "60s: waiting")
    action = sim.plan_at(360.0).actions[0]
    assert (action.host, action.action, action.remediation, action.since) == ("h003", "reset_chip",
                                                                              Kind.REPAIR, 300.0)
    assert action.steps == ("drain", "reset_gpu", "burn_in", "undrain")
    assert action.reason == "reset_chip; unhealthy 3 of 3 observations over 60s of 60s"
    # While it is out, it is left alone; nothing before the fault mentions it.
    assert skipped(sim.plan_at(390.0), "h003") == Skipped("h003", UNAVAILABLE, "already out of service "
                                                                                "(remediating)")
    assert all(not p.actions and not p.skipped for p in sim.plans if p.at < 300.0)
    assert not sim.unavailable and sim.returned == {"h003": 660.0}


def test_a_flapper_is_repaired_twice_then_quarantined():
    def flapper(h: str, now: float, sim: Sim) -> tuple[str, tuple[str, ...]]:
        # Fails at 600, and again 600 s after every return to service.
        fails_at = sim.returned[h] + 600.0 if h in sim.returned else 600.0
        return ("unhealthy", ("reboot",)) if h == "h002" and now >= fails_at else HEALTHY

    sim = Sim(fleet(2, 4))
    sim.run(4000.0, flapper)
    assert sim.starts() == [(660.0, "h002", "repair"), (1620.0, "h002", "repair"),
                            (2580.0, "h002", "quarantine")]
    q = sim.plan_at(2580.0).actions[0]
    assert q.steps == ("drain", "quarantine")
    assert q.reason == ("reboot; flapping: 2 remediations within 3600s (max 2): quarantined instead of "
                        "another repair")
    assert sim.unavailable == {"h002": "quarantined"}


def test_a_new_streak_starts_after_the_last_remediation_ended():
    def stubborn(h: str, now: float, sim: Sim) -> tuple[str, tuple[str, ...]]:
        # The repair does not help; while it reboots the host does not answer.
        if h != "h001":
            return HEALTHY
        return ("unreachable", ("unreachable",)) if h in sim.unavailable else ("unhealthy", ("reboot",))

    sim = Sim(fleet(1, 4))
    sim.run(600.0, stubborn)
    # Back at 360 and unhealthy at once: the unreachable minutes of its reboot do not make the new
    # streak, so it waits for three observations after its return (390, 420, 450).
    assert sim.starts()[:2] == [(60.0, "h001", "repair"), (450.0, "h001", "repair")]
    assert skipped(sim.plan_at(420.0), "h001").why == ("reboot: unhealthy 2 of 3 observations over 30s of "
                                                       "60s: waiting")


def test_a_third_of_a_rack_hot_at_once_stops_that_rack_only():
    hot = {h: (300.0, ("reset_chip",)) for h in ("h010", "h011", "h012")}  # r02: h010..h018
    hot["h001"] = (300.0, ("reboot",))  # an ordinary failure in r01
    sim = Sim(fleet(3, 9))
    sim.run(600.0, fails_from(hot, until=600.0))
    p = sim.plan_at(360.0)
    assert [(s.scope, s.value, s.unhealthy, s.total) for s in p.stops] == [("rack", "r02", 3, 9)]
    assert not p.fleet_stopped
    assert [a.host for a in p.actions] == ["h001"]
    assert skipped(p, "h010") == Skipped("h010", STOPPED, "reset_chip: rack=r02: 3 of 9 hosts unhealthy "
                                                          "(33%) >= 33%: automatic action stopped in "
                                                          "rack=r02; a person's call")
    assert sim.starts() == [(360.0, "h001", "repair")]
    # The cooling recovers at 600: the stop is gone with it.
    assert sim.plan_at(600.0).stops == []


def test_a_fleet_wide_event_stops_all_automatic_action():
    hosts = fleet(12, 10)
    bad = [h for i, h in enumerate(sorted(hosts)) if i % 3 == 0 or i == 1]  # 41, spread over every rack
    sim = Sim(hosts, policy=POLICY)
    sim.run(120.0, fails_from({h: (0.0, ("reset_chip",)) for h in bad}))
    p = sim.plans[-1]
    assert p.fleet_stopped and not p.actions and sim.history == []
    fleet_stop = p.stops[0]
    assert fleet_stop.message() == ("41 of 120 hosts unhealthy (34%) >= 33%: automatic action stopped; "
                                    "a person's call")
    assert {s.kind for s in p.skipped} == {STOPPED} and len(p.skipped) == 41
    assert skipped(p, bad[0]).why == f"reset_chip: {fleet_stop.message()}"
    doc = json.loads(json.dumps(p.to_dict()))
    assert doc["fleet_stopped"] is True
    assert doc["stops"][0] == {"scope": "all", "value": "all", "unhealthy": 41, "total": 120,
                               "fraction": 0.33, "message": fleet_stop.message()}


def test_quarantined_hosts_are_out_of_the_fleet_for_the_stop():
    hosts = fleet(1, 6)
    obs = {h: [Observation(t, "unhealthy", ("rma",)) for t in (0.0, 30.0, 60.0)] for h in ("h001", "h002")}
    histories = [HostHistory(h, obs.get(h, [Observation(60.0, "healthy")]), {"rack": "r01"}) for h in hosts]
    # Two of six unhealthy is a third: a stop. With one of them quarantined, 1 of 5 is not.
    assert [s.message()[:22] for s in plan(POLICY, histories, [], {}, 60.0).stops] == [
        "2 of 6 hosts unhealthy", "rack=r01: 2 of 6 hosts"]
    p = plan(POLICY, histories, [Started("h001", 0.0, "rma")], {"h001": "quarantined"}, 60.0)
    assert p.stops == []
    assert skipped(p, "h001").kind == UNAVAILABLE
    # It is now only the budget that holds h002 back (h001 is out of service in its rack).
    assert skipped(p, "h002") == Skipped("h002", BUDGET, "rma: waits: budget all 1/1")


def test_the_stop_needs_its_fraction_inclusive_and_its_minimum_of_hosts():
    def histories(racks: dict[str, str], bad: set[str]) -> list[HostHistory]:
        return [HostHistory(h, [Observation(t, "unhealthy" if h in bad else "healthy", ("reboot",) if h in bad
                                            else ()) for t in (0.0, 30.0, 60.0)], {"rack": r})
                for h, r in racks.items()]

    half = replace(POLICY, stops=(StopRule("rack", 0.5),))
    four = fleet(1, 4)
    stops = plan(half, histories(four, {"h001", "h002"}), [], {}, 60.0).stops
    assert [(s.unhealthy, s.total) for s in stops] == [(2, 4)]  # exactly the fraction: stopped
    assert plan(half, histories(four, {"h001"}), [], {}, 60.0).stops == []
    # One host of three is a third of the rack, but one host alone is never a fleet-wide event.
    three = fleet(1, 3)
    p = plan(POLICY, histories(three, {"h001"}), [], {}, 60.0)
    assert p.stops == [] and [a.host for a in p.actions] == ["h001"]
    lone = replace(POLICY, stops=(StopRule("rack", 0.33, min_hosts=1),))
    assert [s.label for s in plan(lone, histories(three, {"h001"}), [], {}, 60.0).stops] == ["rack=r01"]


def test_unknown_actions_are_reported_and_the_known_ones_still_act():
    hosts = fleet(1, 4)
    actions = {"h001": ("drain_fabric",), "h002": ("drain_fabric", "reset_chip"), "h003": ("check_cooling",),
               "h004": ()}
    histories = [HostHistory(h, [Observation(t, "unhealthy", actions[h]) for t in (0.0, 30.0, 60.0)],
                             {"rack": "r01"}) for h in hosts]
    one = replace(POLICY, stops=())  # four of four unhealthy: no stop for this test
    p = plan(one, histories, [], {}, 60.0)
    assert [a.host for a in p.actions] == ["h002"] and p.actions[0].action == "reset_chip"
    assert p.skipped == [
        Skipped("h001", REPORTED,
                'unknown action "drain_fabric" (a newer agent?): no policy entry, reported'),
        Skipped("h003", REPORTED, "check_cooling: no automatic action in the policy: reported"),
        Skipped("h004", REPORTED, "unhealthy, but no problem names an action: reported"),
    ]


def test_the_heaviest_remediation_wins_and_older_unhealthy_hosts_go_first():
    hosts = fleet(2, 2)
    # h003 has been unhealthy longer than h001; one start an hour is allowed.
    histories = [
        HostHistory("h001", [Observation(t, "unhealthy", ("reset_chip", "rma")) for t in (60.0, 90.0, 120.0)],
                    {"rack": "r01"}),
        HostHistory("h002", [Observation(120.0, "healthy")], {"rack": "r01"}),
        HostHistory("h003", [Observation(t, "unhealthy", ("reboot",)) for t in (0.0, 30.0, 60.0, 120.0)],
                    {"rack": "r02"}),
        HostHistory("h004", [Observation(120.0, "healthy")], {"rack": "r02"}),
    ]
    capped = replace(POLICY, max_starts_per_hour=1, stops=())
    p = plan(capped, histories, [], {}, 120.0)
    assert [(a.host, a.action) for a in p.actions] == [("h003", "reboot")]
    assert p.skipped == [Skipped("h001", BUDGET, "rma: waits: hourly cap 1/1")]
    # Of two actions that weigh the same, the first (the report's worst-first order) names the reason.
    same = parse_policy("actions: {check_hardware: {terminal: quarantine}, contact_support: {terminal: "
                        "quarantine}}", "p.yaml")
    twins = [HostHistory("h001", [Observation(t, "unhealthy", ("contact_support", "check_hardware"))
                                  for t in (0.0, 60.0, 120.0)])]
    chosen = plan(replace(same, stops=()), twins, [], {}, 120.0).actions
    assert [a.action for a in chosen] == ["contact_support"]
    assert len(hosts) == 4


def test_budgets_hold_over_a_long_random_sequence():
    """Property-style: many seeds, hosts failing at random and repaired over simulated days; after
    every round no rack and not the fleet is past max-unavailable, and no hour has more starts than
    the cap. The waits the budgets cause must actually happen, or the test proves nothing."""
    # Both limits bind: six racks of ten at two each could take twelve hosts, the fleet's 10% is six.
    policy = replace(POLICY, max_unavailable=(BudgetRule("all", Size(10, percent=True)),
                                              BudgetRule("rack", Size(2))), max_starts_per_hour=6)
    seen_waits: set[str] = set()
    total_starts = 0
    for seed in range(3):
        rng = random.Random(seed)
        racks = fleet(6, 10)
        faults: dict[str, Fault] = {}

        def health(h: str, now: float, sim: Sim, rng: random.Random = rng,
                   faults: dict[str, Fault] = faults) -> tuple[str, tuple[str, ...]]:
            fault = faults.get(h)
            if fault is not None and (sim.returned.get(h, -1.0) >= fault[0] or now >= fault[2]):
                del faults[h]  # repaired, or (what no policy acts on) gone by itself
                fault = None
            if fault is None and h not in sim.unavailable and rng.random() < 0.0006:
                action = rng.choice(["reset_chip", "reboot", "reboot", "rma", "check_cooling",
                                     "drain_fabric"])
                acts = action in ("reset_chip", "reboot", "rma")
                faults[h] = fault = (now, (action,), float("inf") if acts else now + rng.uniform(600, 7200))
            if fault is not None and rng.random() < 0.03:
                return "unreachable", ("unreachable",)
            return ("unhealthy", fault[1]) if fault is not None else HEALTHY

        sim = Sim(racks, policy=policy, repair_s=rng.choice([600.0, 1800.0]), terminal_s=4 * 3600.0)
        limits = {(r.scope, v): r.max.of(len(m)) for r in policy.max_unavailable
                  for v, m in pools({h: {"rack": racks[h]} for h in racks}, r.scope).items()}
        t = 0.0
        while t < 86400.0:
            p = sim.round(t, health)
            for (scope, value), limit in limits.items():
                out = [h for h in sim.unavailable if scope == "all" or racks[h] == value]
                assert len(out) <= limit, (seed, t, scope, value, out)
            last_hour = [s for s in sim.history if s.at > t - 3600.0]
            assert len(last_hour) <= policy.max_starts_per_hour, (seed, t)
            for a in p.actions:  # every start met the hysteresis
                assert t - a.since >= policy.hysteresis.span_s
            seen_waits |= {s.why.split(": waits: ")[1].rsplit(" ", 1)[0] for s in p.skipped
                           if s.kind == BUDGET}
            t += INTERVAL
        total_starts += len(sim.history)
    assert total_starts > 100
    assert {"budget all", "hourly cap"} <= seen_waits
    assert any(w.startswith("budget rack=") for w in seen_waits)
