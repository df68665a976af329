"""The remediation policy file: the shipped default, what each form means, and every error as one line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fleet_agent.schema import Action

from fleetctl.errors import EXIT_USAGE
from fleetctl.remediate.policy import (
    REPORT,
    Hysteresis,
    Kind,
    PolicyError,
    default_policy,
    load_policy,
    parse_policy,
)
from fleetctl.validation import Size


def parse(text: str) -> object:
    return parse_policy(textwrap.dedent(text), "policy.yaml")


def test_default_policy_maps_the_agents_actions():
    p = default_policy()
    assert p.source == "default-policy.yaml"
    assert p.remediation("reset_chip").steps == ("drain", "reset_gpu", "burn_in", "undrain")
    assert p.remediation("reboot").steps == ("drain", "reboot", "burn_in", "undrain")
    assert p.remediation("rma").kind is Kind.RMA
    assert p.remediation("rma").steps == ("drain", "rma")
    assert p.remediation("check_hardware").kind is Kind.QUARANTINE
    assert p.remediation("check_cooling") == REPORT
    # Unreachable is its own entry, reported, with a longer hysteresis than the policy's.
    unreachable = p.remediation("unreachable")
    assert unreachable.kind is Kind.REPORT and unreachable.hysteresis == Hysteresis(5, 300.0)
    assert p.hysteresis == Hysteresis(3, 48.0)
    # `--watch 30`: the count's rounds (two intervals apart, a round 12 s late or early) meet the span,
    # so detection-to-drain is within interval x count + 1 s, not more rounds.
    assert (p.hysteresis.count - 1) * 30.0 - 12.0 >= p.hysteresis.span_s
    assert p.act_on == {"unhealthy", "unreachable"}
    assert [(r.scope, r.max) for r in p.max_unavailable] == [("all", Size(5, True)), ("rack", Size(1))]
    assert p.scope_keys() == ["rack"]
    # Every action the agent can send has an entry: nothing in the default is left to chance.
    assert {a.value for a in Action} <= set(p.actions)


def test_unknown_and_unlisted_actions_are_reported_never_an_error():
    p = parse("""\
        actions:
          reboot: {steps: [drain, reboot]}
        """)
    assert p.remediation("drain_fabric") == REPORT  # a newer agent's action
    assert p.remediation("reset_chip") == REPORT  # known, not listed
    assert p.remediation("reboot").kind is Kind.REPAIR
    # Sections left out take the defaults.
    assert p.hysteresis == Hysteresis() and p.max_starts_per_hour == 10


def test_full_policy_parses_every_field():
    p = parse("""\
        version: 1
        act_on: [unhealthy, unreachable, unknown]
        hysteresis: {count: 4, span_s: 90}
        flap_damping: {max_remediations: 2, window_s: 3600}
        budgets:
          max_unavailable: [{scope: all, max: 10%}, {scope: rack, max: 2}]
          max_starts_per_hour: 6
        fleet_stop: [{scope: all, fraction: 0.25}, {scope: row, fraction: 0.5, min_hosts: 3}]
        actions:
          reset_chip:
            steps: [drain, reset_gpu, reboot, burn_in, undrain]
            hysteresis: {count: 2}
          check_hardware: {terminal: quarantine}
          check_cooling: {report: true}
        """)
    assert p.act_on == {"unhealthy", "unreachable", "unknown"}
    assert p.hysteresis == Hysteresis(4, 90.0)
    assert (p.flap.max_remediations, p.flap.window_s) == (2, 3600.0)
    assert [(r.scope, str(r.max)) for r in p.max_unavailable] == [("all", "10%"), ("rack", "2")]
    assert p.max_starts_per_hour == 6
    assert [(s.scope, s.fraction, s.min_hosts) for s in p.stops] == [("all", 0.25, 2), ("row", 0.5, 3)]
    reset = p.remediation("reset_chip")
    assert p.hysteresis_for(reset) == Hysteresis(2, 120.0)  # own count, default span
    assert p.hysteresis_for(p.remediation("check_hardware")) == Hysteresis(4, 90.0)
    assert p.scope_keys() == ["rack", "row"]
    # Heavier remediations weigh more: rma > quarantine > reboot > reset.
    assert reset.weight > parse("actions: {reset_chip: {steps: [drain, reset_gpu]}}").remediation(
        "reset_chip").weight
    assert p.remediation("check_hardware").weight > reset.weight


BAD = [
    ("actions:\n  reboot:\n    steps: [drain, reboot, rebot, undrain]\n",
     'policy.yaml: actions.reboot.steps[2]: unknown step "rebot" (did you mean reboot?)'),
    ("actions:\n  rebot: {steps: [drain, reboot]}\n",
     "policy.yaml: actions.rebot: unknown action (did you mean reboot?)"),
    ("hysterisis: {count: 3}\n",
     "policy.yaml: hysterisis: unknown key (did you mean hysteresis?)"),
    ("hysteresis: {count: 0}\n",
     "policy.yaml: hysteresis.count: 0 is out of range: expected >= 1"),
    ("hysteresis: {count: 2.5}\n",
     "policy.yaml: hysteresis.count: expected an integer, got 2.5"),
    ("hysteresis: {span_s: -1}\n",
     "policy.yaml: hysteresis.span_s: -1 is out of range: expected >= 0"),
    ("hysteresis: {span_s: .nan}\n",
     "policy.yaml: hysteresis.span_s: expected a number, got nan"),
    ("flap_damping: {window_s: 0}\n",
     "policy.yaml: flap_damping.window_s: 0 is out of range: expected > 0"),
    ("budgets:\n  max_unavailable:\n    - {scope: rack, max: 0}\n",
     "policy.yaml: budgets.max_unavailable[0].max: 0: expected a number of hosts N >= 1 or a percentage "
     "1%..100%"),
    ("budgets:\n  max_unavailable:\n    - {scope: rack, max: '5 %'}\n",
     "policy.yaml: budgets.max_unavailable[0].max: '5 %': expected a number of hosts N >= 1 or a "
     "percentage 1%..100%"),
    ("budgets:\n  max_unavailable:\n    - {scope: rack}\n",
     "policy.yaml: budgets.max_unavailable[0]: missing max (N hosts or N%)"),
    ("budgets:\n  max_unavailable:\n    - {scope: rack, max: 1}\n    - {scope: rack, max: 2}\n",
     'policy.yaml: budgets.max_unavailable[1].scope: "rack" given twice'),
    ("budgets:\n  max_unavailable:\n    - {max: 1}\n",
     "policy.yaml: budgets.max_unavailable[0]: expected a mapping with a scope (all, or a group key such as "
     "rack)"),
    ("budgets: {max_starts_per_hour: true}\n",
     "policy.yaml: budgets.max_starts_per_hour: expected an integer, got True"),
    ("fleet_stop:\n  - {scope: all, fraction: 1.5}\n",
     "policy.yaml: fleet_stop[0].fraction: 1.5 is out of range: expected > 0 and <= 1"),
    ("fleet_stop:\n  - {scope: all, fracton: 0.3}\n",
     "policy.yaml: fleet_stop[0].fracton: unknown key (did you mean fraction?)"),
    ("fleet_stop: []\n",
     "policy.yaml: fleet_stop: expected a list of rules, got []"),
    ("act_on: [unhealty]\n",
     'policy.yaml: act_on[0]: "unhealty" is not a host state to act on (did you mean unhealthy?); expected '
     "some of degraded, unknown, error, unreachable, unhealthy"),
    ("act_on: [healthy]\n",
     "policy.yaml: act_on[0]: healthy hosts are never acted on"),
    ("version: 2\n",
     "policy.yaml: version: 2 is not supported (this fleetctl reads version 1)"),
    ("actions:\n  reboot: {steps: [reboot, burn_in, undrain]}\n",
     "policy.yaml: actions.reboot.steps[0]: the first step must be drain: no repair while the host runs "
     "work"),
    ("actions:\n  reboot: {steps: [drain, reboot, undrain]}\n",
     "policy.yaml: actions.reboot.steps[2]: undrain without burn_in before it: a repaired host goes back to "
     "work only after burn-in"),
    ("actions:\n  reboot: {steps: [drain, reboot, undrain, burn_in]}\n",
     "policy.yaml: actions.reboot.steps[2]: undrain must be the last step"),
    ("actions:\n  reboot: {steps: [drain, burn_in, reboot, undrain]}\n",
     "policy.yaml: actions.reboot.steps[1]: burn_in before reboot: burn-in tests the repaired host, so it "
     "comes after every repair step"),
    ("actions:\n  reboot: {steps: [drain, burn_in, undrain]}\n",
     "policy.yaml: actions.reboot.steps: no repair step (reset_gpu, reboot, reprovision); for none, use "
     "terminal: quarantine or report: true"),
    ("actions:\n  reboot: {steps: [drain, reboot, reboot]}\n",
     'policy.yaml: actions.reboot.steps[2]: step "reboot" given twice'),
    ("actions:\n  reboot: {steps: [drain, quarantine]}\n",
     'policy.yaml: actions.reboot.steps[1]: unknown step "quarantine" (a terminal: use terminal: instead '
     "of steps:)"),
    ("actions:\n  rma: {terminal: rmaa}\n",
     'policy.yaml: actions.rma.terminal: unknown terminal "rmaa" (did you mean rma?)'),
    ("actions:\n  rma: {terminal: rma, report: true}\n",
     "policy.yaml: actions.rma: expected exactly one of steps, terminal, report (got terminal, report)"),
    ("actions:\n  rma: {hysteresis: {count: 1}}\n",
     "policy.yaml: actions.rma: expected exactly one of steps, terminal, report"),
    ("actions:\n  monitor: {report: false}\n",
     "policy.yaml: actions.monitor.report: expected true, got False"),
    ("actions: [reboot]\n",
     "policy.yaml: actions: expected a mapping of action to remediation, got a list"),
    ("- just a list\n",
     "policy.yaml: expected a mapping, got a list"),
    ("",
     "policy.yaml: empty policy file"),
    ("actions:\n  reboot: {steps: [drain\n",
     "policy.yaml: line 3: not valid YAML: expected ',' or ']', but got '<stream end>'"),
]


@pytest.mark.parametrize(("text", "error"), BAD, ids=[e.split(": ", 2)[1] + f"-{i}" for i, (_, e) in
                                                      enumerate(BAD)])
def test_bad_policy_is_one_line_naming_file_and_field(text: str, error: str):
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "policy.yaml")
    assert exc.value.one_line() == error
    assert "\n" not in error
    assert exc.value.exit_code == EXIT_USAGE


def test_load_policy_names_the_path(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as exc:
        load_policy(missing)
    assert str(exc.value) == f"{missing}: cannot read the policy file: No such file or directory"
    good = tmp_path / "p.yaml"
    good.write_text("actions:\n  reboot: {steps: [drain, reboot, burn_in, undrain]}\n")
    assert load_policy(good).source == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: {max_starts_per_hour: 0}\n")
    with pytest.raises(PolicyError, match=rf"^{bad}: budgets.max_starts_per_hour: 0 is out of range"):
        load_policy(bad)


def test_the_example_in_the_docs_is_a_valid_policy():
    doc = (Path(__file__).parents[2] / "docs" / "remediation.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    p = parse_policy(example, "docs/remediation.md")
    assert p.remediation("reboot").steps == ("drain", "reboot", "burn_in", "undrain")
    assert p.hysteresis_for(p.remediation("unreachable")) == Hysteresis(5, 300.0)
