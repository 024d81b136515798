"""The driver thread under Ctrl-C: a signal that lands just after the call returned is not a stuck driver."""

from __future__ import annotations

import _thread
import time
from types import SimpleNamespace

import pytest
from robotrl.hardware import driver_thread
from robotrl.hardware.driver_thread import DriverThread


class InterruptedLock:
    """A lock whose ``n``-th acquire raises KeyboardInterrupt, ``after`` it succeeded or before it took the lock.

    ``after=True`` is what CPython does when SIGINT lands while ``acquire`` returns: the handler runs at the next
    bytecode, inside the caller's try, with the lock already taken."""

    def __init__(self, n: int, after: bool) -> None:
        self._lock = _thread.allocate_lock()
        self._left, self._after = n, after

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._left -= 1
        if self._left == 0 and not self._after:
            raise KeyboardInterrupt
        got = self._lock.acquire(blocking, timeout)
        if self._left == 0 and got:
            raise KeyboardInterrupt
        return got

    def release(self) -> None:
        self._lock.release()


def interrupt_the_wait(monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    # acquire 1: the caller takes the fresh lock; acquire 2: its wait for the reply, which Ctrl-C interrupts
    monkeypatch.setattr(driver_thread, "_thread", SimpleNamespace(allocate_lock=lambda: InterruptedLock(2, after)))


def test_ctrl_c_right_after_the_call_returned_is_not_a_stuck_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_the_wait(monkeypatch, after=True)
    stops: list[str] = []
    thread = DriverThread()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still propagates
        thread.call(lambda: "sent", (), timeout=5.0, on_interrupt=lambda: stops.append("stop"), grace_s=2.0)
    assert time.monotonic() - start < 1.0  # no wait for a reply that already came
    assert not thread.stuck  # else the layer FAULTs a driver that answered (seen in CI: driver_timeout, no hold)
    assert stops == []  # nothing is running to stop
    monkeypatch.undo()
    assert thread.call(lambda: 7, (), timeout=5.0) == 7  # the same thread serves the hold that follows
    thread.close(wait=True)


def test_ctrl_c_during_a_running_call_asks_it_to_stop_and_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_the_wait(monkeypatch, after=False)
    stop_request = _thread.allocate_lock()
    stop_request.acquire()
    stops: list[str] = []

    def request_stop() -> None:
        stops.append("stop")
        stop_request.release()

    thread = DriverThread()
    with pytest.raises(KeyboardInterrupt):
        thread.call(stop_request.acquire, (), timeout=5.0, on_interrupt=request_stop, grace_s=2.0)
    assert stops == ["stop"] and not thread.stuck  # the motion honoured the stop within the grace
    thread.close(wait=True)


def test_ctrl_c_during_a_call_that_ignores_the_stop_marks_the_thread_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_the_wait(monkeypatch, after=False)
    never = _thread.allocate_lock()
    never.acquire()
    thread = DriverThread()
    with pytest.raises(KeyboardInterrupt):
        thread.call(never.acquire, (), timeout=5.0, on_interrupt=lambda: None, grace_s=0.2)
    assert thread.stuck
    never.release()
