"""``robot=mock``: an in-memory arm without kinematics (LeRobot's ``mock_robot``), for tests and dry runs.

Joint-delta commands move the joint targets, end-effector-delta commands move the end-effector target; the
measured state follows the last target exactly (plus injected noise). It records nothing itself: tests wrap its
hooks to see exactly what the driver received.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.faults import FaultInjector, Faults
from robotrl.hardware.franka import FrankaRobot
from robotrl.hardware.kinematics import franka_fk, franka_pose, joints_at_hand_target
from robotrl.hardware.robot import (
    Action,
    ActionMode,
    Camera,
    Frame,
    JointState,
    Robot,
    VendorLimits,
    monotonic,
    refuse_unknown_keys,
)

from robotrl.params import require

N_JOINTS = 6
# reset_to_home walks, as a real arm moves: this far per step at this rate (1 rad/s per joint, 0.25 m/s per axis),
# checking for a stop request between steps (so an e-stop during homing is testable on the mock)
HOME_STEP_RAD, HOME_STEP_M, HOME_RATE_HZ = 0.02, 0.005, 50.0


class MockCamera(Camera):
    """Frames whose pixels all equal the number of frames produced so far (mod 256), so a test can tell them apart."""

    def __init__(self, name: str, size: int, injector: FaultInjector) -> None:
        self.name, self.height, self.width = name, size, size
        self._injector = injector
        self._count = 0
        self._last: Frame | None = None

    def connect(self) -> None:
        self._count = 0
        self._last = None

    def read(self) -> Frame:
        if self._last is not None and self._injector.drop_frame():
            return self._last
        self._count += 1
        self._last = Frame(np.full((self.height, self.width, 3), self._count % 256, np.uint8), monotonic())
        return self._last

    def disconnect(self) -> None:
        self._last = None


class MockRobot(Robot):
    """A 6-joint arm whose measured state is its commanded target."""

    name = "mock"
    joint_names: ClassVar[tuple[str, ...]] = tuple(f"joint{i}" for i in range(N_JOINTS))
    action_modes: ClassVar[tuple[ActionMode, ...]] = (ActionMode.JOINT_DELTA, ActionMode.EE_DELTA)
    vendor_limits = VendorLimits(
        joint_lower=(-3.0,) * N_JOINTS,
        joint_upper=(3.0,) * N_JOINTS,
        joint_max_velocity=(2.0,) * N_JOINTS,
        workspace_lower=(-1.0, -1.0, 0.0),
        workspace_upper=(1.0, 1.0, 1.0),
        ee_max_velocity=2.0,
        joint_max_acceleration=(40.0,) * N_JOINTS,
        ee_max_acceleration=20.0,
    )
    home_joints = np.zeros(N_JOINTS)
    home_ee = np.array([0.0, 0.5, 0.3])
    stop_timeout_s = 0.5  # its stop is a no-op (measured state = target)

    def __init__(self, cameras: tuple[str, ...] = ("front",), image_size: int = 64, faults: Faults | None = None):
        super().__init__()
        self.injector = FaultInjector(faults)
        self.cameras = [MockCamera(name, image_size, self.injector) for name in cameras]
        self.q = self.home_joints.copy()
        self.ee = self.home_ee.copy()
        self.gripper = 0.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MockRobot:
        refuse_unknown_keys(cfg, "mock", {"cameras", "image_size", "faults"})
        size = cfg.get("image_size", 64)
        require("robot", positive_int={"image_size": size})
        return cls(tuple(cfg.get("cameras", ("front",))), int(size), Faults.from_config(cfg.get("faults")))

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras) + super().camera_names  # + attached real cameras (robot.cameras)

    def _connect(self) -> None:
        for cam in self.cameras:
            cam.connect()

    def _read_state(self) -> JointState:
        self.injector.on_read()
        return JointState(
            joint_pos=self.q + self.injector.noise(self.q.shape),
            joint_vel=np.zeros_like(self.q),
            ee_pos=self.ee + self.injector.noise((3,)),
            ee_quat=np.array([1.0, 0.0, 0.0, 0.0]),
            gripper_width=0.08 * (1.0 - self.gripper),
            timestamp=monotonic(),
        )

    def _read_frames(self) -> dict[str, Frame]:
        return {**{cam.name: cam.read() for cam in self.cameras}, **super()._read_frames()}

    def _send(self, action: Action) -> Action:
        self.injector.on_send()
        if action.mode is ActionMode.JOINT_DELTA:
            self.q = self.q + action.delta
        else:
            self.ee = self.ee + action.delta
        self.gripper = action.gripper
        return action

    def _hold(self) -> None:
        pass  # the measured state already is the target

    def _home(self) -> None:
        while True:
            dq = np.clip(self.home_joints - self.q, -HOME_STEP_RAD, HOME_STEP_RAD)
            de = np.clip(self.home_ee - self.ee, -HOME_STEP_M, HOME_STEP_M)
            if not (dq.any() or de.any()):
                return
            self.q, self.ee = self.q + dq, self.ee + de
            self._pause(1.0 / HOME_RATE_HZ)

    def _disconnect(self) -> None:
        for cam in self.cameras:
            cam.disconnect()


class Fr3HandMock(MockRobot):
    """An in-memory FR3 in end-effector mode that reaches each hand target before the next command (a slow loop, or
    a fast arm): its joints move to the target's inverse kinematics from where they were (franky-sim's damped least
    squares), so no joint is ever measured moving. With ``pose_model`` it offers ``forward_pose`` (Franka's DH
    model), which gives the safety layer its end-effector joint-limit stage; without it the layer has none."""

    name = "fr3-hand"
    joint_names: ClassVar[tuple[str, ...]] = FrankaRobot.joint_names
    action_modes: ClassVar[tuple[ActionMode, ...]] = (ActionMode.EE_DELTA,)
    vendor_limits = FrankaRobot.vendor_limits
    home_joints = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])  # franky-sim's initial pose
    home_ee = franka_fk(home_joints)

    def __init__(self, cameras: tuple[str, ...] = (), pose_model: bool = True) -> None:
        super().__init__(cameras)
        if pose_model:
            self.forward_pose = franka_pose

    def _send(self, action: Action) -> Action:
        sent = super()._send(action)
        self.q, _ = joints_at_hand_target(franka_pose, self.q, self.ee)
        return sent

    def _read_state(self) -> JointState:
        return JointState(self.q.copy(), np.zeros(7), franka_fk(self.q), np.array([1.0, 0, 0, 0]), 0.0, monotonic())
