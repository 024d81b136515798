"""The thread every driver call of a :class:`~robotrl.hardware.safety.SafetyLayer` runs on, and its timeouts.

A hung vendor call cannot be killed from Python, only abandoned: running it on a thread of its own lets the caller
give up after a timeout (and mark the robot FAULT) instead of blocking the control loop. The same machinery bounds
``RobotEnv.step``/``reset`` (``robotrl.hardware.robot_env``).

Ctrl-C: the signal interrupts the *waiting* thread (the main one), never the driver call, which keeps running; so
the waiting side first asks the driver to stop (``on_interrupt``: the robot's stop request, which a homing motion
checks every control period), lets the call end within ``grace_s``, and only then re-raises KeyboardInterrupt.
Without that, the hold that follows a Ctrl-C queued behind a homing move that went on to the end (issue 23).
"""

from __future__ import annotations

import _thread
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np


class DriverCallTimeout(Exception):
    """A call on the :class:`DriverThread` did not return in time (distinct from a TimeoutError the driver raises)."""


class DriverThread:
    """One thread that runs every driver call, so that a hung call can be abandoned after a timeout.

    Cheaper than a one-worker ``ThreadPoolExecutor`` (no Future, no Condition per call): a request goes through a
    C ``SimpleQueue`` and the reply wakes the caller through one raw lock (measured in bench/control_loop.py).
    ``stuck`` is True once a call outlived its timeout (or the grace after a Ctrl-C): submit nothing more to it.
    """

    def __init__(self, name: str = "robot-driver") -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stuck = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            fn, args, reply, done = request
            try:
                reply.append((True, fn(*args)))
            except BaseException as exc:  # handed to the caller, who re-raises it
                reply.append((False, exc))
            done.release()

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float,
             on_interrupt: Callable[[], None] | None = None, grace_s: float = 0.0) -> Any:
        """``fn(*args)`` on this thread; raises DriverCallTimeout after ``timeout`` s (the call keeps running there).

        A KeyboardInterrupt while waiting calls ``on_interrupt`` (ask the driver to stop), waits up to ``grace_s``
        for the call to end, then propagates."""
        done = _thread.allocate_lock()
        done.acquire()
        reply: list[tuple[bool, Any]] = []
        self._requests.put((fn, args, reply, done))
        try:
            finished = done.acquire(timeout=timeout)
        except KeyboardInterrupt:
            # The signal can land after acquire took the lock (its handler runs at the next bytecode): the reply is
            # then already here, and waiting on our own lock would mark a driver that answered as stuck.
            if reply:
                raise
            if on_interrupt is not None:
                on_interrupt()
            if not done.acquire(timeout=grace_s):
                self.stuck = True
            raise
        if not finished:
            self.stuck = True
            raise DriverCallTimeout
        ok, value = reply[0]
        if ok:
            return value
        raise value

    def close(self, wait: bool) -> None:
        """Let the thread exit after its current call (``wait``: join it)."""
        self._requests.put(None)
        if wait:
            self._thread.join()


def run_with_timeout(fn: Callable[[], Any], timeout: float, name: str) -> None:
    """``fn()`` on a fresh daemon thread (the driver thread is stuck); raise its exception, or TimeoutError."""
    errors: list[Exception] = []

    def run() -> None:
        try:
            fn()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout=timeout)
    if thread.is_alive():
        raise TimeoutError(f"did not return within {timeout:.1f} s")
    if errors:
        raise errors[0]


class ArrivalRate:
    """The periods between commands *reaching the driver* (``mark`` runs on the driver thread just before the send):
    the achieved control rate, not the rate a loop scheduled (a scheduled 50 ms hid 57 ms at the driver, issue 23).
    ``restart`` after a hold, homing or resume, so those pauses are not periods."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: float | None = None
        self.periods: deque[float] = deque(maxlen=100_000)  # s

    def mark(self) -> None:
        now = self._clock()
        if self._last is not None:
            self.periods.append(now - self._last)
        self._last = now

    def restart(self) -> None:
        self._last = None

    def summary(self, requested_hz: float) -> dict[str, Any]:
        """``requested_hz``, ``achieved_hz`` (1 / the median period; None before two sends), period p50/p99 in ms."""
        periods = np.asarray(self.periods, dtype=np.float64) * 1e3
        if not periods.size:
            return {"requested_hz": requested_hz, "achieved_hz": None, "period_ms_p50": None, "period_ms_p99": None,
                    "periods": 0}
        p50 = float(np.percentile(periods, 50))
        return {"requested_hz": requested_hz, "achieved_hz": round(1000.0 / p50, 3) if p50 > 0 else None,
                "period_ms_p50": round(p50, 3), "period_ms_p99": round(float(np.percentile(periods, 99)), 3),
                "periods": int(periods.size)}
