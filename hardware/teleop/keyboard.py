"""``teleop=keyboard``: end-effector deltas from keys, on this terminal (``source: tty``, no display, works over SSH)
or an evdev keyboard (``source: evdev``: held keys known exactly).

A terminal reports presses, never releases: a motion key moves the arm for ``key_hold_s`` after each press, and the
terminal's auto-repeat keeps it moving while the key is held. Defaults: w/s x, a/d y, r/f z, g toggles the gripper,
space takes over / hands back, y success, n failure, b re-record, x discard (``teleop.keys`` rebinds any of them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.robot import ActionMode, JointState
from robotrl.hardware.teleop.base import (
    DEFAULT_CLOCK,
    LABEL_EVENTS,
    Clock,
    InterventionLatch,
    Teleop,
    TeleopCommand,
    bindings,
    check_keys,
    ee_action,
    label_events,
    positive,
)
from robotrl.hardware.teleop.inputs import EvdevKeys, TtyKeys

from robotrl.errors import ConfigError

MOTION = {"x+": (0, 1.0), "x-": (0, -1.0), "y+": (1, 1.0), "y-": (1, -1.0), "z+": (2, 1.0), "z-": (2, -1.0)}
ACTIONS = (*MOTION, "gripper", "take_over", *LABEL_EVENTS)
DEFAULT_KEYS = {"x+": "w", "x-": "s", "y+": "a", "y-": "d", "z+": "r", "z-": "f", "gripper": "g",
                "take_over": "space", "success": "y", "failure": "n", "rerecord": "b", "discard": "x"}


class KeyboardTeleop(Teleop):
    """Keys -> end-effector deltas of ``step_m`` per control step along each held direction."""

    name = "keyboard"
    mode: ClassVar[ActionMode] = ActionMode.EE_DELTA

    def __init__(self, source: Any, keys: Mapping[str, str] | None = None, step_m: float = 0.005,
                 key_hold_s: float = 0.15, intervention: str = "toggle", clock: Clock = DEFAULT_CLOCK) -> None:
        self.source, self.step_m, self.key_hold_s, self._clock = source, step_m, key_hold_s, clock
        self.keys = dict(keys or DEFAULT_KEYS)
        if intervention == "hold" and not getattr(source, "releases", False):
            raise ConfigError("teleop.intervention=hold needs key releases, which a terminal does not report; use "
                              "teleop.source=evdev or intervention=toggle")
        self.latch = InterventionLatch(intervention)
        self._action_of = {k: a for a, k in self.keys.items()}
        self._held_until: dict[str, float] = {}
        self._take_over_down = False
        self.gripper = 0.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: Any = None, clock: Clock = DEFAULT_CLOCK) -> KeyboardTeleop:
        check_keys(cfg, {"source", "device", "keys", "step_m", "key_hold_s", "intervention"}, "keyboard")
        kind = cfg.get("source", "tty")
        if kind not in ("tty", "evdev"):
            raise ConfigError(f"teleop.source={kind!r}: expected tty (this terminal) or evdev (a /dev/input keyboard)")
        if source is None:
            source = TtyKeys(cfg.get("device")) if kind == "tty" else EvdevKeys(cfg.get("device"))
        return cls(source, bindings(cfg, "keys", DEFAULT_KEYS, ACTIONS), positive(cfg, "step_m", 0.005),
                   positive(cfg, "key_hold_s", 0.15), str(cfg.get("intervention", "toggle")), clock)

    def connect(self) -> None:
        self.source.open()

    def disconnect(self) -> None:
        self.source.close()

    def poll(self, state: JointState | None = None) -> TeleopCommand:
        now, toggled, pressed = self._clock(), False, []
        for key, down in self.source.read():
            action = self._action_of.get(key)
            if action in MOTION:
                if down is None:
                    self._held_until[action] = now + self.key_hold_s
                elif down:
                    self._held_until[action] = math.inf
                else:
                    self._held_until.pop(action, None)
            elif action == "take_over":
                toggled = toggled or down is not False
                self._take_over_down = bool(down)
            elif action == "gripper" and down is not False:
                self.gripper = 1.0 - self.gripper
            elif down is not False:
                pressed.append(key)
        direction = np.zeros(3)
        for action, until in list(self._held_until.items()):
            if until <= now:
                del self._held_until[action]
                continue
            axis, sign = MOTION[action]
            direction[axis] += sign
        events = self.latch.update(now, toggled=toggled, held=self._take_over_down,
                                   motion=float(np.abs(direction).max()))
        events += label_events(pressed, self.keys)
        return TeleopCommand(ee_action(direction, self.step_m, self.gripper), self.latch.active, tuple(events))
