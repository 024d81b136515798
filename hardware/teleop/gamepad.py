"""``teleop=gamepad``: end-effector deltas from a gamepad's sticks through evdev (no display; any pad the kernel
knows: Xbox, PlayStation, Logitech). :class:`AxesTeleop` is the shared machinery of the axis devices (the SpaceMouse
subclasses it): axes normalised to [-1, 1] with a deadzone, buttons for the gripper, take-over and labels, and
optionally this terminal's keys for the labels (``labels: tty``) when the device has too few buttons.

Defaults as LeRobot's gamepad: left stick x/y, right stick vertical z, RB held = intervention (a dead-man switch:
releasing it hands control back), LB toggles the gripper; Y/north success, A/south failure, X/west re-record, B/east
discard. Axis signs assume a person behind the arm, facing the way its x axis points (``teleop.axes`` flips them).
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
    TeleopEvent,
    bindings,
    check_keys,
    ee_action,
    label_events,
    positive,
)
from robotrl.hardware.teleop.inputs import EvdevInput, TtyKeys

from robotrl.errors import ConfigError

EV_KEY, EV_REL, EV_ABS = 0x01, 0x02, 0x03  # linux/input-event-codes.h
BUTTON_ACTIONS = ("gripper", "take_over", *LABEL_EVENTS)
LABEL_KEYS = {"take_over": "space", "success": "y", "failure": "n", "rerecord": "b", "discard": "x"}


def event_code(name: str, where: str) -> int:
    """An evdev code by name (``ABS_Y``, ``BTN_TR``); a number is taken as is."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    try:
        from evdev import ecodes
    except ImportError as exc:
        raise ConfigError(f"{where}={name!r}: naming evdev codes needs evdev (pip install robotrl[teleop])") from exc
    if name not in ecodes.ecodes:
        raise ConfigError(f"{where}={name!r} is not an evdev code name (e.g. ABS_X, BTN_SOUTH; see evtest)")
    return ecodes.ecodes[name]


def parse_axes(cfg: Mapping[str, Any], default: Mapping[str, list[Any]]) -> list[tuple[int, float]]:
    """``teleop.axes: {x: [CODE, sign], y: ..., z: ...}`` -> [(code, sign)] for x, y, z."""
    raw = {**default, **dict((cfg.get("axes") or {}).items())}
    unknown = sorted(set(raw) - {"x", "y", "z"})
    if unknown:
        raise ConfigError(f"teleop.axes.{unknown[0]}: expected only x, y, z")
    out = []
    for axis in ("x", "y", "z"):
        spec = list(raw[axis])
        if len(spec) != 2 or spec[1] not in (1, -1):
            raise ConfigError(f"teleop.axes.{axis}={spec!r}: expected [CODE_NAME, 1 or -1]")
        out.append((event_code(spec[0], f"teleop.axes.{axis}"), float(spec[1])))
    return out


class AxesTeleop(Teleop):
    """An evdev device with axes and buttons -> end-effector deltas of at most ``step_m`` per step per axis."""

    name = "gamepad"
    mode: ClassVar[ActionMode] = ActionMode.EE_DELTA
    match_any_axis_type = False  # True: an axis code matches both EV_REL and EV_ABS events (SpaceMouse kernels vary)

    def __init__(self, source: Any, axes: list[tuple[int, float]], buttons: Mapping[str, int], step_m: float,
                 deadzone: float, intervention: str, full_scale: float | None = None,
                 idle_timeout_s: float | None = None, labels: Any = None,
                 label_keys: Mapping[str, str] | None = None, clock: Clock = DEFAULT_CLOCK) -> None:
        self.source, self.axes, self.step_m, self.deadzone = source, axes, step_m, deadzone
        self.full_scale, self.idle_timeout_s, self._clock = full_scale, idle_timeout_s, clock
        self.labels, self.label_keys = labels, dict(label_keys or LABEL_KEYS)
        self.latch = InterventionLatch(intervention)
        self._action_of = {code: action for action, code in buttons.items()}
        self._values: dict[int, float] = {}
        self._ranges: dict[int, tuple[int, int]] = {}
        self._down: set[str] = set()
        self._last_event = -math.inf
        self.gripper = 0.0

    def connect(self) -> None:
        self.source.open()
        if self.labels is not None:
            self.labels.open()

    def disconnect(self) -> None:
        self.source.close()
        if self.labels is not None:
            self.labels.close()

    def _normalise(self, kind: int, code: int, value: int) -> float:
        if self.full_scale is not None:
            return float(np.clip(value / self.full_scale, -1.0, 1.0))
        if code not in self._ranges:
            self._ranges[code] = self.source.absinfo(code)
        lo, hi = self._ranges[code]
        return float(np.clip((2.0 * value - lo - hi) / max(hi - lo, 1), -1.0, 1.0))

    def _deadzone(self, v: float) -> float:
        if abs(v) < self.deadzone:
            return 0.0
        return math.copysign((abs(v) - self.deadzone) / (1.0 - self.deadzone), v)

    def poll(self, state: JointState | None = None) -> TeleopCommand:
        now, toggled, pressed = self._clock(), False, []
        axis_codes = {code for code, _ in self.axes}
        for kind, code, value in self.source.read():
            if kind in (EV_ABS, EV_REL) and code in axis_codes and (
                    self.match_any_axis_type or kind == (EV_REL if self.full_scale else EV_ABS)):
                self._values[code] = self._normalise(kind, code, value)
                self._last_event = now
            elif kind == EV_KEY and code in self._action_of:
                action = self._action_of[code]
                if value == 0:
                    self._down.discard(action)
                    continue
                if value == 2:  # auto-repeat of a held button
                    continue
                self._down.add(action)
                if action == "gripper":
                    self.gripper = 1.0 - self.gripper
                elif action == "take_over":
                    toggled = True
                else:
                    pressed.append(action)
        if self.idle_timeout_s is not None and now - self._last_event > self.idle_timeout_s:
            self._values.clear()  # a device that went quiet is centred (SpaceMice do not always send the zeros)
        toggled, events = self._labels(toggled)
        direction = np.array([sign * self._deadzone(self._values.get(code, 0.0)) for code, sign in self.axes])
        events = self.latch.update(now, toggled=toggled, held="take_over" in self._down,
                                   motion=float(np.abs(direction).max())) + events
        events += [TeleopEvent(a) for a in pressed]
        return TeleopCommand(ee_action(direction, self.step_m, self.gripper), self.latch.active, tuple(events))

    def _labels(self, toggled: bool) -> tuple[bool, list[TeleopEvent]]:
        """Keys of the terminal beside the device: its take-over key, and the labels."""
        if self.labels is None:
            return toggled, []
        keys = [k for k, down in self.labels.read() if down is not False]
        toggled = toggled or self.label_keys.get("take_over") in keys
        return toggled, label_events(keys, self.label_keys)


def axes_from_config(cls: type[AxesTeleop], cfg: Mapping[str, Any], defaults: Mapping[str, Any], want: str,
                     matches: Any, source: Any = None, labels: Any = None,
                     clock: Clock = DEFAULT_CLOCK) -> AxesTeleop:
    check_keys(cfg, set(defaults) | {"device", "labels", "label_keys"}, cls.name)
    buttons = bindings(cfg, "buttons", defaults["buttons"], BUTTON_ACTIONS)
    codes = {a: event_code(b, f"teleop.buttons.{a}") for a, b in buttons.items()}
    deadzone = positive(cfg, "deadzone", defaults["deadzone"], allow_zero=True)
    if deadzone >= 1:
        raise ConfigError(f"teleop.deadzone={deadzone:g}: expected a number in [0, 1)")
    label_source = cfg.get("labels", defaults.get("labels"))
    if label_source not in (None, "tty"):
        raise ConfigError(f"teleop.labels={label_source!r}: expected tty (this terminal's keys) or null")
    if labels is None and label_source == "tty":
        labels = TtyKeys()
    full_scale = defaults.get("full_scale")
    full_scale = positive(cfg, "full_scale", full_scale) if full_scale is not None else None
    idle = defaults.get("idle_timeout_s")
    idle = positive(cfg, "idle_timeout_s", idle) if idle is not None else None
    return cls(source or EvdevInput(cfg.get("device"), want, matches), parse_axes(cfg, defaults["axes"]), codes,
               positive(cfg, "step_m", defaults["step_m"]), deadzone,
               str(cfg.get("intervention", defaults["intervention"])), full_scale, idle, labels,
               bindings(cfg, "label_keys", LABEL_KEYS, ("take_over", *LABEL_EVENTS)), clock)


class GamepadTeleop(AxesTeleop):
    name = "gamepad"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "axes": {"x": ["ABS_Y", -1], "y": ["ABS_X", -1], "z": ["ABS_RY", -1]},
        "buttons": {"take_over": "BTN_TR", "gripper": "BTN_TL", "success": "BTN_NORTH", "failure": "BTN_SOUTH",
                    "rerecord": "BTN_WEST", "discard": "BTN_EAST"},
        "step_m": 0.01, "deadzone": 0.1, "intervention": "hold", "labels": None,
    }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: Any = None, labels: Any = None,
                    clock: Clock = DEFAULT_CLOCK) -> AxesTeleop:
        def is_pad(device: Any, e: Any) -> bool:
            return e.BTN_SOUTH in device.capabilities().get(e.EV_KEY, [])

        return axes_from_config(cls, cfg, cls.DEFAULTS, "gamepad", is_pad, source, labels, clock)
