"""The ``Robot`` interface every arm implements (modelled on LeRobot's ``Robot``, with ros2_control's explicit states).

A driver subclasses :class:`Robot` and implements the underscored hooks (``_connect``, ``_read_state``, ``_send``,
``_hold``, ``_home``, ``_disconnect``); the base class owns the state machine, so every arm refuses a command while
disconnected or faulted in the same way, and a driver exception always moves the arm to ``FAULT``.  Policies never
talk to a driver directly: :class:`robotrl.hardware.safety.SafetyLayer` wraps it (``make_robot`` does that).

Units are explicit in every name: joint positions in rad, velocities in rad/s, end-effector positions in m,
gripper command in [0, 1] (0 = open, 1 = closed), gripper width in m, timestamps from ``time.monotonic()`` in s.
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.frame_map import IDENTITY, FrameMap

from robotrl.errors import ConfigError, RobotRLError

_log = logging.getLogger(__name__)


# what make_robot reads for every robot before its driver's from_config sees the rest
SHARED_KEYS = ("name", "limits", "frame_map", "stop_timeout_ms", "cameras", "max_camera_skew_ms")


def refuse_unknown_keys(cfg: dict[str, Any], robot: str, own: set[str]) -> None:
    """Raise ConfigError naming the first key of ``cfg`` that is neither the driver's (``own``) nor shared."""
    unknown = sorted(set(cfg) - own)
    if unknown:
        raise ConfigError(f"unknown key robot.{unknown[0]} for robot={robot}; valid: {sorted(own | set(SHARED_KEYS))}")


# ------------------------------------------------------------------------------------------------ errors
class RobotError(RobotRLError):
    """Base class of robot errors (the CLI prints them as one line)."""


class RobotStateError(RobotError):
    """A call is not allowed in the robot's current state (e.g. a command while disconnected, in HOLD or FAULT)."""


class DriverError(RobotError):
    """The driver failed (timeout, lost connection, exception in the vendor SDK); the robot is now in FAULT."""


class UnsafeActionError(RobotError):
    """The safety layer rejected an action (NaN/inf, or a limit violation with ``on_limit=reject``); the arm holds."""


class EStopError(RobotError):
    """The software e-stop is engaged; commands are refused until ``rearm()`` is called."""


class MotionPreempted(RobotError):
    """A stop request (e-stop, Ctrl-C, a bounded env call) ended a long motion such as homing early; the arm holds."""


# ------------------------------------------------------------------------------------------------ states
class RobotState(enum.Enum):
    """Explicit states (ros2_control's lifecycle, reduced to what an arm policy loop needs)."""

    DISCONNECTED = "disconnected"  # no link; only connect() is allowed
    READY = "ready"  # connected, motors holding, accepting commands
    MOVING = "moving"  # executing a stream of commands
    HOLD = "hold"  # stopped at the current position (watchdog, e-stop, rejected action); resume() is explicit
    FAULT = "fault"  # a driver error: nothing more is written; only disconnect() is allowed


LEGAL_TRANSITIONS: dict[RobotState, frozenset[RobotState]] = {
    RobotState.DISCONNECTED: frozenset({RobotState.READY, RobotState.FAULT}),
    RobotState.READY: frozenset({RobotState.MOVING, RobotState.HOLD, RobotState.FAULT, RobotState.DISCONNECTED}),
    RobotState.MOVING: frozenset(
        {RobotState.MOVING, RobotState.READY, RobotState.HOLD, RobotState.FAULT, RobotState.DISCONNECTED}
    ),
    RobotState.HOLD: frozenset({RobotState.HOLD, RobotState.READY, RobotState.FAULT, RobotState.DISCONNECTED}),
    RobotState.FAULT: frozenset({RobotState.FAULT, RobotState.DISCONNECTED}),
}


# ------------------------------------------------------------------------------------------------ actions
class ActionMode(enum.Enum):
    """How an action's ``delta`` is read. Both are relative to the last *commanded* target (as libfranka's q_c)."""

    JOINT_DELTA = "joint_delta"  # delta: (n_joints,) rad per step
    EE_DELTA = "ee_delta"  # delta: (3,) m per step, x y z in the robot base frame


@dataclass(frozen=True)
class Action:
    """One command: a position delta in ``mode``'s units plus a gripper command in [0, 1] (0 open, 1 closed)."""

    mode: ActionMode
    delta: np.ndarray
    gripper: float = 0.0

    @classmethod
    def ee(cls, dxyz_m: Any, gripper: float = 0.0) -> Action:
        return cls(ActionMode.EE_DELTA, np.asarray(dxyz_m, dtype=np.float64), float(gripper))

    @classmethod
    def joints(cls, dq_rad: Any, gripper: float = 0.0) -> Action:
        return cls(ActionMode.JOINT_DELTA, np.asarray(dq_rad, dtype=np.float64), float(gripper))


def ee_action_from_policy(action: Any, metres_per_unit: float, frame_map: FrameMap = IDENTITY) -> Action:
    """A policy's normalized ``[-1, 1]^4`` end-effector action (Meta-World's convention: xyz, gripper with +1 =
    close) as an :class:`Action`: ``delta = frame_map.delta_to_arm(a[:3] * metres_per_unit)`` (the training env's
    axes on the arm's, ``robot.frame_map``), ``gripper = (a[3] + 1) / 2``.

    ``metres_per_unit`` is the training env's action scale (Meta-World: 0.01 m), so one policy output moves a real
    arm exactly as far as it moved the simulated one (reliability case 17). Values are not clipped here: the
    safety layer clips or rejects them and logs it.
    """
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (4,):
        raise UnsafeActionError(f"policy action has shape {a.shape}, expected (4,) = (dx, dy, dz, gripper)")
    return Action.ee(frame_map.delta_to_arm(a[:3] * metres_per_unit), (a[3] + 1.0) / 2.0)


# ------------------------------------------------------------------------------------------------ observations
@dataclass(frozen=True)
class Frame:
    """One camera image, (H, W, 3) uint8, with the monotonic time it was captured.

    Threaded cameras (``robotrl.hardware.cameras``) also fill ``seq`` (the camera's count of new frames: a repeated
    ``seq`` is the same frame handed out again, which a recorder must not write as new), ``device_timestamp`` (the
    camera's own clock in ms, when it reports one) and ``depth`` ((H, W) uint16 in mm, aligned to ``image``).
    """

    image: np.ndarray
    timestamp: float
    seq: int = -1  # -1: the source does not number its frames
    device_timestamp: float | None = None
    depth: np.ndarray | None = None


class Camera(abc.ABC):
    """A camera of its own (LeRobot's ``Camera``, reduced): ``connect``, ``read``, ``disconnect``.

    ``read`` returns the newest frame; a camera that produced no new frame returns the previous one with its old
    timestamp (a dropped frame), which a consumer detects through ``Frame.timestamp`` (and ``Frame.seq``). The
    threaded cameras of ``robotrl.hardware.cameras`` never block in ``read`` and add freshness checks (``poll``).
    """

    name: str
    height: int
    width: int

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...


@dataclass(frozen=True)
class JointState:
    """The arm's measured state without images (cheap to read every control step)."""

    joint_pos: np.ndarray  # (n,) rad
    joint_vel: np.ndarray  # (n,) rad/s
    ee_pos: np.ndarray | None  # (3,) m; None for an arm whose kinematics this layer does not model (so101)
    ee_quat: np.ndarray | None  # (4,) w x y z; None likewise
    gripper_width: float  # m between the fingers
    timestamp: float  # monotonic s when it was read
    joint_target: np.ndarray | None = None  # (n,) rad: the controller's current commanded target, if it reports one
    ee_target: np.ndarray | None = None  # (3,) m: same for the end effector (libfranka's O_T_EE_c, a sim's mocap)


@dataclass(frozen=True)
class Observation:
    """A :class:`JointState` plus one :class:`Frame` per camera, keyed by camera name."""

    state: JointState
    frames: dict[str, Frame] = field(default_factory=dict)

    @property
    def timestamp(self) -> float:
        return self.state.timestamp


# ------------------------------------------------------------------------------------------------ vendor limits
@dataclass(frozen=True)
class VendorLimits:
    """What the hardware itself allows; configured limits must lie inside these (checked before connecting)."""

    joint_lower: tuple[float, ...]  # rad
    joint_upper: tuple[float, ...]  # rad
    joint_max_velocity: tuple[float, ...]  # rad/s
    workspace_lower: tuple[float, float, float]  # m
    workspace_upper: tuple[float, float, float]  # m
    ee_max_velocity: float  # m/s
    joint_max_acceleration: tuple[float, ...] | None = None  # rad/s^2 (None: no vendor value; the config sets one)
    ee_max_acceleration: float | None = None  # m/s^2 (None likewise)


# ------------------------------------------------------------------------------------------------ the interface
class Robot(abc.ABC):
    """An arm: ``connect / get_observation / send_action / reset_to_home / disconnect``; a context manager.

    Subclasses set ``name``, ``joint_names``, ``action_modes`` and ``vendor_limits`` and implement the hooks.
    ``send_action`` returns the action actually sent (LeRobot's contract: record that, not the request).
    """

    name: ClassVar[str]
    joint_names: ClassVar[tuple[str, ...]]
    action_modes: ClassVar[tuple[ActionMode, ...]]
    vendor_limits: ClassVar[VendorLimits]
    # How long the driver's stop (``_hold``) may take, moving arm included: the safety layer's timeout for holds,
    # separate from driver_timeout_ms (a send). Drivers set it from measured stop times (docs/benchmarks.md).
    stop_timeout_s: ClassVar[float] = 1.0
    # Declared capabilities (read by the workflows instead of the robot's name): ``renders_env_scene``: the arm is
    # the training env's own simulated scene, so the env settings fix its task, cameras and image size (robot=sim);
    # ``gives_reward``: ``ground_truth(action) -> (reward, success)`` exists (reward=env is possible on it).
    renders_env_scene: ClassVar[bool] = False
    gives_reward: ClassVar[bool] = False

    def __init__(self) -> None:
        self._state = RobotState.DISCONNECTED
        self._stop_request = threading.Event()  # set from any thread: long motions end within one control period
        self.rig: Any = None  # a CameraRig attached by config (robot.cameras mapping; attach_cameras)
        self.camera_flags: tuple[Any, ...] = ()  # the last read's flags (skew between cameras)

    # -- state machine
    @property
    def state(self) -> RobotState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state is not RobotState.DISCONNECTED

    def _transition(self, new: RobotState) -> None:
        if new not in LEGAL_TRANSITIONS[self._state]:
            raise RobotStateError(f"{self.name}: illegal transition {self._state.value} -> {new.value}")
        self._state = new

    def _require(self, allowed: set[RobotState], what: str) -> None:
        if self._state not in allowed:
            raise RobotStateError(
                f"{self.name}: cannot {what} in state {self._state.value}; "
                f"allowed in {sorted(s.value for s in allowed)}"
            )

    def _driver_call(self, what: str, fn: Any, *args: Any) -> Any:
        """Run a driver hook; any exception moves the robot to FAULT and surfaces as a DriverError."""
        try:
            return fn(*args)
        except RobotError:
            raise
        except Exception as exc:
            self._state = RobotState.FAULT
            raise DriverError(f"{self.name}: {what} failed ({type(exc).__name__}: {exc}); robot is in FAULT") from exc

    # -- public API
    @property
    def camera_names(self) -> tuple[str, ...]:
        """Names of the cameras ``get_observation`` returns frames for (known before connecting)."""
        return () if self.rig is None else self.rig.names

    def attach_cameras(self, rig: Any) -> None:
        """Give this arm a :class:`~robotrl.hardware.cameras.CameraRig` (``robot.cameras``, any arm): connected
        before the arm, read by :meth:`_read_frames` without waiting, disconnected with the arm."""
        self._require({RobotState.DISCONNECTED}, "attach cameras")
        self.rig = rig

    def connect(self) -> None:
        """Open the link and hold the current position (state READY). Attached cameras connect first: one that
        does not deliver leaves no arm connection to undo (DriverError naming the camera; state FAULT)."""
        self._require({RobotState.DISCONNECTED}, "connect")
        if self.rig is not None:
            self._driver_call("connect cameras", self.rig.connect)
        try:
            self._driver_call("connect", self._connect)
        except BaseException:
            if self.rig is not None:
                self.rig.disconnect()
            raise
        self._transition(RobotState.READY)

    def get_state(self) -> JointState:
        """The measured joint/end-effector state (no images)."""
        self._require({RobotState.READY, RobotState.MOVING, RobotState.HOLD}, "read the state")
        return self._driver_call("read state", self._read_state)

    def get_observation(self) -> Observation:
        """The measured state plus one frame per camera."""
        self._require({RobotState.READY, RobotState.MOVING, RobotState.HOLD}, "observe")
        state = self._driver_call("read state", self._read_state)
        frames = self._driver_call("read cameras", self._read_frames)
        return Observation(state, frames)

    def send_action(self, action: Action) -> Action:
        """Send one command; returns the action actually sent. Allowed in READY and MOVING (not HOLD: see resume)."""
        self._require({RobotState.READY, RobotState.MOVING}, "send an action")
        if action.mode not in self.action_modes:
            raise UnsafeActionError(
                f"{self.name} does not take {action.mode.value} actions; "
                f"it takes {[m.value for m in self.action_modes]}"
            )
        self._transition(RobotState.MOVING)
        return self._driver_call("send", self._send, action)

    def hold(self) -> None:
        """Stop at the current measured position and stay there (state HOLD)."""
        self._require({RobotState.READY, RobotState.MOVING, RobotState.HOLD}, "hold")
        self._driver_call("hold", self._hold)
        self._transition(RobotState.HOLD)

    def validate_limits(self, limits: Any) -> None:  # noqa: B027 (optional hook: most robots have nothing to add)
        """Check configured :class:`~robotrl.hardware.limits.SafetyLimits` against what only this instance knows
        (e.g. a calibration file's ranges); raise ConfigError. Runs before connect. Default: nothing to check."""

    def request_stop(self) -> None:
        """Ask a running long motion (homing) to stop; thread-safe and non-blocking. The motion's own thread then
        stops the arm (``_hold``) and ``reset_to_home`` raises MotionPreempted, within one control period."""
        self._stop_request.set()

    def clear_stop(self) -> None:
        """Forget a stop request (the safety layer calls it before starting a motion it has checked may run)."""
        self._stop_request.clear()

    def _pause(self, seconds: float) -> None:
        """Sleep between the steps of a long motion; raise MotionPreempted at once when a stop is requested."""
        if self._stop_request.wait(seconds):
            raise MotionPreempted(f"{self.name}: motion stopped on request")

    def mark_fault(self) -> None:
        """Declare the robot faulted from outside (a supervisor whose driver call timed out); only disconnect
        remains."""
        self._state = RobotState.FAULT

    def resume(self) -> None:
        """Leave HOLD explicitly (state READY); the next command starts from the held position. In READY (e.g.
        after a reconnect) there is nothing to leave: a no-op."""
        self._require({RobotState.HOLD, RobotState.READY}, "resume")
        if self._state is RobotState.HOLD:
            self._transition(RobotState.READY)

    def reset_to_home(self) -> None:
        """Move to the home pose (blocking) and end in READY. A stop request (:meth:`request_stop`) ends the move
        early: the driver stops the arm (``_hold``), the state is HOLD and MotionPreempted is raised."""
        self._require({RobotState.READY, RobotState.MOVING, RobotState.HOLD}, "reset to home")
        try:
            self._driver_call("reset to home", self._home)
        except MotionPreempted:
            self._driver_call("hold", self._hold)
            self._transition(RobotState.HOLD)
            raise
        if self._state is not RobotState.FAULT:  # marked from outside while homing (a supervisor gave up on it)
            self._state = RobotState.READY

    def disconnect(self) -> None:
        """Close the link (from any connected state, FAULT included). Idempotent."""
        if self._state is RobotState.DISCONNECTED:
            return
        try:
            self._disconnect()
        finally:  # the port is considered closed even if the driver's own shutdown failed
            self._state = RobotState.DISCONNECTED
            if self.rig is not None:
                self.rig.disconnect()

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # -- driver hooks
    @abc.abstractmethod
    def _connect(self) -> None: ...

    @abc.abstractmethod
    def _read_state(self) -> JointState: ...

    def _read_frames(self) -> dict[str, Frame]:
        """The attached cameras' newest frames, never waiting for a camera. A frame too old or a frozen stream
        raises StaleFrameError naming the camera (the safety layer holds the arm); a camera lost past its
        ``reconnect_s`` raises CameraFault (the arm faults). A skew between cameras is logged, not refused."""
        if self.rig is None:
            return {}
        read = self.rig.read()
        read.raise_if_invalid()
        for flag in read.flags:
            _log.warning("%s: %s", self.name, flag)
        self.camera_flags = read.flags
        return read.frames

    @abc.abstractmethod
    def _send(self, action: Action) -> Action: ...

    @abc.abstractmethod
    def _hold(self) -> None: ...

    @abc.abstractmethod
    def _home(self) -> None:
        """Move to the home pose; a motion longer than a control period checks ``self._pause`` between its steps
        (or polls the stop request) so that an e-stop or Ctrl-C reaches it within one period."""

    @abc.abstractmethod
    def _disconnect(self) -> None: ...


def monotonic() -> float:
    """The clock every robot timestamp uses."""
    return time.monotonic()
