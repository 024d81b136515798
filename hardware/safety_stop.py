"""E-stop, watchdog and the stop that reaches a moving arm: the part of :class:`~robotrl.hardware.safety.SafetyLayer`
that must work while another thread is in the middle of a motion (a mixin; ``SafetyLayer`` supplies the state).

Why not simply take the layer's lock: ``reset_to_home`` holds it (and the single driver thread) for the whole homing
move, so an ``estop()`` used to wait until homing had ended (5.7 s and 1 rad more on franky-sim, issue 23). Here a stop
first sets the e-stop latch and the robot's stop request (no lock), which a long motion checks every control period
(``Robot._pause``; franky's homing polls it between joins); the motion ends, releases the lock, and the hold runs.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from robotrl.hardware.robot import RobotError, RobotState

from robotrl.safety_events import E, SafetyEvent

log = logging.getLogger("robotrl.hardware.safety")
CONNECTED = frozenset({RobotState.READY, RobotState.MOVING, RobotState.HOLD})


class StopControls:
    """``stop_motion``, ``estop``/``rearm``, ``estop_on_signal`` and the watchdog thread, for SafetyLayer."""

    inner: Any
    limits: Any
    stop_timeout_s: float
    rearm_hint: str
    name: str
    _lock: threading.RLock
    _estopped: bool
    _estop_reason: str
    _last_cmd_t: float | None
    _stop_watchdog: threading.Event

    if TYPE_CHECKING:  # SafetyLayer's
        def _event(self, kind: SafetyEvent | str, level: int = logging.WARNING, **detail: Any) -> None: ...

        def _hold_now(self, kind: SafetyEvent | str, detail: str, **extra: Any) -> None: ...

        def _clock(self) -> float: ...

        def resume(self) -> None: ...

    def stop_motion(self, kind: SafetyEvent | str, detail: str) -> None:
        """Hold the arm from any thread, even while another thread's long motion (homing) holds the lock: the
        motion is asked to stop (it ends within one control period), then the arm is held. If the lock is still
        taken after a driver timeout plus a stop time (a driver call that ignores the request), the robot is marked
        FAULT (``hold_failed``): nothing more is written. Never raises for a failed hold.

        The lock is taken on a helper thread that the caller waits for: on the main thread, a Ctrl-C landing as a
        timed ``acquire`` returned (before any ``try``) left the lock held for ever, so the watchdog blocked on it and
        an e-stop from another thread FAULTed the robot. A Ctrl-C now only ends the caller's wait; the hold goes on.
        (A signal handler on the thread that holds the lock re-enters it instead: that cannot block.)"""
        self.inner.request_stop()
        if self._lock._is_owned():
            with self._lock:  # (a C-level enter: no bytecode between taking the lock and the block's cleanup)
                self._hold_locked(kind, detail)
            return
        helper = threading.Thread(target=self._hold_when_free, args=(kind, detail), name="robot-stop", daemon=True)
        helper.start()
        helper.join()

    def _hold_when_free(self, kind: SafetyEvent | str, detail: str) -> None:
        wait_s = self.limits.driver_timeout_ms / 1000 + self.stop_timeout_s
        if not self._lock.acquire(timeout=wait_s):
            self.inner.mark_fault()
            self._event(E.HOLD_FAILED, logging.ERROR, error=f"{kind}: the driver did not stop within {wait_s:.2f} s; "
                        "robot is in FAULT")
            return
        try:
            self._hold_locked(kind, detail)
        finally:
            self._lock.release()

    def _hold_locked(self, kind: SafetyEvent | str, detail: str) -> None:
        try:
            if self.inner.state in CONNECTED:
                self._hold_now(kind, detail)
            else:
                self._event(kind, detail=detail, state=self.inner.state.value)
        except RobotError as exc:
            self._event(E.HOLD_FAILED, logging.ERROR, error=str(exc))

    def _estop_message(self) -> str:
        return (f"{self.name}: e-stop engaged ({self._estop_reason}); the arm holds and takes no commands; "
                f"{self.rearm_hint}")

    def estop(self, reason: str = "software") -> None:
        """Software e-stop, callable from any thread or a signal handler: hold and refuse commands until rearm().

        It reaches the driver within one control period whatever holds the lock: the latch and the stop request are
        set first (a homing move checks it every period), then the hold runs once the motion has stopped."""
        self._estopped = True  # before the stop request: a motion started after this point is refused
        self._estop_reason = reason
        self.stop_motion(E.ESTOP, reason)

    def rearm(self) -> None:
        """Clear a latched e-stop and resume (the explicit re-arm a human makes after checking the scene); also
        after a reconnect (READY)."""
        with self._lock:
            self._estopped = False
            self._event(E.REARM, logging.INFO)
            self.resume()

    def estop_on_signal(self, signum: int = signal.SIGUSR1) -> Any:
        """Make ``signum`` trigger :meth:`estop` (main thread only); returns the previous handler."""
        return signal.signal(signum, lambda s, _frame: self.estop(f"signal {signal.Signals(s).name}"))

    def _watch(self) -> None:
        period = self.limits.watchdog_ms / 4000  # check 4x per watchdog window
        timeout = self.limits.watchdog_ms / 1000
        while not self._stop_watchdog.wait(period):
            with self._lock:
                last = self._last_cmd_t
                if self.inner.state is RobotState.MOVING and last is not None and self._clock() - last > timeout:
                    try:
                        age_ms = round((self._clock() - last) * 1000, 1)
                        self._hold_now(E.WATCHDOG, f"no command for {age_ms} ms", age_ms=age_ms)
                    except RobotError as exc:
                        self._event(E.HOLD_FAILED, logging.ERROR, error=str(exc))
