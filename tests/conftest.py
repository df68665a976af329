"""What every test run needs, whichever folder it is started from."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts a background job with SIGINT ignored, and a process started
    # with it ignored passes that on to every child. The tests that stop `--watch` with Ctrl-C (SIGINT)
    # would then wait out their timeouts against a loop that never saw it. With Python's own handler
    # here, each child starts with SIGINT's default again, as it would from a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
