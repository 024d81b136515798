"""``robot=sim``: the Meta-World Sawyer arm in MuJoCo behind the :class:`~robotrl.hardware.robot.Robot` interface.

The scene is built through ``robotrl.envs.make_env`` (the envs plug-in's public API), so the cameras render
exactly the pixels a policy was trained on (same camera, image size, fast-render settings, upside-down fix).
Control is Meta-World's: an end-effector delta moves the mocap target (clipped to the task's mocap box, the sim's
"vendor" limit), the gripper command drives the two finger actuators, and one ``send`` runs ``frame_skip``
physics steps (12.5 ms). Joint states are read from MuJoCo's ``qpos``/``qvel``. Latency, observation noise,
dropped frames and driver faults (raise, disconnect, stall) are injected through :class:`Faults`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np
from robotrl.hardware.faults import FaultInjector, Faults
from robotrl.hardware.robot import (
    Action,
    ActionMode,
    Frame,
    JointState,
    Robot,
    VendorLimits,
    monotonic,
    refuse_unknown_keys,
)

from robotrl.params import require

SAWYER_JOINTS = tuple(f"right_j{i}" for i in range(7))
# Joint ranges from Meta-World's Sawyer XML (model.jnt_range, measured); velocities from Rethink's Sawyer URDF.
# Except right_j1's upper end: the XML's -0.5 rad is a soft MuJoCo stop the arm rests against in ordinary Meta-World
# motion (the redundant elbow drifts onto it within ~20 steps of moving the hand; measured up to -0.4976 rad), so
# the measured-joint check needs the stop's real reach (-0.48 rad below).
SAWYER_VENDOR = VendorLimits(
    joint_lower=(-3.0503, -3.8, -3.0426, -3.0439, -2.9761, -2.9761, -4.7124),
    # right_j1: the XML's -0.5 + 0.02: MuJoCo's joint limits are soft and Meta-World's arm settles at -0.4988 under
    # zero actions (measured on reach), which held robot=sim within a second with the XML value as the bound.
    joint_upper=(3.0503, -0.48, 3.0426, 3.0439, 2.9761, 2.9761, 4.7124),
    joint_max_velocity=(1.74, 1.328, 1.957, 1.957, 3.485, 3.02, 4.545),
    workspace_lower=(-0.5, 0.4, 0.05),  # the widest Meta-World mocap box (reach-v3's hand_low/high)
    workspace_upper=(0.5, 1.0, 0.5),
    ee_max_velocity=1.0,  # Meta-World's own maximum is 0.01 m per 12.5 ms step = 0.8 m/s
)
HOME_SPEED_RAD_S = 1.0  # reset_to_home moves every joint at most this fast (a real Sawyer's joints do ~1.3-2 rad/s)
HOME_STEP_S = 0.0125  # one homing step per control-sized tick (the sim's frame_skip x timestep), a stop checked each
METAWORLD_ACTION_SCALE_M = 0.01  # SawyerXYZEnv.action_scale: metres per unit of a [-1, 1] policy action
MOCAP_QUAT = np.array([1.0, 0.0, 1.0, 0.0])  # the gripper orientation Meta-World fixes every step


class SimRobot(Robot):
    """A Meta-World task's Sawyer arm; ``cameras`` are the env's camera names (default Meta-World's ``corner2``)."""

    name = "sim"
    renders_env_scene = True  # the env's Meta-World scene, its task, cameras and image size
    gives_reward = True  # ground_truth(): Meta-World's reward and success on the true scene
    joint_names: ClassVar[tuple[str, ...]] = SAWYER_JOINTS
    action_modes: ClassVar[tuple[ActionMode, ...]] = (ActionMode.EE_DELTA,)
    vendor_limits = SAWYER_VENDOR
    stop_timeout_s = 0.5  # its stop is a no-op (the mocap target stays where it is)

    def __init__(
        self,
        task: str = "reach",
        cameras: tuple[str, ...] = ("corner2",),
        image_size: int = 84,
        seed: int = 0,
        faults: Faults | None = None,
        reset_scene: bool = False,
    ) -> None:
        super().__init__()
        self.task, self.cameras, self.image_size, self.seed = task, tuple(cameras), image_size, seed
        self.reset_scene = reset_scene  # homing also puts the objects back (run_env.sim_scene: every command)
        self.injector = FaultInjector(faults)
        self._env: Any = None
        self._base: Any = None
        self._last_frames: dict[str, Frame] = {}
        self._home_q = np.zeros(9)
        self._home_mocap = np.zeros(3)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SimRobot:
        valid = {"task", "cameras", "image_size", "seed", "faults", "reset_scene"}
        refuse_unknown_keys(cfg, "sim", valid)
        cameras = cfg.get("cameras", ("corner2",))
        cameras = (cameras,) if isinstance(cameras, str) else tuple(cameras)
        size, seed = cfg.get("image_size", 84), cfg.get("seed", 0)
        require("robot", positive_int={"image_size": size}, nonneg_int={"seed": seed})
        return cls(str(cfg.get("task", "reach")), cameras, size, int(seed),
                   Faults.from_config(cfg.get("faults")), bool(cfg.get("reset_scene", False)))

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.cameras

    @property
    def scene(self) -> Any:
        """The robotrl Meta-World env this arm lives in (``raw``, ``camera``, ``rotated_views``), None before
        connect: ``RobotEnv.scene`` for reward models that annotate a first frame from the simulator."""
        return self._base

    @property
    def raw(self) -> Any:
        """Meta-World's ``SawyerXYZEnv`` (MuJoCo ``model``/``data``), for tests."""
        return self._base.raw

    # ------------------------------------------------------------------------------------------ hooks
    def _connect(self) -> None:
        from robotrl.envs import make_env

        cfg = {"name": f"metaworld/{self.task}", "image_size": self.image_size, "camera": list(self.cameras)}
        self._env = make_env(cfg, self.seed)
        self._base = self._env.unwrapped
        self._base.reset(seed=self.seed)
        self._home_q = np.array(self._base.raw.data.qpos[:9])  # 7 arm joints + 2 fingers after Meta-World's reset
        self._home_mocap = np.array(self._base.raw.data.mocap_pos[0])
        self._last_frames = {}
        for view in range(len(self.cameras)):  # create the GL contexts now: the first frame takes ~1 s, too slow
            self._base.render_frame(self.image_size, view)  # for a control step's driver timeout

    def _read_state(self) -> JointState:
        self.injector.on_read()
        raw = self._base.raw
        data = raw.data
        q = np.array(data.qpos[:7])
        hand = data.body("hand")
        width = float(np.linalg.norm(data.body("rightclaw").xpos - data.body("leftclaw").xpos))
        return JointState(
            joint_pos=q + self.injector.noise(q.shape),
            joint_vel=np.array(data.qvel[:7]),
            ee_pos=np.array(hand.xpos) + self.injector.noise((3,)),
            ee_quat=np.array(hand.xquat),
            gripper_width=width,
            timestamp=monotonic(),
            ee_target=np.array(data.mocap_pos[0]),
        )

    def _read_frames(self) -> dict[str, Frame]:
        frames = {}
        for view, cam in enumerate(self.cameras):
            if cam in self._last_frames and self.injector.drop_frame():
                frames[cam] = self._last_frames[cam]  # no new frame: the old one, with its old timestamp
            else:
                frames[cam] = Frame(self._base.render_frame(self.image_size, view), monotonic())
        self._last_frames = frames
        return frames

    def _send(self, action: Action) -> Action:
        self.injector.on_send()
        raw = self._base.raw
        before = np.array(raw.data.mocap_pos[0])
        target = np.clip(before + action.delta, raw.mocap_low, raw.mocap_high)  # as SawyerXYZEnv.set_xyz_action
        raw.data.mocap_pos[0] = target
        raw.data.mocap_quat[0] = MOCAP_QUAT
        effort = 2.0 * action.gripper - 1.0  # [0 open, 1 closed] -> Meta-World's [-1, 1] finger command
        raw.do_simulation([effort, -effort], n_frames=raw.frame_skip)
        return Action(action.mode, target - before, action.gripper)

    def _hold(self) -> None:
        # Position control: the mocap target stays where it is, so the arm settles there. Nothing is stepped.
        pass

    def _home(self) -> None:
        # Back to the arm configuration Meta-World's reset leaves (joints and fingers; objects stay where they are),
        # with the mocap target on the hand. Not by driving the hand there: the 7-joint arm is redundant and under a
        # fixed mocap target its elbow keeps drifting (right_j1 -0.576 -> -0.499 rad in 50 steps, onto its -0.5
        # stop and outside the safety limits), found by `robotrl deploy`'s first observation after homing. So the
        # joints are interpolated there, at most HOME_SPEED_RAD_S, one step per HOME_STEP_S: homing takes time as
        # on a real arm, and an e-stop or Ctrl-C stops it where it is (``_pause``).
        raw = self._base.raw
        data = raw.data
        q0 = np.array(data.qpos[:9])
        if self.reset_scene:  # Meta-World's seeded reset: objects and goal where they started (a human's job on a
            self._base.reset(seed=self.seed)  # real arm); it also moves the arm, which walks home from q0 below
        n = max(1, int(np.ceil(np.max(np.abs(self._home_q - q0)) / (HOME_SPEED_RAD_S * HOME_STEP_S))))
        for k in range(1, n + 1):
            data.qpos[:9] = q0 + (self._home_q - q0) * k / n
            data.qvel[:9] = 0.0
            mujoco.mj_forward(raw.model, raw.data)
            # the mocap target on the hand on the way (a stopped homing holds where it stopped), at home exactly
            data.mocap_pos[0] = self._home_mocap if k == n else data.body("hand").xpos
            data.mocap_quat[0] = MOCAP_QUAT
            if k < n:
                self._pause(HOME_STEP_S)
        mujoco.mj_forward(raw.model, raw.data)

    def ground_truth(self, action: Any) -> tuple[float, bool]:
        """Meta-World's reward and success for the scene's true state after the last send (a simulator's
        privilege: ``RobotEnv`` reports them on ``robot=sim`` only; ``action`` is the policy's [-1, 1]^4)."""
        raw = self._base.raw
        reward, info = raw.evaluate_state(raw._get_obs(), np.asarray(action, np.float32))
        return float(reward), bool(info.get("success", False))

    def _disconnect(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = self._base = None
