"""gc_paused / release_frozen: no collection inside the block, survivors frozen after it, and
cyclic garbage made inside collected once released (what health --watch does between rounds)."""

from __future__ import annotations

import gc
import os
import signal
import weakref

import pytest

from fleetctl.heap import gc_paused, release_frozen


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_the_block_pauses_collection_and_freezes_what_it_leaves() -> None:
    assert gc.isenabled()
    try:
        with gc_paused():
            assert not gc.isenabled()
            garbage = _Node()
            ref = weakref.ref(garbage)
            del garbage
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert ref() is not None  # frozen: the collector no longer looks at it
        release_frozen()
        assert gc.get_freeze_count() == 0
        assert ref() is None
    finally:
        gc.unfreeze()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


class _CtrlCInFinalizer:
    def __init__(self) -> None:
        self.me = self  # freed only by the collection in release_frozen

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_the_collection_is_raised_after_it_not_lost() -> None:
    # Python's own handler, whatever an earlier test in this process left installed
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with gc_paused():
            _CtrlCInFinalizer()
        with pytest.raises(KeyboardInterrupt):
            release_frozen()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGINT, before)
