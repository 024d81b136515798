"""``teleop=spacemouse``: a 3Dconnexion SpaceMouse's translation as end-effector deltas, as SERL collects its demos
(``serl_robot_infra/franka_env/spacemouse``), read through evdev (the kernel's hid driver; no display, no spacenavd,
no hidraw udev rule: read access to ``/dev/input/event*`` is enough).

Kernels report its axes as REL_* or ABS_* (same codes, X Y Z = 0 1 2); both are read, at +-``full_scale`` (350).
A SpaceMouse does not always send zeros when let go, so it is centred after ``idle_timeout_s`` without an event.
As in SERL, moving it takes over (``intervention: auto``) and control returns ``auto_hold_s`` = 0.5 s after it stops;
the left button toggles the gripper, the right one takes over / hands back (with ``intervention: toggle``). It has
no buttons to spare for labels, so they come from this terminal's keys (``labels: tty``; y success, n failure,
b re-record, x discard, space take-over).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from robotrl.hardware.teleop.base import DEFAULT_CLOCK, Clock
from robotrl.hardware.teleop.gamepad import AxesTeleop, axes_from_config

VENDORS = (0x046D, 0x256F)  # Logitech (older 3Dconnexion devices) and 3Dconnexion


class SpaceMouseTeleop(AxesTeleop):
    name = "spacemouse"
    match_any_axis_type = True
    DEFAULTS: ClassVar[dict[str, Any]] = {
        # the device's +x is right, +y toward the user, +z down: for a person behind the arm, push = +x, left = +y
        "axes": {"x": ["ABS_Y", -1], "y": ["ABS_X", -1], "z": ["ABS_Z", -1]},
        "buttons": {"gripper": "BTN_0", "take_over": "BTN_1"},
        "step_m": 0.01, "deadzone": 0.05, "intervention": "auto", "labels": "tty", "full_scale": 350.0,
        "idle_timeout_s": 0.1,
    }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: Any = None, labels: Any = None,
                    clock: Clock = DEFAULT_CLOCK) -> AxesTeleop:
        def is_spacemouse(device: Any, e: Any) -> bool:
            name = device.name.lower()
            return device.info.vendor in VENDORS and ("3dconnexion" in name or "space" in name)

        return axes_from_config(cls, cfg, cls.DEFAULTS, "spacemouse", is_spacemouse, source, labels, clock)
