"""``SafetyLayer``: wraps any :class:`~robotrl.hardware.robot.Robot` so that nothing a policy outputs reaches a
motor unchecked. Mocks and sims run this same layer (Polymetis' mock mode skips its safety checks; we don't).

Per command, in order: e-stop / state check, control-rate monitor, NaN/inf rejection, a fresh state reading (held
on a measured joint or end-effector excursion or a stale reading: ``limit_check.measured_violation``, also on
``get_state`` / ``get_observation``), gripper range, then step, velocity, acceleration and position limits
(``limit_check.MotionLimiter``). Targets are tracked as *commanded* positions (libfranka's ``q_c``), synced from the
driver at connect, hold and resume. A camera that fails to read holds the arm, then raises :class:`CameraError`.

**Clip or reject.** ``on_limit: clip`` (the default) clips a too-large step or an out-of-box target to the limit,
as SERL's ``clip_safety_box`` and LeRobot's ``max_relative_target`` do: a policy that pushes against a wall keeps
control of the other axes, and the arm never jerks to a stop because of a value a few mm too far.
``on_limit: reject`` holds and raises instead (for first runs of a new policy). A NaN/inf value is always
rejected: there is no meaningful clipped value for it. ``send_action`` returns what was actually sent.

Around the loop: a watchdog thread puts the arm in HOLD when no command arrived within ``watchdog_ms``; every
driver call runs on one driver thread with ``driver_timeout_ms``, so a hung bus gives a :class:`DriverError` in
bounded time and the robot goes to FAULT (nothing more is written); ``estop()`` (any thread, or a signal through
``estop_on_signal``) holds and latches until ``rearm()``; leaving the ``with`` block by an exception or Ctrl-C
holds, then disconnects. Every intervention is counted (``counts``) and logged (``events``, a list of dicts,
plus the ``robotrl.hardware.safety`` logger) with the joint/axis it concerned.
"""

from __future__ import annotations

import _thread
import logging
import queue
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from robotrl.hardware.kinematics import forward_kinematics_for
from robotrl.hardware.limit_check import MotionLimiter, bad_action, measured_violation
from robotrl.hardware.limits import SafetyLimits
from robotrl.hardware.obs_checks import CameraError, read_observation
from robotrl.hardware.robot import (
    Action,
    ActionMode,
    DriverError,
    EStopError,
    JointState,
    Observation,
    Robot,
    RobotError,
    RobotState,
    RobotStateError,
    UnsafeActionError,
    monotonic,
)

log = logging.getLogger(__name__)
COMMANDABLE = frozenset({RobotState.READY, RobotState.MOVING})
CONNECTED = frozenset({RobotState.READY, RobotState.MOVING, RobotState.HOLD})


class DriverCallTimeout(Exception):
    """A call on the :class:`DriverThread` did not return in time (distinct from a TimeoutError the driver raises)."""


class DriverThread:
    """One thread that runs every driver call, so that a hung call can be abandoned after a timeout.

    Cheaper than a one-worker ``ThreadPoolExecutor`` (no Future, no Condition per call): a request goes through a
    C ``SimpleQueue`` and the reply wakes the caller through one raw lock (measured in bench/control_loop.py).
    """

    def __init__(self, name: str = "robot-driver") -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
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

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """``fn(*args)`` on this thread; raises DriverCallTimeout after ``timeout`` s (the call keeps running there)."""
        done = _thread.allocate_lock()
        done.acquire()
        reply: list[tuple[bool, Any]] = []
        self._requests.put((fn, args, reply, done))
        if not done.acquire(timeout=timeout):
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


class ControlRateError(RobotError):
    """The control loop overran its period too many times in a row; the arm holds."""


class SafetyLayer(Robot):
    """A :class:`Robot` that checks every command against :class:`SafetyLimits` before the wrapped robot sees it.

    ``clock`` (default ``time.monotonic``) timestamps commands for the velocity limit, rate monitor and watchdog;
    tests pass a fake clock to step time exactly.
    """

    def __init__(
        self,
        robot: Robot,
        limits: SafetyLimits,
        clock: Callable[[], float] = monotonic,
        home_timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.inner = robot
        self.limits = limits
        self.name = f"safe({robot.name})"
        self.joint_names = robot.joint_names
        self.action_modes = robot.action_modes
        self.vendor_limits = robot.vendor_limits
        self.home_timeout_s = home_timeout_s
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.periods: deque[float] = deque(maxlen=100_000)  # seconds between consecutive commands
        self.hold_reason: str | None = None
        self._clock = clock
        self._lock = threading.RLock()
        self._executor: DriverThread | None = None
        self._watchdog: threading.Thread | None = None
        self._stop_watchdog = threading.Event()
        self._estopped = False
        self._overruns_in_row = 0
        self._last_cmd_t: float | None = None
        self._last_mode: ActionMode | None = None  # mode of the last command sent (a switch re-reads the targets)
        self._target_q = np.zeros(len(robot.joint_names))
        self._target_ee = np.zeros(3)
        self._frame_times: dict[str, float] = {}
        self._fk = forward_kinematics_for(robot)  # joint target -> end-effector position, None if unknown
        self._limiter = MotionLimiter(limits, robot.joint_names, self._fk)
        self.steps = 0

    # ------------------------------------------------------------------------------------------ bookkeeping
    @property
    def state(self) -> RobotState:
        return self.inner.state

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.inner.camera_names

    @property
    def estopped(self) -> bool:
        return self._estopped

    def _event(self, kind: str, level: int = logging.WARNING, **detail: Any) -> None:
        event = {"t": self._clock(), "step": self.steps, "kind": kind, **detail}
        self.events.append(event)
        self.counts[kind] += 1
        log.log(level, "%s %s: %s", self.name, kind, " ".join(f"{k}={v}" for k, v in detail.items()))

    # ------------------------------------------------------------------------------------------ driver thread
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn`` on the driver thread; a timeout marks the robot FAULT and raises DriverError."""
        if self._executor is None:
            self._executor = DriverThread()
        timeout = self.limits.driver_timeout_ms / 1000 if timeout is None else timeout
        try:
            return self._executor.call(fn, args, timeout)
        except DriverCallTimeout:
            self.inner.mark_fault()
            self._executor.close(wait=False)  # its thread is stuck in the driver; never submit to it again
            self._executor = None
            self._event("driver_timeout", logging.ERROR, call=what, timeout_ms=timeout * 1000)
            raise DriverError(f"{self.inner.name}: {what} did not return within {timeout * 1000:.0f} ms; "
                              "robot is in FAULT") from None
        except DriverError as exc:
            self._event("driver_error", logging.ERROR, call=what, error=str(exc))
            raise

    def _sync_targets(self) -> None:
        """Commanded targets := what the driver reports (its own target if it has one, else the measured pose)."""
        self._read_targets()
        self._last_cmd_t = None
        self._last_mode = None
        self._overruns_in_row = 0

    # ------------------------------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect the wrapped robot (on the driver thread), read its targets, start the watchdog."""
        with self._lock:
            self._call("connect", self.inner.connect, timeout=max(self.home_timeout_s, self.limits.driver_timeout_ms))
            self._sync_targets()
            self._event("connect", logging.INFO)
            self._stop_watchdog.clear()
            self._watchdog = threading.Thread(target=self._watch, name="robot-watchdog", daemon=True)
            self._watchdog.start()

    def disconnect(self) -> None:
        """Controlled stop (HOLD) if the robot can still take commands, then disconnect. Never raises for a
        failed hold; the port is closed in any case."""
        self._stop_watchdog.set()
        with self._lock:
            if self.inner.state in CONNECTED:
                try:
                    self._hold_now("stop", "controlled stop before disconnect")
                except RobotError as exc:
                    self._event("hold_failed", logging.ERROR, error=str(exc))
            if self.inner.state is not RobotState.DISCONNECTED:
                self._disconnect_inner()
            if self._executor is not None:
                self._executor.close(wait=True)  # idle (a stuck one was dropped in _call): returns at once
                self._executor = None
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=1.0)

    def _disconnect_inner(self) -> None:
        """Disconnect on the driver thread (GL contexts and serial ports belong to it), or on a fresh thread if that
        one is stuck in a hung call. The port counts as closed even if the driver's shutdown fails."""
        try:
            if self._executor is not None:
                self._call("disconnect", self.inner.disconnect)
            else:
                errors: list[Exception] = []

                def run() -> None:
                    try:
                        self.inner.disconnect()
                    except Exception as exc:
                        errors.append(exc)

                thread = threading.Thread(target=run, name="robot-disconnect", daemon=True)
                thread.start()
                thread.join(timeout=self.limits.driver_timeout_ms / 1000)
                if thread.is_alive():
                    raise DriverError(f"{self.inner.name}: disconnect timed out")
                if errors:
                    raise errors[0]
        except Exception as exc:
            self._event("disconnect_failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            self.inner._state = RobotState.DISCONNECTED  # we will not talk to it again either way
        self._event("disconnect", logging.INFO)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:  # any exception, KeyboardInterrupt (Ctrl-C) included
            self._event("shutdown", logging.ERROR, reason=exc_type.__name__, error=str(exc))
        self.disconnect()

    # ------------------------------------------------------------------------------------------ hold / e-stop
    def _hold_now(self, kind: str, detail: str, **extra: Any) -> None:
        """Put the arm in HOLD at its current position and log why."""
        self.hold_reason = f"{kind}: {detail}"
        self._event(kind, detail=detail, **extra)
        if self.inner.state in CONNECTED:
            self._call("hold", self.inner.hold)
            self._sync_targets()

    def hold(self) -> None:
        with self._lock:
            self._hold_now("hold", "requested")

    def resume(self) -> None:
        """Leave HOLD explicitly. Refused while the e-stop is latched (``rearm()`` first)."""
        with self._lock:
            if self._estopped:
                raise EStopError(f"{self.name}: e-stop engaged; call rearm() before resume()")
            self.inner.resume()
            self._sync_targets()
            self.hold_reason = None
            self._event("resume", logging.INFO)

    def estop(self, reason: str = "software") -> None:
        """Software e-stop, callable from any thread or a signal handler: hold and refuse commands until rearm()."""
        with self._lock:
            self._estopped = True
            if self.inner.state in CONNECTED:
                self._hold_now("estop", reason)
            else:
                self._event("estop", detail=reason, state=self.inner.state.value)

    def rearm(self) -> None:
        """Clear a latched e-stop and resume (the explicit re-arm a human makes after checking the scene)."""
        with self._lock:
            self._estopped = False
            self._event("rearm", logging.INFO)
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
                        self._hold_now("watchdog", f"no command for {age_ms} ms", age_ms=age_ms)
                    except RobotError as exc:
                        self._event("hold_failed", logging.ERROR, error=str(exc))

    # ------------------------------------------------------------------------------------------ observe
    def get_state(self) -> JointState:
        with self._lock:
            return self._check_measured(self._call("read state", self.inner.get_state))

    def get_observation(self) -> Observation:
        """The wrapped robot's observation; a measured state outside the limits (or too old) holds the arm, stale
        frames are counted (``stale_frame``, per camera), a camera read failure holds the arm and raises."""
        with self._lock:
            state, frames = self._call("observe", read_observation, self.inner)
            self._check_measured(state)
            if isinstance(frames, Exception):
                if self.inner.state in CONNECTED:
                    self._hold_now("camera_error", f"{type(frames).__name__}: {frames}")
                raise CameraError(f"{self.inner.name}: camera read failed ({type(frames).__name__}: {frames}); "
                                  "arm holds") from frames
            obs = Observation(state, frames)
            for cam, frame in obs.frames.items():
                if self._frame_times.get(cam) == frame.timestamp:
                    self._event("stale_frame", logging.INFO, camera=cam, age_ms=(obs.timestamp - frame.timestamp) * 1e3)
                self._frame_times[cam] = frame.timestamp
            return obs

    def _check_measured(self, state: JointState) -> JointState:
        """Hold on a measured joint past its limits, an end-effector excursion past the box, or a stale reading."""
        ee = self._target_ee if self._last_mode is not ActionMode.JOINT_DELTA else (
            None if self._fk is None else self._fk(self._target_q))
        found = measured_violation(state, self.limits, ee, self.joint_names, self._fk)
        if found is not None and self.inner.state in COMMANDABLE:
            kind, detail, extra = found
            self._hold_now(kind, detail, **extra)
        return state

    # ------------------------------------------------------------------------------------------ command
    def send_action(self, action: Action) -> Action:
        """Check ``action``, send the safe version, return what was sent. Raises (after holding the arm)
        UnsafeActionError, EStopError, RobotStateError, ControlRateError or DriverError."""
        with self._lock:
            self.steps += 1
            self._check_commandable()
            now = self._clock()
            self._monitor_rate(now)
            self._check_shape_and_finite(action)
            self._check_measured(self._call("read state", self.inner.get_state))  # a send-only loop is watched too
            self._check_commandable()  # again: that reading (or an e-stop meanwhile) may have held the arm
            if self._last_mode is not None and action.mode is not self._last_mode:
                self._read_targets()  # the new mode's target moved with the old mode's commands
            safe, tau = self._limit(action, self._clock())
            sent: Action = self._call("send", self._arrive, safe)
            # Track what the driver actually sent (it may round to servo steps or clip to its own range): tracking
            # the request instead lets rounding errors accumulate past the limits (found on the emulated SO-101 bus).
            if safe.mode is ActionMode.JOINT_DELTA:
                self._target_q = self._target_q + sent.delta
            else:
                self._target_ee = self._target_ee + sent.delta
            self._limiter.commit(safe.mode, sent.delta, tau)
            self._last_cmd_t = now
            self._last_mode = safe.mode
            return sent

    def _read_targets(self) -> None:
        """Targets := the driver's own commanded targets if it reports them, else the measured pose. A driver that
        streams one mode reports the measured pose for the other (FrankaRobot), so a mode switch re-reads them."""
        state: JointState = self._call("read state", self.inner.get_state)
        self._target_q = np.array(state.joint_target if state.joint_target is not None else state.joint_pos, float)
        ee = state.ee_target if state.ee_target is not None else state.ee_pos
        self._target_ee = np.array(ee, float) if ee is not None else np.full(3, np.nan)  # no ee mode without a pose

    def _check_commandable(self) -> None:
        if self._estopped:
            raise EStopError(f"{self.name}: e-stop engaged; call rearm() to re-enable commands")
        if self.inner.state not in COMMANDABLE:
            why = f" ({self.hold_reason}); call resume()" if self.inner.state is RobotState.HOLD else ""
            raise RobotStateError(f"{self.name}: cannot send an action in state {self.inner.state.value}{why}")

    def _monitor_rate(self, now: float) -> None:
        if self._last_cmd_t is None:
            return
        period = now - self._last_cmd_t
        self.periods.append(period)
        nominal = 1.0 / self.limits.control_hz
        if period <= self.limits.overrun_factor * nominal:
            self._overruns_in_row = 0
            return
        self._overruns_in_row += 1
        self._event("overrun", logging.INFO, period_ms=round(period * 1e3, 2), nominal_ms=round(nominal * 1e3, 2))
        if (in_row := self._overruns_in_row) >= self.limits.max_consecutive_overruns:
            self._hold_now("rate_fault", f"{in_row} overruns in a row")  # (the hold resets the counter)
            raise ControlRateError(f"{self.name}: control loop overran {in_row} periods in a row "
                                   f"(last {period * 1e3:.1f} ms, nominal {nominal * 1e3:.1f} ms); arm holds")

    def _reject(self, kind: str, message: str, **detail: Any) -> UnsafeActionError:
        self._hold_now(kind, message, **detail)
        return UnsafeActionError(f"{self.name}: {message}; arm holds")

    def _check_shape_and_finite(self, action: Action) -> None:
        found = bad_action(action, self.action_modes, self.joint_names, self.inner.name)
        if found is not None:
            raise self._reject(*found[:2], **found[2])

    def _arrive(self, action: Action) -> Action:
        """On the driver thread: the velocity limit counts time from here, when the command reaches the driver."""
        self._limiter.arrived(self._clock())
        return self.inner.send_action(action)

    def _limit(self, action: Action, now: float) -> tuple[Action, float]:
        """Gripper range, then ``hardware/limit_check.py``'s limits; clip or reject per ``on_limit``."""
        joint = action.mode is ActionMode.JOINT_DELTA
        plan = self._limiter.plan(action.mode, self._target_q if joint else self._target_ee,
                                  np.asarray(action.delta, dtype=np.float64), now, resynced=self._last_cmd_t is None)
        for stage in plan.stages:
            self._report(*stage)
        gripper = float(np.clip(action.gripper, 0.0, 1.0))
        self._report("gripper", ("gripper",), np.array([action.gripper]), np.array([gripper]), "command")
        return Action(action.mode, plan.delta, gripper), plan.tau

    def _report(self, kind: str, names: tuple[str, ...], requested: np.ndarray, applied: np.ndarray, what: str) -> None:
        changed = np.flatnonzero(np.abs(requested - applied) > 1e-12)
        if not changed.size:
            return
        if self.limits.on_limit == "reject":
            i = int(changed[0])
            raise self._reject(kind, f"{what} on {names[i]} = {requested[i]:.6g} exceeds its limit "
                               f"({applied[i]:.6g})", axis=names[i], requested=float(requested[i]))
        for i in changed:
            self._event(kind, logging.INFO, axis=names[i], requested=float(requested[i]), applied=float(applied[i]))

    # ------------------------------------------------------------------------------------------ homing
    def reset_to_home(self) -> None:
        with self._lock:
            if self._estopped:
                raise EStopError(f"{self.name}: e-stop engaged; call rearm() before reset_to_home()")
            self._call("reset to home", self.inner.reset_to_home, timeout=self.home_timeout_s)
            self._sync_targets()
            self.hold_reason = None
            self._event("home", logging.INFO)

    # The wrapped robot implements the driver hooks; this class overrides every public method instead.
    def _unused(self, *args: Any) -> Any:
        raise NotImplementedError("SafetyLayer delegates to the wrapped robot")

    _connect = _read_state = _send = _hold = _home = _disconnect = _unused
