"""``FrameMap``: the training env's frame (where a policy learned its actions and proprioception) on an arm's base
frame.

A Meta-World policy learned to move a hand whose home is (0, 0.6, 0.2) m in a frame with x to the robot's right,
y away from its base and z up; an FR3's base frame has x forward, y to the left, and its home end effector at
(0.307, 0, 0.487) m. Sending the policy's deltas as FR3 base-frame deltas moves the hand sideways when the policy
meant forward, and its proprioception reads positions it never saw in training. A ``FrameMap`` is the one place
that conversion lives, configured per robot (``robot.frame_map``) and checked on the arm before a policy runs
(``robotrl check-frame``, :func:`robotrl.workflows.frame_check.check_frame_map`):

    p_arm = scale * R @ p_policy + offset        (positions, m)
    d_arm = scale * R @ d_policy                 (deltas, m)

``R`` is a signed axis permutation given as ``axes``: the arm axis each policy axis points along, e.g. ``["-y",
"x", "z"]`` (policy x = arm -y, policy y = arm x, policy z = arm z: Meta-World on a Franka). Only signed
permutations are accepted: a mounting with an arbitrary rotation is not what a table-top arm has, and a typo in a
free 3x3 matrix would be a shear that no check here could name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robotrl.errors import ConfigError

AXIS_NAMES = ("x", "y", "z")


@dataclass(frozen=True)
class FrameMap:
    """Policy frame -> arm base frame: ``p_arm = scale * rotation @ p_policy + offset`` (see the module doc)."""

    rotation: np.ndarray  # (3, 3) signed permutation: column i is the arm direction of policy axis i
    offset: np.ndarray  # (3,) m: where the policy frame's origin lies in the arm's base frame
    scale: float = 1.0  # arm metres per policy metre

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.rotation, np.eye(3)) and not self.offset.any() and self.scale == 1.0)

    @property
    def axes(self) -> list[str]:
        """The config form of ``rotation``: the signed arm axis of each policy axis."""
        out = []
        for column in self.rotation.T:
            i = int(np.flatnonzero(column)[0])
            out.append(("-" if column[i] < 0 else "") + AXIS_NAMES[i])
        return out

    def delta_to_arm(self, delta: Any) -> np.ndarray:
        """A policy-frame displacement (m) as an arm base-frame displacement (m)."""
        return self.scale * (self.rotation @ np.asarray(delta, np.float64))

    def delta_to_policy(self, delta: Any) -> np.ndarray:
        """An arm base-frame displacement (m) in the policy frame (m): what a recording stores as executed."""
        return (self.rotation.T @ np.asarray(delta, np.float64)) / self.scale

    def position_to_policy(self, position: Any) -> np.ndarray:
        """An arm base-frame position (m) in the policy frame (m): the proprioception a policy sees."""
        return (self.rotation.T @ (np.asarray(position, np.float64) - self.offset)) / self.scale

    def position_to_arm(self, position: Any) -> np.ndarray:
        """A policy-frame position (m) in the arm's base frame (m)."""
        return self.delta_to_arm(position) + self.offset

    def as_config(self) -> dict[str, Any]:
        return {"axes": self.axes, "offset": self.offset.tolist(), "scale": self.scale}


IDENTITY = FrameMap(np.eye(3), np.zeros(3), 1.0)


def _rotation(axes: Any, where: str) -> np.ndarray:
    expected = 'three signed axis names, one per policy axis, e.g. ["-y", "x", "z"]'
    if isinstance(axes, str) or not isinstance(axes, (list, tuple)) and not hasattr(axes, "__len__"):
        raise ConfigError(f"{where}.axes={axes!r}, expected {expected}")
    axes = list(axes)
    if len(axes) != 3:
        raise ConfigError(f"{where}.axes={axes!r} has {len(axes)} entries, expected {expected}")
    rotation = np.zeros((3, 3))
    for i, name in enumerate(axes):
        text = str(name).strip().lower()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        if text not in AXIS_NAMES:
            raise ConfigError(f"{where}.axes[{i}]={name!r}, expected one of x, y, z with an optional sign (-y)")
        rotation[AXIS_NAMES.index(text), i] = sign
    used = np.abs(rotation).sum(axis=1)
    if not np.array_equal(used, np.ones(3)):
        twice = AXIS_NAMES[int(np.argmax(used))]
        raise ConfigError(f"{where}.axes={axes!r} names arm axis {twice!r} more than once; expected each of x, y, z "
                          f"once (a signed permutation)")
    return rotation


def parse_frame_map(cfg: Any, where: str = "robot.frame_map") -> FrameMap:
    """A validated :class:`FrameMap` from ``{axes, offset, scale}`` (``None`` or ``{}``: the identity)."""
    if cfg is None:
        return IDENTITY
    if not isinstance(cfg, Mapping) and not hasattr(cfg, "items"):
        raise ConfigError(f"{where}={cfg!r}, expected a mapping with axes, offset, scale")
    cfg = dict(cfg.items())
    unknown = sorted(set(cfg) - {"axes", "offset", "scale"})
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys: ['axes', 'offset', 'scale']")
    rotation = _rotation(cfg.get("axes", ["x", "y", "z"]), where)
    offset_cfg = cfg.get("offset", [0.0, 0.0, 0.0])
    try:
        offset = np.asarray(list(offset_cfg), np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.offset={offset_cfg!r}, expected three numbers (m)") from None
    if offset.shape != (3,) or not np.isfinite(offset).all():
        raise ConfigError(f"{where}.offset={offset_cfg!r}, expected three finite numbers (m)")
    scale = cfg.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise ConfigError(f"{where}.scale={scale!r}, expected a finite number > 0 (arm metres per policy metre)")
    return FrameMap(rotation, offset, float(scale))
