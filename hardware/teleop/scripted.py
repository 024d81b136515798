"""``teleop=scripted``: a device that plays a fixed list of polls (tests, CI, and a scripted session to repeat).

Each entry of ``steps`` (inline in the config, or a JSON/YAML list in the file ``script``) is one poll::

    {"delta_m": [dx, dy, dz], "gripper": 0.0, "intervening": true, "events": ["success"], "repeat": 1,
     "interrupt": false}

``delta_m`` is an end-effector delta in the arm's base frame (m per control step, as every device's), ``gripper``
0 open .. 1 closed, ``events`` any of :class:`~robotrl.hardware.teleop.base.TeleopEvent`'s values, ``repeat`` plays
the entry that many times, and ``interrupt: true`` raises ``KeyboardInterrupt`` from that poll (a person's Ctrl-C,
at a known point). After the last entry the device idles: a zero delta, the last gripper, no events.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.robot import Action, ActionMode, JointState
from robotrl.hardware.teleop.base import Teleop, TeleopCommand, TeleopEvent, check_keys

from robotrl.errors import ConfigError

STEP_KEYS = {"delta_m", "gripper", "intervening", "events", "repeat", "interrupt"}


@dataclass(frozen=True)
class ScriptStep:
    """One poll of the script."""

    delta_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gripper: float = 0.0
    intervening: bool = True
    events: tuple[TeleopEvent, ...] = ()
    interrupt: bool = False


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}={value!r}: expected a finite number")
    return float(value)


def parse_steps(raw: Any, where: str = "teleop.steps") -> list[ScriptStep]:
    """Script entries (the module doc's dicts) -> one :class:`ScriptStep` per poll (``repeat`` expanded)."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise ConfigError(f"{where}: expected a list of polls, got {type(raw).__name__}")
    steps: list[ScriptStep] = []
    valid_events = [e.value for e in TeleopEvent]
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: expected a mapping with keys {sorted(STEP_KEYS)}, got {entry!r}")
        unknown = sorted(set(entry) - STEP_KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid: {sorted(STEP_KEYS)}")
        delta = entry.get("delta_m", [0.0, 0.0, 0.0])
        if not isinstance(delta, Sequence) or len(delta) != 3:
            raise ConfigError(f"{at}.delta_m={delta!r}: expected three numbers (m)")
        events = entry.get("events") or []
        bad = [e for e in events if e not in valid_events]
        if bad:
            raise ConfigError(f"{at}.events: {bad[0]!r} is not an event; valid: {valid_events}")
        repeat = entry.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"{at}.repeat={repeat!r}: expected an int >= 1")
        step = ScriptStep(tuple(_number(v, f"{at}.delta_m") for v in delta),  # type: ignore[arg-type]
                          _number(entry.get("gripper", 0.0), f"{at}.gripper"), bool(entry.get("intervening", True)),
                          tuple(TeleopEvent(e) for e in events), bool(entry.get("interrupt", False)))
        steps += [step] * repeat
    return steps


class ScriptedTeleop(Teleop):
    """Plays ``steps`` one per poll (see the module doc); ``polls`` counts the polls made."""

    name = "scripted"
    mode: ClassVar[ActionMode] = ActionMode.EE_DELTA

    def __init__(self, steps: Sequence[ScriptStep]) -> None:
        self.steps, self.polls, self._gripper = list(steps), 0, 0.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ScriptedTeleop:
        check_keys(cfg, {"steps", "script", "intervention"}, "scripted")
        if (cfg.get("steps") is None) == (cfg.get("script") is None):
            raise ConfigError("teleop=scripted needs exactly one of teleop.steps (a list of polls) or "
                              "teleop.script=FILE (a JSON or YAML list)")
        if cfg.get("script") is not None:
            path = Path(str(cfg["script"]))
            if not path.is_file():
                raise ConfigError(f"teleop.script={str(path)!r}: no such file (expected a JSON or YAML list of polls)")
            text = path.read_text()
            if path.suffix == ".json":
                raw = json.loads(text)
            else:
                import yaml

                raw = yaml.safe_load(text)
            return cls(parse_steps(raw, f"teleop.script {path}"))
        return cls(parse_steps(cfg["steps"]))

    def poll(self, state: JointState | None = None) -> TeleopCommand:
        if self.polls >= len(self.steps):
            self.polls += 1
            return TeleopCommand(Action.ee(np.zeros(3), self._gripper), True)
        step = self.steps[self.polls]
        self.polls += 1
        if step.interrupt:
            raise KeyboardInterrupt
        self._gripper = step.gripper
        return TeleopCommand(Action.ee(np.asarray(step.delta_m), step.gripper), step.intervening, step.events)
