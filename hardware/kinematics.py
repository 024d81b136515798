"""Kinematics for the safety layer: the workspace box in joint-delta mode, joint limits in end-effector mode.

A joint-space command moves the end effector too, so the layer checks the workspace box on the end-effector position
of the joint *target* (:func:`forward_kinematics_for`): the driver's own ``forward_kinematics(q) -> (3,)`` if it
offers one, else a model from :data:`MODELS` by robot name. An end-effector command moves the joints, so where a pose
model is known (the driver's ``forward_pose(q) -> (4, 4)``, else :data:`MODELS`) the layer limits the joints at the
hand's target (:func:`joints_at_hand_target`, inverse kinematics). Models:

- ``franka`` (FR3 and Panda share the table): Franka's Denavit-Hartenberg parameters (Craig's convention) from
  "Robot and interface specifications" (frankaemika.github.io/docs/control_parameters.html), flange 0.107 m after
  joint 7, and with a Franka Hand the end-effector frame 0.1034 m further (Desk's default ``F_T_EE``), which is the
  ``O_T_EE`` the driver reports.
- ``sim`` takes end-effector deltas only, so its box is checked on the target itself; no model is needed.
- ``so101`` reports no end-effector pose and has no model here: in joint mode only joint limits hold for it
  (documented in README's safety section).
- ``mock`` has no kinematics (its joints and end effector are independent); tests attach a model to it, and
  ``mock.Fr3HandMock`` (an in-memory FR3 for the end-effector joint-limit stage) offers Franka's pose model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Kinematics = Callable[[np.ndarray], np.ndarray]  # joint positions (n,) rad -> end-effector position (3,) m
Pose = Callable[[np.ndarray], np.ndarray]  # joint positions (n,) rad -> end-effector pose (4, 4) in the base frame

# (a, d, alpha) per joint, Craig's modified DH: T_i = RotX(alpha) TransX(a) RotZ(q_i) TransZ(d).
FRANKA_DH = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -np.pi / 2),
    (0.0, 0.316, np.pi / 2),
    (0.0825, 0.0, np.pi / 2),
    (-0.0825, 0.384, -np.pi / 2),
    (0.0, 0.0, np.pi / 2),
    (0.088, 0.0, np.pi / 2),
)
FRANKA_FLANGE_M = 0.107  # joint 7 -> flange along z
FRANKA_HAND_M = 0.1034  # flange -> end-effector frame of a Franka Hand along z (Desk's default F_T_EE)


def _dh(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
    return np.array([
        [ct, -st, 0.0, a],
        [st * ca, ct * ca, -sa, -d * sa],
        [st * sa, ct * sa, ca, d * ca],
        [0.0, 0.0, 0.0, 1.0],
    ])


def franka_pose(q: Any, tool_m: float = FRANKA_HAND_M) -> np.ndarray:
    """End-effector pose (4, 4) in the base frame of an FR3/Panda at joint positions ``q`` (7,) rad; ``tool_m``:
    flange to end-effector distance along the flange's z (0 without a hand)."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (7,):
        raise ValueError(f"franka_pose needs 7 joint positions, got shape {q.shape}")
    pose = np.eye(4)
    for (a, d, alpha), theta in zip(FRANKA_DH, q, strict=True):
        pose = pose @ _dh(a, d, alpha, theta)
    pose[:3, 3] += pose[:3, 2] * (FRANKA_FLANGE_M + tool_m)
    return pose


def franka_fk(q: Any, tool_m: float = FRANKA_HAND_M) -> np.ndarray:
    """End-effector position (3,) m of :func:`franka_pose`."""
    return franka_pose(q, tool_m)[:3, 3]


def _franka(driver: Any) -> Pose:
    tool = FRANKA_HAND_M if getattr(driver, "use_gripper", True) else 0.0
    return lambda q: franka_pose(q, tool)


MODELS: dict[str, Callable[[Any], Pose]] = {"franka": _franka}


def pose_kinematics_for(driver: Any) -> Pose | None:
    """The end-effector pose function for ``driver`` (its own ``forward_pose`` first, else a model from
    :data:`MODELS` by ``driver.name``), or None when none is known."""
    own = getattr(driver, "forward_pose", None)
    if callable(own):
        return own
    model = MODELS.get(getattr(driver, "name", ""))
    return None if model is None else model(driver)


def forward_kinematics_for(driver: Any) -> Kinematics | None:
    """The end-effector position function for ``driver`` (its own ``forward_kinematics`` first, else its pose
    model's position), or None when none is known (the box cannot be checked in joint mode)."""
    own = getattr(driver, "forward_kinematics", None)
    if callable(own):
        return own
    pose = pose_kinematics_for(driver)
    return None if pose is None else lambda q: pose(q)[:3, 3]


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The rotation vector (3,) that turns ``current`` (3, 3) into ``target`` (3, 3), in the base frame."""
    r = target @ current.T
    axis_sin = 0.5 * np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    s, c = np.linalg.norm(axis_sin), np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    return axis_sin if s < 1e-12 else axis_sin * (np.arctan2(s, c) / s)


def _jacobian(pose: Pose, q: np.ndarray, at: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The (6, n) geometric Jacobian (linear over angular) of ``pose`` at ``q`` (whose pose is ``at``), by forward
    differences."""
    jac = np.empty((6, q.size))
    for i in range(q.size):
        moved = q.copy()
        moved[i] += eps
        p = pose(moved)
        jac[:3, i] = (p[:3, 3] - at[:3, 3]) / eps
        jac[3:, i] = _rotation_error(p[:3, :3], at[:3, :3]) / eps
    return jac


def joints_at_hand_target(pose: Pose, q: np.ndarray, position: np.ndarray, iterations: int = 10,
                          damping: float = 1e-4, tolerance: float = 1e-5) -> tuple[np.ndarray, float]:
    """Where the joints come to rest when the hand is moved from ``q`` to ``position`` (3,) m at its orientation at
    ``q``: damped least-squares steps from ``q`` (what franky-sim's Cartesian control does, and the redundant
    joints of a real arm's own solver may differ; the elbow of a 7-joint arm is set by the hand's position).
    Returns (joints, the hand's remaining error in m and rad)."""
    q = np.asarray(q, np.float64).copy()
    orientation = pose(q)[:3, :3]
    for step in range(iterations + 1):  # the last pass only measures the error of the last step
        at = pose(q)
        err = np.concatenate([position - at[:3, 3], _rotation_error(orientation, at[:3, :3])])
        if np.linalg.norm(err) < tolerance or step == iterations:
            break
        jac = _jacobian(pose, q, at)
        q += jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(6), err)
    return q, float(np.linalg.norm(err))
