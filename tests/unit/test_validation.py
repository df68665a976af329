"""Inputs several commands take, checked in one place: sizes, reasons, choices."""

from __future__ import annotations

import pytest

from fleetctl import provision
from fleetctl.errors import EXIT_USAGE, UsageError
from fleetctl.validation import Size, one_of, require_reason


def test_size_parsing() -> None:
    assert Size.parse("3", "--x").of(100) == 3
    assert Size.parse("10%", "--x").of(25) == 2
    assert Size.parse("10%", "--x").of(5) == 1  # never 0
    assert Size.parse(" 7 ", "--x").of(100) == 7  # around the value, spaces are no harm
    # Spaces inside and digits of other scripts (which \d would take) are typos to refuse.
    for bad in ("0", "-1", "x", "0%", "101%", "", "5 %", " 5 %", "\uff11", "\u0661", "1_0"):
        with pytest.raises(UsageError, match="--x"):
            Size.parse(bad, "--x")


@pytest.mark.parametrize("bad", ["0", "x", "150%"])
def test_drain_maintain_and_provision_refuse_a_size_in_the_same_words(bad: str) -> None:
    with pytest.raises(UsageError) as from_size:
        Size.parse(bad, "--batch")
    with pytest.raises(UsageError) as from_provision:
        provision.parse_batch(bad, 10)
    assert str(from_size.value) == str(from_provision.value)
    expected = f"--batch {bad!r}: expected a number of hosts N >= 1 or a percentage 1%..100%"
    assert str(from_size.value) == expected
    assert from_size.value.exit_code == EXIT_USAGE


def test_a_reason_is_required_and_kept_as_given() -> None:
    assert require_reason(" bad fan ") == " bad fan "
    for missing in (None, "", "   "):
        with pytest.raises(UsageError, match="a reason is required: --reason TEXT"):
            require_reason(missing)


def test_one_of_lists_the_choices() -> None:
    assert one_of("--sort", "name", ("status", "name")) == "name"
    with pytest.raises(UsageError, match=r"^--sort 'colour': expected one of status, name$"):
        one_of("--sort", "colour", ("status", "name"))


def test_scheduler_limits_count_what_the_tool_receives() -> None:
    from fleetctl.validation import MAX_ARG_BYTES, scheduler_input_problem

    # Slurm: quoting for the remote shell counts (each ' becomes 5 bytes), so does UTF-8
    quotes = "'" * (MAX_ARG_BYTES // 5)
    assert scheduler_input_problem("slurm", "h", "n1", "fleetctl:a: " + "x" * (MAX_ARG_BYTES // 5)) is None
    for reason in ("fleetctl:a: " + quotes, "é" * (MAX_ARG_BYTES // 2)):
        assert "too long for Slurm" in (scheduler_input_problem("slurm", "h", "n1", reason) or "")
    # the none scheduler writes the reason through stdin: no argument limit applies
    assert scheduler_input_problem("none", "h", "h", "x" * (2 * MAX_ARG_BYTES)) is None
    assert scheduler_input_problem("kubernetes", "h", "gpu-1.rack-2", "x" * 1000) is None
