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
driver call runs on one driver thread (``driver_thread.py``) with ``driver_timeout_ms``, so a hung bus gives a
:class:`DriverError` in bounded time and the robot goes to FAULT (nothing more is written); a hold gets the driver's
measured stop time instead (``stop_timeout_s``; franky's stop of a moving arm outlasts a send). ``estop()`` (any
thread, or a signal through ``estop_on_signal``) reaches a running homing move within one control period (the stop
request, ``safety_stop.py``), holds and latches until ``rearm()``; leaving the ``with`` block by an exception or
Ctrl-C stops a running motion, holds, then disconnects. Every intervention is counted (``counts``) and logged
(``events``, a list of dicts, plus the ``robotrl.hardware.safety`` logger) with the joint/axis it concerned; the
periods between commands reaching the driver give the achieved control rate (``control_rate()``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from robotrl.hardware.driver_thread import ArrivalRate, DriverCallTimeout, DriverThread, run_with_timeout
from robotrl.hardware.frame_map import IDENTITY, FrameMap
from robotrl.hardware.kinematics import forward_kinematics_for, pose_kinematics_for
from robotrl.hardware.limit_check import MotionLimiter, bad_action, measured_violation
from robotrl.hardware.limits import SafetyLimits
from robotrl.hardware.obs_checks import CameraError, read_observation
from robotrl.hardware.robot import (
    Action,
    ActionMode,
    DriverError,
    EStopError,
    JointState,
    MotionPreempted,
    Observation,
    Robot,
    RobotError,
    RobotState,
    RobotStateError,
    UnsafeActionError,
    monotonic,
)
from robotrl.hardware.safety_stop import CONNECTED, StopControls

from robotrl.safety_events import E, SafetyEvent

log = logging.getLogger(__name__)
COMMANDABLE = frozenset({RobotState.READY, RobotState.MOVING})
REARM_HINT = "check the arm and its surroundings, then call rearm()"
__all__ = ["ControlRateError", "DriverCallTimeout", "DriverThread", "SafetyLayer"]  # (DriverThread: bench, tests)


class ControlRateError(RobotError):
    """The control loop overran its period too many times in a row; the arm holds."""


class SafetyLayer(StopControls, Robot):
    """A :class:`Robot` that checks every command against :class:`SafetyLimits` before the wrapped robot sees it.

    ``clock`` (default ``time.monotonic``) timestamps commands for the velocity limit, rate monitor and watchdog;
    tests pass a fake clock to step time exactly. ``stop_timeout_s`` bounds holds (default: the driver's measured
    ``stop_timeout_s``); ``rearm_hint`` ends e-stop messages (a command-line workflow says what its user does).
    """

    def __init__(
        self,
        robot: Robot,
        limits: SafetyLimits,
        clock: Callable[[], float] = monotonic,
        home_timeout_s: float = 30.0,
        stop_timeout_s: float | None = None,
    ) -> None:
        super().__init__()
        self.inner = robot
        self.limits = limits
        self.name = f"safe({robot.name})"
        self.joint_names = robot.joint_names
        self.action_modes = robot.action_modes
        self.vendor_limits = robot.vendor_limits
        self.home_timeout_s = home_timeout_s
        self.stop_timeout_s = robot.stop_timeout_s if stop_timeout_s is None else stop_timeout_s
        self.rearm_hint = REARM_HINT
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.periods: deque[float] = deque(maxlen=100_000)  # seconds between consecutive commands
        self.arrival = ArrivalRate(clock)  # the same, measured when they reached the driver
        self.hold_reason: str | None = None
        self.frame_map: FrameMap = IDENTITY  # the training env's frame on this arm (make_robot sets robot.frame_map)
        self._clock = clock
        self._lock = threading.RLock()
        self._executor: DriverThread | None = None
        self._watchdog: threading.Thread | None = None
        self._stop_watchdog = threading.Event()
        self._estopped = False
        self._estop_reason = ""
        self._overruns_in_row = 0
        self._last_cmd_t: float | None = None
        self._last_mode: ActionMode | None = None  # mode of the last command sent (a switch re-reads the targets)
        self._last_reading: tuple[float, np.ndarray] | None = None  # (timestamp, joint velocities): joint_acc's
        self._target_q = np.zeros(len(robot.joint_names))
        self._target_ee = np.zeros(3)
        self._frame_times: dict[str, float] = {}
        self._fk = forward_kinematics_for(robot)  # joint target -> end-effector position, None if unknown
        # hand target -> joints (inverse kinematics of the pose model), for end-effector steps' joint limits
        self._limiter = MotionLimiter(limits, robot.joint_names, self._fk, pose_kinematics_for(robot))
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

    def _event(self, kind: SafetyEvent | str, level: int = logging.WARNING, **detail: Any) -> None:
        kind = SafetyEvent(kind)  # an unknown kind is a ValueError here, where it is emitted
        event = {"t": self._clock(), "step": self.steps, "kind": kind, **detail}
        self.events.append(event)
        self.counts[kind] += 1
        log.log(level, "%s %s: %s", self.name, kind, " ".join(f"{k}={v}" for k, v in detail.items()))

    # ------------------------------------------------------------------------------------------ driver thread
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn`` on the driver thread; a timeout marks the robot FAULT and raises DriverError. Ctrl-C while it
        runs asks the driver to stop a long motion and lets the call end (up to a stop time) before it propagates."""
        if self._executor is None:
            self._executor = DriverThread()
        timeout = self.limits.driver_timeout_ms / 1000 if timeout is None else timeout
        try:
            return self._executor.call(fn, args, timeout, on_interrupt=self.inner.request_stop,
                                       grace_s=self.stop_timeout_s)
        except DriverCallTimeout:
            self._abandon_driver(what, timeout)
            raise DriverError(f"{self.inner.name}: {what} did not return within {timeout * 1000:.0f} ms; "
                              "robot is in FAULT") from None
        except KeyboardInterrupt:
            if self._executor.stuck:  # the driver did not stop within its stop time either
                self._abandon_driver(what, self.stop_timeout_s)
            raise
        except DriverError as exc:
            self._event(E.DRIVER_ERROR, logging.ERROR, call=what, error=str(exc))
            raise

    def _abandon_driver(self, what: str, timeout: float) -> None:
        """The driver thread is stuck in a call: FAULT, and never submit to that thread again."""
        self.inner.mark_fault()
        if self._executor is not None:
            self._executor.close(wait=False)
            self._executor = None
        self._event(E.DRIVER_TIMEOUT, logging.ERROR, call=what, timeout_ms=timeout * 1000)

    def _send_on_driver(self, action: Action) -> Action:
        """The driver's send, on its thread, timestamped there: the velocity limit counts time from when a command
        reaches the driver (``_limiter.arrived``), and ``arrival`` gives the achieved control rate."""
        self.arrival.mark()
        self._limiter.arrived(self._clock())
        return self.inner.send_action(action)

    def control_rate(self) -> dict[str, Any]:
        """Requested vs achieved command rate, measured where commands reach the driver (:class:`ArrivalRate`)."""
        return self.arrival.summary(float(self.limits.control_hz))

    def _sync_targets(self) -> None:
        """Commanded targets := what the driver reports (its own target if it has one, else the measured pose)."""
        self._read_targets()
        self._last_cmd_t = None
        self.arrival.restart()
        self._last_mode = None
        self._overruns_in_row = 0
        self._last_reading = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect the wrapped robot (on the driver thread), read its targets, start the watchdog."""
        with self._lock:
            self._call("connect", self.inner.connect, timeout=max(self.home_timeout_s, self.limits.driver_timeout_ms))
            self._sync_targets()
            self._event(E.CONNECT, logging.INFO)
            self._stop_watchdog.clear()
            self._watchdog = threading.Thread(target=self._watch, name="robot-watchdog", daemon=True)
            self._watchdog.start()

    def disconnect(self) -> None:
        """Controlled stop (HOLD) if the robot can still take commands, then disconnect. Never raises for a
        failed hold (it is logged as ``hold_failed``); the port is closed in any case."""
        self._stop_watchdog.set()
        with self._lock:
            if self.inner.state in CONNECTED:
                try:
                    self._hold_now(E.STOP, "controlled stop before disconnect")
                except RobotError as exc:
                    self._event(E.HOLD_FAILED, logging.ERROR, error=str(exc))
            if self.inner.state is not RobotState.DISCONNECTED:
                self._disconnect_inner()
            if self._executor is not None:
                self._executor.close(wait=True)  # idle (a stuck one was dropped in _call): returns at once
                self._executor = None
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=1.0)

    def _disconnect_inner(self) -> None:
        """Disconnect on the driver thread (GL contexts and serial ports belong to it), or on a fresh thread if that
        one is stuck in a hung call. The port counts as closed even if the driver's shutdown fails. A driver may
        stop a motion first (franky), so this gets a stop time on top of the driver timeout."""
        timeout = self.limits.driver_timeout_ms / 1000 + self.stop_timeout_s
        try:
            if self._executor is not None:
                self._call("disconnect", self.inner.disconnect, timeout=timeout)
            else:
                run_with_timeout(self.inner.disconnect, timeout, "robot-disconnect")
        except Exception as exc:
            self._event(E.DISCONNECT_FAILED, logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            self.inner._state = RobotState.DISCONNECTED  # we will not talk to it again either way
        self._event(E.DISCONNECT, logging.INFO)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:  # any exception, KeyboardInterrupt (Ctrl-C) included
            self._event(E.SHUTDOWN, logging.ERROR, reason=exc_type.__name__, error=str(exc))
        self.disconnect()

    # ------------------------------------------------------------------------------------------ hold / e-stop
    def _hold_now(self, kind: SafetyEvent | str, detail: str, **extra: Any) -> None:
        """Put the arm in HOLD at its current position and log why. A stop gets the driver's stop time
        (``stop_timeout_s``), not ``driver_timeout_ms``: franky's stop of a moving arm takes longer than a send."""
        self.hold_reason = f"{kind}: {detail}"
        self._event(kind, detail=detail, **extra)
        if self.inner.state in CONNECTED:
            self._call("hold", self.inner.hold, timeout=self.stop_timeout_s)
            self._sync_targets()

    def hold(self) -> None:
        with self._lock:
            self._hold_now(E.HOLD, "requested")

    def resume(self) -> None:
        """Leave HOLD explicitly (in READY: nothing to leave). Refused while the e-stop is latched."""
        with self._lock:
            if self._estopped:
                raise EStopError(self._estop_message())
            self.inner.resume()
            self._sync_targets()
            self.hold_reason = None
            self._event(E.RESUME, logging.INFO)

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
                    cameras = {"camera": ",".join(frames.cameras)} if hasattr(frames, "cameras") else {}
                    self._hold_now(E.CAMERA_ERROR, f"{type(frames).__name__}: {frames}", **cameras)
                raise CameraError(f"{self.inner.name}: camera read failed ({type(frames).__name__}: {frames}); "
                                  "arm holds") from frames
            obs = Observation(state, frames)
            for cam, frame in obs.frames.items():
                if self._frame_times.get(cam) == frame.timestamp:
                    self._event(E.STALE_FRAME, logging.INFO, camera=cam, age_ms=(obs.timestamp - frame.timestamp) * 1e3)
                self._frame_times[cam] = frame.timestamp
            return obs

    def _joint_acc(self, state: JointState) -> np.ndarray | None:
        """The joints' acceleration between this reading and the last one at least half a control period older
        (None for the first reading after connect, hold or resume, or after a gap of over two periods)."""
        dq, t, period = np.asarray(state.joint_vel, np.float64), float(state.timestamp), 1.0 / self.limits.control_hz
        last = self._last_reading
        dt = None if last is None else t - last[0]
        if dt is not None and dt < 0.5 * period and dt >= 0:  # too close to tell noise from acceleration: keep it
            return None
        self._last_reading = (t, dq)
        return None if dt is None or dt > 2 * period else (dq - last[1]) / dt

    def _check_measured(self, state: JointState) -> JointState:
        """Hold on a measured joint past its limits, an end-effector excursion past the box, or a stale reading."""
        ee = self._target_ee if self._last_mode is not ActionMode.JOINT_DELTA else (
            None if self._fk is None else self._fk(self._target_q))
        found = measured_violation(state, self.limits, ee, self.joint_names, self._fk,
                                   ee_mode=self._last_mode is ActionMode.EE_DELTA, joint_acc=self._joint_acc(state))
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
            state = self._check_measured(self._call("read state", self.inner.get_state))  # send-only loops too
            self._check_commandable()  # again: that reading (or an e-stop meanwhile) may have held the arm
            if self._last_mode is not None and action.mode is not self._last_mode:
                self._read_targets()  # the new mode's target moved with the old mode's commands
            safe, tau = self._limit(action, self._clock(), state.joint_pos)
            # a mode switch makes a driver stop the running motion first (franky): a send plus a stop
            switch = self._last_mode is not None and safe.mode is not self._last_mode
            timeout = self.limits.driver_timeout_ms / 1000 + (self.stop_timeout_s if switch else 0.0)
            sent: Action = self._call("send", self._send_on_driver, safe, timeout=timeout)
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
            raise EStopError(self._estop_message())
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
        self._event(E.OVERRUN, logging.INFO, period_ms=round(period * 1e3, 2), nominal_ms=round(nominal * 1e3, 2))
        if (in_row := self._overruns_in_row) >= self.limits.max_consecutive_overruns:
            self._hold_now(E.RATE_FAULT, f"{in_row} overruns in a row")  # (the hold resets the counter)
            raise ControlRateError(f"{self.name}: control loop overran {in_row} periods in a row "
                                   f"(last {period * 1e3:.1f} ms, nominal {nominal * 1e3:.1f} ms); arm holds")

    def _reject(self, kind: str, message: str, **detail: Any) -> UnsafeActionError:
        self._hold_now(kind, message, **detail)
        return UnsafeActionError(f"{self.name}: {message}; arm holds")

    def _check_shape_and_finite(self, action: Action) -> None:
        found = bad_action(action, self.action_modes, self.joint_names, self.inner.name)
        if found is not None:
            raise self._reject(*found[:2], **found[2])

    def _limit(self, action: Action, now: float, measured_q: np.ndarray) -> tuple[Action, float]:
        """Gripper range, then ``hardware/limit_check.py``'s limits; clip or reject per ``on_limit``."""
        joint = action.mode is ActionMode.JOINT_DELTA
        plan = self._limiter.plan(action.mode, self._target_q if joint else self._target_ee,
                                  np.asarray(action.delta, dtype=np.float64), now, resynced=self._last_cmd_t is None,
                                  measured_q=measured_q)
        for stage in plan.stages:
            self._report(*stage)
        gripper = float(np.clip(action.gripper, 0.0, 1.0))
        self._report(E.GRIPPER, ("gripper",), np.array([action.gripper]), np.array([gripper]), "command")
        return Action(action.mode, plan.delta, gripper), plan.tau

    def _report(self, kind: SafetyEvent, names: tuple[str, ...], requested: np.ndarray, applied: np.ndarray,
                what: str) -> None:
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
        """Home the arm (bounded by ``home_timeout_s``). An e-stop meanwhile stops it within one control period
        (EStopError; the arm holds), as does Ctrl-C or :meth:`stop_motion` (MotionPreempted / KeyboardInterrupt)."""
        with self._lock:
            self.inner.clear_stop()  # before the latch check: an estop() from here on preempts this homing
            if self._estopped:
                raise EStopError(self._estop_message())
            try:
                self._call("reset to home", self.inner.reset_to_home, timeout=self.home_timeout_s)
            except MotionPreempted:
                self._sync_targets()
                if self._estopped:
                    raise EStopError(self._estop_message() + " (homing stopped)") from None
                raise
            self._sync_targets()
            self.hold_reason = None
            self._event(E.HOME, logging.INFO)

    # The wrapped robot implements the driver hooks; this class overrides every public method instead.
    def _unused(self, *args: Any) -> Any:
        raise NotImplementedError("SafetyLayer delegates to the wrapped robot")

    _connect = _read_state = _send = _hold = _home = _disconnect = _unused
