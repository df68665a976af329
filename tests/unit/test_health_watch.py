"""``fleetctl health --watch`` ends on Ctrl-C even when Python loses the KeyboardInterrupt, and
outlives a source (Prometheus) that fails a round after a good one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from fleetctl.commands.health import _watch
from fleetctl.promsource import PrometheusError
from fleetctl.report import FleetReport, HealthView, HostHealth
from fleetctl.views.output import OutputFormat


@pytest.fixture(autouse=True)
def _python_handles_ctrl_c() -> Iterator[None]:
    """As in a terminal: a test run started in the background inherits SIGINT ignored, and the
    watch (rightly) leaves an ignored SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class _CtrlCInFinalizer:
    """Freed at once: Ctrl-C arrives while its finalizer runs, where Python prints the
    KeyboardInterrupt as "ignored" and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


# The "ignored" exception is the point of the test, not a fault in it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("as_json", [True, False])
def test_a_ctrl_c_lost_in_a_finalizer_still_ends_the_watch(as_json: bool,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rounds = 0

    def collect() -> FleetReport:
        nonlocal rounds
        rounds += 1
        if rounds > 3:
            raise AssertionError("the watch went on after Ctrl-C")
        _CtrlCInFinalizer()
        return FleetReport(generated_at=time.time(), source="agents", hosts=[])

    before = signal.getsignal(signal.SIGINT)
    code = _watch(collect, 0.01, HealthView(), fmt=OutputFormat.json if as_json else OutputFormat.table,
                  mode="table")
    assert rounds == 1 and code == 0
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    if as_json:
        assert capsys.readouterr().out.count('"schema"') == 1  # the round drawn before it stopped


def test_ctrl_c_while_waiting_ends_the_watch_at_once() -> None:
    rounds = 0

    def collect() -> FleetReport:
        nonlocal rounds
        rounds += 1
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # SIGALRM, turned into Ctrl-C below
        return FleetReport(generated_at=time.time(), source="agents", hosts=[])

    previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        started = time.monotonic()
        _watch(collect, 30.0, HealthView(), fmt=OutputFormat.json, mode="table")
        assert rounds == 1 and time.monotonic() - started < 10
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_watch_started_with_ctrl_c_ignored_leaves_it_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rounds = 0

    def collect() -> FleetReport:
        nonlocal rounds
        rounds += 1
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        if rounds == 2:
            raise KeyboardInterrupt  # ends the test's watch the way Ctrl-C would
        return FleetReport(generated_at=time.time(), source="agents", hosts=[])

    _watch(collect, 0.01, HealthView(), fmt=OutputFormat.json, mode="table")
    assert rounds == 2 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _rounds(*outcomes: str) -> tuple[list[str], Callable[[], FleetReport]]:
    """A collect that, round by round, returns a report ("ok"), fails as a Prometheus that is down does
    ("down"), or is stopped by Ctrl-C ("stop")."""
    done: list[str] = []

    def collect() -> FleetReport:
        outcome = outcomes[len(done)]
        done.append(outcome)
        if outcome == "down":
            raise PrometheusError("http://127.0.0.1:9: cannot query Prometheus: Connection refused")
        if outcome == "stop":
            raise KeyboardInterrupt
        return FleetReport(generated_at=time.time(), source="prometheus", hosts=[])

    return done, collect


@pytest.mark.parametrize("fmt", [OutputFormat.json, OutputFormat.yaml, OutputFormat.table])
def test_a_round_that_cannot_ask_prometheus_is_said_and_the_watch_goes_on(
        fmt: OutputFormat, capsys: pytest.CaptureFixture[str]) -> None:
    done, collect = _rounds("ok", "down", "down", "ok", "stop")
    assert _watch(collect, 0.01, HealthView(), fmt=fmt, mode="table") == 0
    assert done == ["ok", "down", "down", "ok", "stop"]
    out, err = capsys.readouterr()
    said = (err if fmt is not OutputFormat.table else out).splitlines()
    failed = [line for line in said if "round failed" in line]
    assert len(failed) == 2 and all("Connection refused" in line and "next try in 0.01s" in line
                                    for line in failed)
    if fmt is OutputFormat.json:  # stdout: one document per good round, nothing else
        assert [line[:10] for line in out.splitlines()] == ['{"schema":'] * 2
    if fmt is OutputFormat.yaml:
        assert out.count("---") == 2 and "round failed" not in out


def test_the_first_round_failing_is_the_commands_failure() -> None:
    done, collect = _rounds("down", "ok")
    with pytest.raises(PrometheusError, match="Connection refused"):
        _watch(collect, 0.01, HealthView(), fmt=OutputFormat.json, mode="table")
    assert done == ["down"]


def test_a_viewed_watch_shows_each_rounds_notes_with_that_round(capsys: pytest.CaptureFixture[str]) -> None:
    # What the source says of a round (rules missing, a clock ahead, a partial answer) is shown with the
    # round it was said of, and not again with the next; a failed round shows its own.
    notes: list[str] = []
    said = {0: ["rules missing"], 2: ["clock ahead"]}
    done, collect_or_fail = _rounds("ok", "ok", "down", "ok", "stop")

    def collect() -> FleetReport:
        notes.extend(said.get(len(done), []))
        return collect_or_fail()

    assert _watch(collect, 0.01, HealthView(), fmt=OutputFormat.table, mode="table", notes=notes) == 0
    out, err = capsys.readouterr()
    rounds = out.split("--- ")[1:]
    assert len(rounds) == 4 and err == ""
    assert ["rules missing" in r for r in rounds] == [True, False, False, False]
    assert ["clock ahead" in r for r in rounds] == [False, False, True, False]
    assert "round failed" in rounds[2]


def test_a_first_round_that_fails_after_saying_something_says_it_on_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The rules missing, then the slow fallback past its deadline: the line that explains the failure
    # is not lost with the round that was never drawn.
    notes: list[str] = []

    def collect() -> FleetReport:
        notes.append("no fleetctl-report recording rules")
        raise PrometheusError("no answer within the 25s deadline")

    with pytest.raises(PrometheusError):
        _watch(collect, 0.01, HealthView(), fmt=OutputFormat.table, mode="table", notes=notes)
    assert capsys.readouterr().err == "fleetctl health: no fleetctl-report recording rules\n"


@pytest.mark.parametrize("output", [[], ["--json"], ["-o", "yaml"]])
def test_health_watch_routes_the_sources_notes_by_how_rounds_are_shown(
        output: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # As a view: in the round's view, stderr quiet. As documents: on stderr, stdout documents only.
    from typer.testing import CliRunner

    from fleetctl.cli import app
    from fleetctl.commands import health
    from fleetctl.promsource import _stderr

    def collector(*_args: object, notice: Callable[[str], None] | None = None,
                  **_kwargs: object) -> tuple[Callable[[], FleetReport], list[object]]:
        rounds: list[int] = []

        def collect() -> FleetReport:
            rounds.append(1)
            if len(rounds) > 1:
                raise KeyboardInterrupt
            (notice or _stderr)("the server's clock is 9 s ahead")
            return FleetReport(generated_at=time.time(), source="prometheus", hosts=[])

        return collect, []

    monkeypatch.setattr(health, "_collector", collector)
    result = CliRunner().invoke(app, ["health", "--source", "prometheus", "--prometheus-url",
                                      "http://127.0.0.1:9", "--watch", "0.1", *output])
    assert result.exit_code == 0, result.output
    documents = bool(output)
    assert ("clock is 9 s ahead" in result.stdout) is not documents
    assert ("clock is 9 s ahead" in result.stderr) is documents


def test_ctrl_c_before_any_round_is_shown_cancels_rather_than_says_all_healthy() -> None:
    done, collect = _rounds("stop")
    with pytest.raises(KeyboardInterrupt):  # the one-shot report's way out: 130, never exit 0
        _watch(collect, 0.01, HealthView(), fmt=OutputFormat.json, mode="table")
    assert done == ["stop"]


class _CtrlCMidDocument(FleetReport):
    """A report whose JSON is interrupted by Ctrl-C between two of its pieces, as a 100,000-host
    document written over seconds would be."""

    def json_chunks(self, *args: object, **kwargs: object) -> Iterator[bytes]:  # type: ignore[override]
        for i, piece in enumerate(super().json_chunks(*args, per_chunk=1)):  # type: ignore[arg-type]
            if i == 2:
                os.kill(os.getpid(), signal.SIGINT)
            yield piece


def test_ctrl_c_while_a_document_is_written_ends_the_watch_after_it_whole(
        capsys: pytest.CaptureFixture[str]) -> None:
    from fleetctl.report import HostRow

    hosts = [HostRow(f"h{i}", "127.0.0.1", 9400, (), HostHealth.UNHEALTHY) for i in range(5)]
    rounds: list[int] = []

    def collect() -> FleetReport:
        rounds.append(1)
        return _CtrlCMidDocument(generated_at=time.time(), source="agents", hosts=list(hosts))

    code = _watch(collect, 0.01, HealthView(), fmt=OutputFormat.json, mode="table")
    out = capsys.readouterr().out
    assert rounds == [1] and code == 1  # the round written is the one whose code is returned
    lines = out.splitlines()
    assert len(lines) == 1
    assert [h["name"] for h in json.loads(lines[0])["hosts"]] == [f"h{i}" for i in range(5)]


def test_a_watched_summary_as_json_is_one_document_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    _, collect = _rounds("ok", "ok", "stop")
    assert _watch(collect, 0.01, HealthView(), fmt=OutputFormat.json, mode="summary") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["schema"] for line in lines)


def test_the_notes_of_a_round_that_ends_the_watch_are_said_after_the_view_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # On a terminal, a line written while Live runs is erased by its last redraw.
    from fleetctl.commands import health

    events: list[str] = []

    def drawer(stack: contextlib.ExitStack, *_args: object, **_kwargs: object) -> Callable[..., None]:
        stack.callback(events.append, "view closed")
        return lambda *_a, **_k: events.append("drawn")

    monkeypatch.setattr(health, "_watch_drawer", drawer)
    monkeypatch.setattr(health, "_say_on_stderr", lambda lines: events.append(f"said {list(lines or ())}"))
    notes: list[str] = []
    done, collect_or_stop = _rounds("ok", "stop")

    def collect() -> FleetReport:
        if len(done) == 1:
            notes.append("clock ahead")
        return collect_or_stop()

    assert _watch(collect, 0.01, HealthView(), fmt=OutputFormat.table, mode="table", notes=notes) == 0
    assert events == ["drawn", "view closed", "said ['clock ahead']"]
