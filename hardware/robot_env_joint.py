"""``JointRobotEnv``: :class:`~robotrl.hardware.robot_env.RobotEnv` in joint space, for an arm without end-effector
actions (``robot=so101``: this layer models no SO-101 kinematics) driven joint to joint, as LeRobot records an SO-101
from its leader arm.

Everything but the units is RobotEnv's (the safety layer on every send, the action repeat at the control rate, the
frame stack, camera stops, operator take-overs, timeouts). Actions: float32 in [-1, 1]^(n_joints + 1) = per-send
joint deltas in units of ``limits.joint_max_step`` (so +-1 is the most the safety layer passes in one command; the
same relative-to-the-commanded-target deltas as ``ActionMode.JOINT_DELTA``) and the gripper (+1 closed). The
``state`` observation: the measured joint angles (rad) and the gripper opening in [0, 1], then the same after the
previous send (RobotEnv's current + previous layout). No randomised start (it would need an end-effector offset).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from robotrl.hardware.robot import Action, ActionMode
from robotrl.hardware.robot_env import RobotEnv
from robotrl.hardware.robot_obs import GRIPPER_NORM_M

from robotrl.errors import ConfigError


class JointRobotEnv(RobotEnv):
    """RobotEnv whose actions are joint deltas (see the module doc)."""

    action_mode = ActionMode.JOINT_DELTA

    def __init__(self, robot: Any, **kwargs: Any) -> None:
        if kwargs.get("home_noise_m", 0.0):
            raise ConfigError(f"home_noise_m={kwargs['home_noise_m']!r} on a joint-space robot env: its randomised "
                              f"start is an end-effector offset; use 0")
        if self.action_mode not in robot.action_modes:
            raise ConfigError(f"robot={robot.inner.name} takes no joint actions; a joint-space env needs them")
        super().__init__(robot, **kwargs)
        self.joint_names = tuple(robot.joint_names)
        n = len(self.joint_names)
        self.rad_per_unit = np.broadcast_to(np.asarray(robot.limits.joint_max_step, np.float64), (n,)).copy()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n + 1,), np.float32)
        if "state" in self.keys:
            self.observation_space["state"] = gym.spaces.Box(-np.inf, np.inf, (2 * (n + 1),), np.float32)
        self.robotrl_info["action_space"] = "joint"

    def _proprio(self, state: Any) -> np.ndarray:
        opening = np.clip(state.gripper_width / GRIPPER_NORM_M, 0.0, 1.0)
        return np.append(np.asarray(state.joint_pos, np.float64), opening).astype(np.float32)

    def _robot_action(self, action: np.ndarray) -> Action:
        return Action.joints(action[:-1] * self.rad_per_unit, gripper=(float(action[-1]) + 1.0) / 2.0)

    def _policy_units(self, sent: Any) -> np.ndarray:
        return np.append(np.asarray(sent.delta) / self.rad_per_unit, 2.0 * sent.gripper - 1.0)

    def to_policy_units(self, action: Action) -> np.ndarray:
        """A device's joint :class:`Action` for a whole agent step (a leader arm: its pose minus the commanded target)
        in policy units, spread over the action repeat's sends so the step ends at that pose, not past it (not
        clipped: what the person commanded)."""
        delta = np.asarray(action.delta, np.float64) / self.action_repeat / self.rad_per_unit
        return np.append(delta, 2.0 * float(action.gripper) - 1.0).astype(np.float32)

    def demo_meta(self) -> dict[str, Any]:
        """The demo format's fields that differ from RobotEnv's (state and action layout, units)."""
        names = [f"{j}.pos" for j in self.joint_names] + ["gripper.opening"]
        state_names = names + [f"prev.{n}" for n in names]
        return {"state_dim": len(state_names), "state_names": state_names,
                "proprio_index": list(range(len(state_names))), "action_dim": len(self.joint_names) + 1,
                "action_space": "joint", "rad_per_unit": self.rad_per_unit.tolist(),
                "action_units": "[-1, 1]: joint deltas per send x rad_per_unit (limits.joint_max_step), "
                                "gripper (+1 closed)"}
