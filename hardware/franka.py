"""``robot=franka``: a Franka FR3 (or Panda) through ``franky-control`` (import name ``franky``; ``pip install
robotrl[franka]``; imported only when this robot connects), the maintained Python client over libfranka's protocol.

Commands are streamed as franky asynchronous motions: every ``send`` starts a new absolute ``JointMotion`` (joint
deltas) or ``CartesianMotion`` (end-effector deltas, orientation held at the pose of the last connect/hold/home)
towards the *commanded* target plus the delta, and franky's motion generator preempts the previous one and
replans within the dynamics limits (``relative_dynamics_factor`` scales them). Switching between joint and
end-effector mode stops the running motion first (franky preempts only within one control mode) and rebases the new
mode's target on the measured pose. The gripper (franky's ``Gripper``, a separate server) gets an asynchronous
``move`` to ``(1 - command) * max_width`` when the command changed by more than ``gripper_deadband_m`` and its
previous move has finished.

Any franky exception (network loss, a reflex stored by the control thread and re-raised by ``poll_motion``) raises
out of the hook, so the base class puts the robot in FAULT; ``SafetyLayer`` then writes nothing more.

Tested against ``franky-sim`` (a MuJoCo FR3 speaking the libfranka protocol on loopback); franky-sim enforces no
joint, velocity or torque limits, so on it the safety layer is the only line of defence, as the tests require.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import threading
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.robot import Action, ActionMode, JointState, Robot, VendorLimits, monotonic, refuse_unknown_keys

from robotrl.errors import ConfigError

_log = logging.getLogger(__name__)
JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
# Franka's "Robot and interface specifications" for FR3 (frankaemika.github.io/docs/control_parameters.html):
# joint position limits q_min/q_max in rad, joint velocity limits dq_max in rad/s, end-effector translation velocity
# 3.0 m/s. The workspace box is the arm's 855 mm reach around the base (a nominal bound, not a datasheet value).
FR3_Q_MIN = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
FR3_Q_MAX = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)
FR3_DQ_MAX = (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
FR3_DDQ_MAX = (10.0,) * 7  # joint acceleration limits ddq_max, rad/s^2 (same page; franky's documented maximum)
FR3_EE_DDP_MAX = 9.0  # end-effector translational acceleration limit, m/s^2 (same page)
READY_POSE = (0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398)  # libfranka's examples' start pose
REALTIME = ("enforce", "ignore")
HOME_POLL_S = 0.01  # homing polls franky's motion (and the stop request) this often: well inside a control period
GRIPPER_WAIT_S = 30.0  # a released connection waits this long for a running gripper move to end
RELEASE_WAIT_S = 45.0  # connect waits this long for the previous connection to close
MOTION_WAIT_S = 10.0  # a released connection waits this long for a running arm motion (a stop) to end
# Process-wide on purpose: franky's connections and the driver threads that may still be inside franky belong to the
# process, not to one FrankaRobot (a new robot to the same host waits for the last one's close; exit waits for both).
_CLOSING: dict[str, threading.Thread] = {}  # hostname -> the thread closing its last connection


class _InFlight:
    """How many driver hooks are running now, on any thread. An abandoned driver thread (a hold past its timeout)
    can still be inside franky when the process exits, and a franky Robot destroyed under a running call aborts
    the process ('terminate called without an active exception', exit status 134, issue 23): exit waits for them."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._count == 0, timeout)


_IN_FLIGHT = _InFlight()


def _tracked(hook: Any) -> Any:
    """Count a driver hook as in flight while it runs (see :class:`_InFlight`)."""

    @functools.wraps(hook)
    def run(self: Any, *args: Any) -> Any:
        with _IN_FLIGHT:
            return hook(self, *args)

    return run


def _franky() -> Any:
    try:
        import franky
    except ImportError as exc:  # one line, naming the fix
        raise ConfigError(f"robot=franka needs franky-control: pip install 'robotrl[franka]' ({exc})") from None
    return franky


class FrankaRobot(Robot):
    """A Franka FR3 / Panda arm over the network (FCI), with an optional Franka Hand."""

    name = "franka"
    joint_names: ClassVar[tuple[str, ...]] = JOINTS
    action_modes: ClassVar[tuple[ActionMode, ...]] = (ActionMode.JOINT_DELTA, ActionMode.EE_DELTA)
    vendor_limits = VendorLimits(
        joint_lower=FR3_Q_MIN,
        joint_upper=FR3_Q_MAX,
        joint_max_velocity=FR3_DQ_MAX,
        workspace_lower=(-0.855, -0.855, -0.36),
        workspace_upper=(0.855, 0.855, 1.19),
        ee_max_velocity=3.0,
        joint_max_acceleration=FR3_DDQ_MAX,
        ee_max_acceleration=FR3_EE_DDP_MAX,
    )
    # franky's blocking stop motion on franky-sim (bench/franky_stop.py, docs/benchmarks.md): 0.13 s still, 1.0-1.2 s
    # median / 1.75 s max moving, measured on 2 cores at load average ~19 (issue 23 measured 0.07 / 0.4 / 0.9 s on a
    # quieter machine); 5 s is ~3x the slowest measured and 5x the loaded one. A stop is a FAULT only past it.
    stop_timeout_s = 5.0

    def __init__(
        self,
        hostname: str,
        realtime: str = "enforce",
        relative_dynamics_factor: float = 0.1,
        gripper: bool = True,
        gripper_speed_mps: float = 0.05,
        gripper_deadband_m: float = 0.002,
        home_rad: tuple[float, ...] = READY_POSE,
    ) -> None:
        super().__init__()
        self.hostname, self.realtime = hostname, realtime
        self.relative_dynamics_factor = relative_dynamics_factor
        self.use_gripper = gripper
        self.gripper_speed_mps, self.gripper_deadband_m = gripper_speed_mps, gripper_deadband_m
        self.home_rad = np.asarray(home_rad, dtype=np.float64)
        self.arm: Any = None  # franky.Robot (tests wrap it to record what was sent)
        self.gripper: Any = None  # franky.Gripper
        self.franky: Any = None
        self._q_cmd = np.zeros(7)
        self._ee_cmd = np.zeros(3)
        self._quat_cmd = np.array([1.0, 0.0, 0.0, 0.0])  # franky's Affine quaternion order: x y z w
        self._mode: ActionMode | None = None  # the control mode of the running motion
        self._gripper_cmd: float | None = None  # last width sent (m)
        self._gripper_future: Any = None
        self._max_width = 0.08

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> FrankaRobot:
        valid = {"hostname", "realtime", "relative_dynamics_factor", "gripper", "gripper_speed_mps",
                 "gripper_deadband_m", "home_rad"}
        refuse_unknown_keys(cfg, "franka", valid)
        host = cfg.get("hostname")
        if not isinstance(host, str) or host in ("", "???"):
            raise ConfigError(f"robot.hostname={host!r}: robot=franka needs the FCI address (robot.hostname=...)")
        realtime = cfg.get("realtime", "enforce")
        if realtime not in REALTIME:
            raise ConfigError(f"robot.realtime={realtime!r}, expected one of {list(REALTIME)} "
                              "(ignore: no RT kernel, e.g. franky-sim)")
        rdf = cfg.get("relative_dynamics_factor", 0.1)
        if isinstance(rdf, bool) or not isinstance(rdf, (int, float)) or not 0 < rdf <= 1:
            raise ConfigError(f"robot.relative_dynamics_factor={rdf!r}, expected a number in (0, 1]")
        for key, default in (("gripper_speed_mps", 0.05), ("gripper_deadband_m", 0.002)):
            value = cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"robot.{key}={value!r}, expected a number > 0")
        home = tuple(float(v) for v in (cfg.get("home_rad") or READY_POSE))
        if len(home) != 7:
            raise ConfigError(f"robot.home_rad has {len(home)} values, expected 7 ({list(JOINTS)})")
        return cls(host, realtime, float(rdf), bool(cfg.get("gripper", True)),
                   float(cfg.get("gripper_speed_mps", 0.05)), float(cfg.get("gripper_deadband_m", 0.002)), home)

    def validate_limits(self, limits: Any) -> None:
        """The home pose must lie inside the configured joint limits (reset_to_home moves there unchecked)."""
        bad = np.flatnonzero((self.home_rad < limits.joint_lower) | (self.home_rad > limits.joint_upper))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(f"robot.home_rad[{i}]={self.home_rad[i]} ({JOINTS[i]}) is outside the configured joint "
                              f"limits [{limits.joint_lower[i]:.4f}, {limits.joint_upper[i]:.4f}] rad")

    # ------------------------------------------------------------------------------------------ helpers
    def _measured(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(q, dq, ee position, ee quaternion x y z w) from one consistent robot state."""
        s = self.arm.state
        ee = s.O_T_EE
        return (np.array(s.q, dtype=np.float64), np.array(s.dq, dtype=np.float64),
                np.array(ee.translation, dtype=np.float64), np.array(ee.quaternion, dtype=np.float64))

    def _rebase(self) -> None:
        """Commanded targets := the measured pose (after connect, stop or home)."""
        q, _, ee, quat = self._measured()
        self._q_cmd, self._ee_cmd, self._quat_cmd = q, ee, quat

    def _stop_motion(self) -> None:
        """Stop the running motion with franky's stop motion of its control mode (a blocking move, which replaces
        the running one; ``Robot.stop()`` would make the running motion raise "preempted") and forget the mode."""
        if self._mode is ActionMode.EE_DELTA:
            self.arm.move(self.franky.CartesianStopMotion())
        elif self._mode is ActionMode.JOINT_DELTA:
            self.arm.move(self.franky.JointStopMotion())
        self._mode = None

    # ------------------------------------------------------------------------------------------ hooks
    @_tracked
    def _connect(self) -> None:
        # registered here, not at import: once per process (unregister first), only where a connection exists
        atexit.unregister(_join_releases)
        atexit.register(_join_releases)
        closing = _CLOSING.get(self.hostname)  # libfranka takes one client: the last one must be closed first
        if closing is not None:
            closing.join(RELEASE_WAIT_S)
        self.franky = _franky()
        modes = self.franky.RealtimeConfig
        realtime = modes.Ignore if self.realtime == "ignore" else modes.Enforce
        self.arm = self.franky.Robot(self.hostname, realtime_config=realtime)
        if self.arm.has_errors:  # never clear a reflex silently: a human looks at the arm first
            raise ConnectionError("the arm reports errors; check it, then call recover_from_errors() (franky)")
        self.arm.relative_dynamics_factor = self.relative_dynamics_factor
        if self.use_gripper:
            self.gripper = self.franky.Gripper(self.hostname)
            self._max_width = float(self.gripper.max_width)
        self._rebase()
        self._mode = None

    @_tracked
    def _read_state(self) -> JointState:
        q, dq, ee, quat = self._measured()
        return JointState(
            joint_pos=q,
            joint_vel=dq,
            ee_pos=ee,
            ee_quat=np.array([quat[3], quat[0], quat[1], quat[2]]),  # our convention: w x y z
            gripper_width=float(self.gripper.width) if self.gripper is not None else 0.0,
            timestamp=monotonic(),
            # The mode not being streamed follows the measurement, so a mode switch starts from where the arm is.
            joint_target=self._q_cmd.copy() if self._mode is not ActionMode.EE_DELTA else q,
            ee_target=self._ee_cmd.copy() if self._mode is not ActionMode.JOINT_DELTA else ee,
        )

    @_tracked
    def _send(self, action: Action) -> Action:
        fr = self.franky
        if self._mode is not None and self._mode is not action.mode:  # franky preempts within one mode only
            self._stop_motion()
            self._rebase()
        if action.mode is ActionMode.JOINT_DELTA:
            target = self._q_cmd + action.delta
            motion = fr.JointMotion(target, fr.ReferenceType.Absolute, return_when_finished=False)
        else:
            target = self._ee_cmd + action.delta
            motion = fr.CartesianMotion(fr.Affine(target, self._quat_cmd), fr.ReferenceType.Absolute,
                                        return_when_finished=False)
        self.arm.poll_motion()  # re-raises what the control thread stored (reflex, lost link) before we add more
        self.arm.move(motion, asynchronous=True)
        if action.mode is ActionMode.JOINT_DELTA:
            self._q_cmd = target
        else:
            self._ee_cmd = target
        self._mode = action.mode
        return Action(action.mode, action.delta.copy(), self._send_gripper(action.gripper))

    def _send_gripper(self, command: float) -> float:
        """Start a gripper move if the command changed enough and the last move is done; returns the command (in
        [0, 1]) the gripper is actually moving to."""
        if self.gripper is None:
            return command
        width = (1.0 - command) * self._max_width
        busy = self._gripper_future is not None and not self._gripper_future.wait(0)
        if not busy and (self._gripper_cmd is None or abs(width - self._gripper_cmd) > self.gripper_deadband_m):
            self._gripper_future = self.gripper.move_async(width, self.gripper_speed_mps)
            self._gripper_cmd = width
        if self._gripper_cmd is None:
            return command
        return 1.0 - self._gripper_cmd / self._max_width

    @_tracked
    def _hold(self) -> None:
        self._stop_motion()
        self._rebase()

    @_tracked
    def _home(self) -> None:
        """An asynchronous joint motion to ``home_rad``, polled every HOME_POLL_S: a stop request (e-stop, Ctrl-C)
        ends the wait at once and the base class stops the arm (``_hold``: franky's JointStopMotion). A blocking
        ``move`` kept the driver thread for the whole move (5.7 s after an e-stop on franky-sim, issue 23)."""
        self._stop_motion()
        self.arm.move(self.franky.JointMotion(self.home_rad, self.franky.ReferenceType.Absolute), asynchronous=True)
        self._mode = ActionMode.JOINT_DELTA  # what _hold stops
        while not self.arm.join_motion(HOME_POLL_S):  # re-raises what the control thread stored (a reflex, a lost link)
            self._pause(0.0)
        self._mode = None
        self._rebase()

    @_tracked
    def _disconnect(self) -> None:
        try:
            if self.arm is not None:
                self._stop_motion()
        finally:
            arm, gripper, future = self.arm, self.gripper, self._gripper_future
            self.arm = self.gripper = self._gripper_future = None
            self._mode = None
            # franky closes the connection when the objects are freed, which took 3-10 s on franky-sim after a
            # gripper move (0.1 s without), and a gripper freed while a move is running segfaults (a move to a
            # fully open or closed hand takes 5-7 s there): free them on a thread of their own; connect() waits.
            closing = threading.Thread(target=_release, args=([future, gripper, arm], self.hostname),
                                       name="franka-release", daemon=True)
            _CLOSING[self.hostname] = closing
            closing.start()


def _release(objects: list[Any], hostname: str) -> None:
    """Wait for a running gripper move and a running arm motion, then drop franky's objects in order (the future
    before its gripper). The arm motion: after a hold timed out (FAULT), the abandoned driver thread is still in
    franky's blocking stop; freeing the Robot then (at process exit at the latest) destroyed its running control
    thread: 'terminate called without an active exception', exit status 134 (issue 23)."""
    if objects[0] is not None and not objects[0].wait(GRIPPER_WAIT_S):
        # libfranka's gripper move does not notice a closed connection: it polls the dead socket (one core busy) until
        # it gives up (~62 s after franky-sim was killed). Freeing the gripper meanwhile either freed what that thread
        # still uses (SIGSEGV at exit) or joined it with the GIL held (every Python thread of the process, watchdogs
        # and cameras included, stopped for 30.6 s): docs/safety.md gap 26. So neither is ever freed.
        _log.warning("franka %s: the gripper move did not end within %.0f s (its connection is lost?); its "
                     "connection is left open until the process exits", hostname, GRIPPER_WAIT_S)
        for stuck in objects[:2]:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(stuck))  # not even interpreter shutdown frees it
        objects[0] = objects[1] = None
    if objects[2] is not None:
        with contextlib.suppress(Exception):  # the motion's own error was already reported, or the link is gone
            objects[2].join_motion(MOTION_WAIT_S)
    while objects:
        objects.pop(0)


def _join_releases() -> None:
    """At exit (registered by a connect), let running driver calls end and every connection finish closing first
    (daemon threads are stopped mid-call otherwise)."""
    _IN_FLIGHT.wait_idle(MOTION_WAIT_S)
    for thread in list(_CLOSING.values()):
        thread.join(RELEASE_WAIT_S)
