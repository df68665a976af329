"""Remediation decisions as pure functions: what to do about unhealthy hosts, and when.

Nothing in the decision modules reads a clock, a file it was not handed, the network or the state
database: the caller (``fleetctl remediate``) passes the observations, the remediation history, the
hosts out of service and ``now``, and acts on the :class:`~fleetctl.remediate.plan.Plan` it gets
back. The same inputs always give the same plan, so a recorded sequence replays exactly
(docs/remediation.md).

- :mod:`.policy` — the policy file: problem action → remediation, hysteresis, flap damping,
  budgets, the fleet-wide stop; validated with one-line errors;
- :mod:`.hysteresis` — observations of one host → is it steadily unhealthy (K over T);
- :mod:`.flap` — remediation history of one host → quarantine instead of another repair;
- :mod:`.budget` — which eligible hosts may start now under max-unavailable and the hourly cap;
- :mod:`.plan` — the one decision function over all of them.

The loop that acts on the plans (``fleetctl remediate --apply/--watch``) is built on them:

- :mod:`.loop` — observe, plan, act; every step recorded before and after; resume after a kill;
- :mod:`.actions` — the steps on a real fleet through drain, playbooks, burn-in and undrain;
- :mod:`.lease_keeper` — one loop per state database (:mod:`fleetctl.state.remediation` holds the
  records and the lease).
"""
