"""The ``Teleop`` interface every device implements, and what they share: events, intervention modes, key bindings.

A device's :meth:`Teleop.poll` never blocks. It returns a :class:`TeleopCommand`: an
:class:`~robotrl.hardware.robot.Action` in robot units (end-effector deltas in m per control step, or joint deltas in
rad for a leader arm), whether the person is in control (``intervening``: a take-over from the policy, stored as
executed and flagged, as SERL and HIL-SERL do), and the events since the last poll: take-over / hand-back, success /
failure labels, re-record / discard. Commands go to the robot through the same safety layer as a policy's; nothing
here talks to an arm.

Intervention modes (``intervention:`` in ``configs/teleop/*.yaml``):

- ``toggle``: the take-over key or button toggles control (keyboard, leader arm with a keyboard beside it);
- ``hold``: control only while the take-over button is held, a dead-man switch (LeRobot's gamepad: RB);
- ``auto``: moving the device takes over; control returns ``auto_hold_s`` after it stops (SERL's SpaceMouse);
- ``always``: the person drives every step (recording demonstrations).
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.robot import Action, ActionMode, JointState, monotonic

from robotrl.errors import ConfigError, RobotRLError
from robotrl.params import require

INTERVENTION_MODES = ("toggle", "hold", "auto", "always")


class TeleopEvent(enum.Enum):
    TAKE_OVER = "take_over"  # the person takes control from the policy
    HAND_BACK = "hand_back"  # ... and gives it back
    SUCCESS = "success"  # label this episode a success (a success classifier's positive)
    FAILURE = "failure"  # ... a failure
    RERECORD = "rerecord"  # throw this episode away and record it again
    DISCARD = "discard"  # throw this episode away and go on


LABEL_EVENTS = ("success", "failure", "rerecord", "discard")  # keys/buttons that only emit an event


class TeleopError(RobotRLError, ConnectionError):
    """A teleop device is absent or was lost; the loop must hold the arm (the person cannot stop it any more)."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"teleop {device}: {message}")
        self.device = device


@dataclass(frozen=True)
class TeleopCommand:
    """One poll: the device's action (robot units), whether the person is in control, and the new events."""

    action: Action
    intervening: bool
    events: tuple[TeleopEvent, ...] = ()

    def has(self, event: TeleopEvent) -> bool:
        return event in self.events


class InterventionLatch:
    """Who is in control, by ``mode`` (see the module docstring); emits TAKE_OVER / HAND_BACK on each change."""

    def __init__(self, mode: str, auto_hold_s: float = 0.5, auto_threshold: float = 1e-3) -> None:
        if mode not in INTERVENTION_MODES:
            raise ConfigError(f"teleop.intervention={mode!r}: expected one of {list(INTERVENTION_MODES)}")
        self.mode, self.auto_hold_s, self.auto_threshold = mode, auto_hold_s, auto_threshold
        self.active = mode == "always"
        self._last_motion = -math.inf

    def update(self, now: float, toggled: bool = False, held: bool = False, motion: float = 0.0,
               ) -> list[TeleopEvent]:
        """Feed one poll's inputs: ``toggled`` (the take-over key was pressed), ``held`` (the take-over button is
        down), ``motion`` (the command's magnitude, for ``auto``); returns the events of the change, if any."""
        before = self.active
        if self.mode == "toggle" and toggled:
            self.active = not self.active
        elif self.mode == "hold":
            self.active = held
        elif self.mode == "auto":
            if motion > self.auto_threshold or held or toggled:
                self._last_motion = now
            self.active = now - self._last_motion < self.auto_hold_s
        if self.active == before:
            return []
        return [TeleopEvent.TAKE_OVER if self.active else TeleopEvent.HAND_BACK]


class Teleop(abc.ABC):
    """A teleoperation device: ``connect / poll(state) / disconnect``; a context manager.

    ``poll(state)`` takes the robot's latest :class:`JointState` (a leader arm needs the follower's target to turn
    its absolute joint positions into deltas; other devices ignore it).
    """

    name: ClassVar[str]
    mode: ClassVar[ActionMode]

    def connect(self) -> None:  # noqa: B027 (devices without a link have nothing to open)
        """Open the device."""

    def disconnect(self) -> None:  # noqa: B027
        """Close the device. Idempotent."""

    @abc.abstractmethod
    def poll(self, state: JointState | None = None) -> TeleopCommand: ...

    def __enter__(self) -> Teleop:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


# ------------------------------------------------------------------------------------------------ config helpers
def check_keys(cfg: Mapping[str, Any], valid: set[str], name: str) -> None:
    unknown = sorted(set(cfg) - valid - {"name"})
    if unknown:
        raise ConfigError(f"unknown key teleop.{unknown[0]} for teleop={name}; valid: {sorted(valid)}")


def positive(cfg: Mapping[str, Any], key: str, default: float, allow_zero: bool = False) -> float:
    value = cfg.get(key, default)
    require("teleop", **{"nonneg" if allow_zero else "positive": {key: value}})
    return float(value)


def bindings(cfg: Mapping[str, Any], key: str, default: Mapping[str, str], actions: tuple[str, ...]) -> dict[str, str]:
    """``{action: key or button name}`` merged over ``default``; every action must be one of ``actions`` and no
    key may be bound twice (one press, one meaning)."""
    raw = cfg.get(key) or {}
    merged = {**default, **dict(raw.items())}
    unknown = sorted(set(merged) - set(actions))
    if unknown:
        raise ConfigError(f"teleop.{key}.{unknown[0]} is not an action; valid: {list(actions)}")
    names = [str(v) for v in merged.values() if v is not None]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"teleop.{key}: {twice[0]!r} is bound to more than one action ({merged})")
    return {a: str(v) for a, v in merged.items() if v is not None}


def label_events(pressed: list[str], keymap: Mapping[str, str]) -> list[TeleopEvent]:
    """The label events (success, failure, rerecord, discard) among ``pressed`` key names, in press order."""
    by_key = {k: a for a, k in keymap.items() if a in LABEL_EVENTS}
    return [TeleopEvent(by_key[k]) for k in pressed if k in by_key]


def ee_action(direction: np.ndarray, step_m: float, gripper: float) -> Action:
    """An end-effector action from a direction in [-1, 1]^3 (clipped), ``step_m`` metres at full scale."""
    return Action.ee(np.clip(direction, -1.0, 1.0) * step_m, gripper)


Clock = Callable[[], float]
DEFAULT_CLOCK: Clock = monotonic
