"""headrace._gcpause: the collector is off inside a pause, back on after the last overlapping one
(threads included), and left off when the application had turned it off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace._gcpause import gc_paused


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_off_inside_on_after_even_when_raising() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still runs
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError
    assert gc.isenabled()


def test_an_application_that_turned_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_pauses_overlapping_across_threads() -> None:
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with gc_paused():
            entered.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    t.start()
    entered.wait(10)
    with gc_paused():
        pass
    assert not gc.isenabled()  # the other thread's pause goes on
    leave.set()
    t.join(10)
    assert gc.isenabled()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=30), st.booleans())
def test_any_nesting_restores_the_state_it_found(opens: list[bool], enabled: bool) -> None:
    """A random sequence of enters (True) and exits (False, when one is open) of nested pauses: the
    collector is off while any is open, and as it was before once all are closed."""
    (gc.enable if enabled else gc.disable)()
    stack = []
    for o in opens:
        if o:
            p = gc_paused()
            p.__enter__()
            stack.append(p)
        elif stack:
            stack.pop().__exit__(None, None, None)
        assert gc.isenabled() == (enabled and not stack)
    while stack:
        stack.pop().__exit__(None, None, None)
    assert gc.isenabled() == enabled
