"""``teleop=so101_leader``: LeRobot's SO-101 leader arm on its own Feetech bus (``pip install robotrl[so101]``).

As LeRobot's ``so_leader``: its torque is off (a person moves it by hand) and each poll sync-reads its
``Present_Position``; with its own calibration file (LeRobot's format) each joint's angle is the follower's angle
for the same pose, so the follower is sent to the leader's joint angles. Here that is a joint delta (leader angle
minus the follower's commanded target), which the safety layer clips to ``joint_max_step`` per step exactly as
LeRobot's ``max_relative_target`` does: a leader far from the follower is approached step by step. The gripper
follows the leader's gripper opening (command 0 = open). The leader has no buttons: the take-over key and labels
come from this terminal (``labels: tty``); ``intervention: always`` (the default) is for recording demonstrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.robot import Action, ActionMode, JointState
from robotrl.hardware.so101 import (
    ADDR_PRESENT,
    ADDR_TORQUE_ENABLE,
    ARM_JOINTS,
    MOTORS,
    RAD_PER_STEP,
    STS3215_MODEL,
    FeetechBus,
    MotorCalibration,
    load_calibration,
)
from robotrl.hardware.teleop.base import (
    DEFAULT_CLOCK,
    LABEL_EVENTS,
    Clock,
    InterventionLatch,
    Teleop,
    TeleopCommand,
    TeleopError,
    bindings,
    check_keys,
    label_events,
)
from robotrl.hardware.teleop.gamepad import LABEL_KEYS
from robotrl.hardware.teleop.inputs import TtyKeys

from robotrl.errors import ConfigError


def joint_rad(cal: MotorCalibration, raw: int) -> float:
    """LeRobot's degree convention in rad: ``(raw - (min + max) / 2) * 2 pi / 4095``, sign flipped by drive_mode."""
    value = (raw - cal.mid) * RAD_PER_STEP
    return -value if cal.drive_mode else value


class SO101LeaderTeleop(Teleop):
    """Joint deltas that take an SO-101 follower to the leader arm's pose."""

    name = "so101_leader"
    mode: ClassVar[ActionMode] = ActionMode.JOINT_DELTA

    def __init__(self, port: str, calibration: dict[str, MotorCalibration], baudrate: int = 1_000_000,
                 packet_timeout_ms: float | None = None, intervention: str = "always", labels: Any = None,
                 label_keys: Mapping[str, str] | None = None, clock: Clock = DEFAULT_CLOCK) -> None:
        self.port, self.calibration, self.baudrate = port, calibration, baudrate
        self.packet_timeout_ms, self.labels, self._clock = packet_timeout_ms, labels, clock
        self.label_keys = dict(label_keys or LABEL_KEYS)
        self.latch = InterventionLatch(intervention)
        self.ids = tuple(calibration[m].id for m in MOTORS)
        self.bus: FeetechBus | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], labels: Any = None, clock: Clock = DEFAULT_CLOCK,
                    ) -> SO101LeaderTeleop:
        valid = {"port", "calibration_file", "baudrate", "packet_timeout_ms", "intervention", "labels", "label_keys"}
        check_keys(cfg, valid, "so101_leader")
        for key in ("port", "calibration_file"):
            if not isinstance(cfg.get(key), str) or cfg[key] in ("", "???"):
                raise ConfigError(f"teleop.{key}={cfg.get(key)!r}: teleop=so101_leader needs it (the leader's own "
                                  f"bus and lerobot-calibrate file, e.g. teleop.{key}=...)")
        label_source = cfg.get("labels")
        if label_source not in (None, "tty"):
            raise ConfigError(f"teleop.labels={label_source!r}: expected tty (this terminal's keys) or null")
        if labels is None and label_source == "tty":
            labels = TtyKeys()
        return cls(cfg["port"], load_calibration(cfg["calibration_file"]), int(cfg.get("baudrate", 1_000_000)),
                   cfg.get("packet_timeout_ms"), str(cfg.get("intervention", "always")), labels,
                   bindings(cfg, "label_keys", LABEL_KEYS, ("take_over", *LABEL_EVENTS)), clock)

    def connect(self) -> None:
        try:
            self.bus = FeetechBus(self.port, self.baudrate, self.ids, self.packet_timeout_ms)
            for motor, motor_id in zip(MOTORS, self.ids, strict=True):
                model = self.bus.ping(motor_id)
                if model != STS3215_MODEL:
                    raise ConnectionError(f"{motor} (id {motor_id}) reports model {model}, expected {STS3215_MODEL}")
            for motor_id in self.ids:  # a person moves the leader: its motors must not resist
                self.bus.write1(motor_id, ADDR_TORQUE_ENABLE, 0)
        except (ConnectionError, OSError) as exc:
            self.disconnect()
            raise TeleopError("so101_leader", f"cannot connect on {self.port} ({exc})") from exc
        if self.labels is not None:
            self.labels.open()

    def disconnect(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.close()
        if self.labels is not None:
            self.labels.close()

    def read_pose(self) -> tuple[np.ndarray, float]:
        """The leader's five arm joint angles (rad) and its gripper as a command (0 open .. 1 closed)."""
        if self.bus is None:
            raise TeleopError("so101_leader", "not connected")
        try:
            data = self.bus.sync_read(ADDR_PRESENT, 2)
        except ConnectionError as exc:
            raise TeleopError("so101_leader", f"lost the leader's bus on {self.port} ({exc})") from exc
        raw = {m: (data[i][0] | data[i][1] << 8) & 0x7FFF for m, i in zip(MOTORS, self.ids, strict=True)}
        q = np.array([joint_rad(self.calibration[j], raw[j]) for j in ARM_JOINTS])
        g = self.calibration["gripper"]
        opening = (raw["gripper"] - g.range_min) / (g.range_max - g.range_min)
        return q, float(np.clip(1.0 - opening, 0.0, 1.0))

    def poll(self, state: JointState | None = None) -> TeleopCommand:
        if state is None or np.asarray(state.joint_pos).shape != (len(ARM_JOINTS),):
            got = None if state is None else np.asarray(state.joint_pos).shape
            raise TeleopError("so101_leader", f"needs the follower's state with {len(ARM_JOINTS)} joints "
                                              f"({list(ARM_JOINTS)}), got {got}")
        q, gripper = self.read_pose()
        target = state.joint_target if state.joint_target is not None else state.joint_pos
        keys = [k for k, down in self.labels.read() if down is not False] if self.labels is not None else []
        events = self.latch.update(self._clock(), toggled=self.label_keys.get("take_over") in keys)
        events += label_events(keys, self.label_keys)
        return TeleopCommand(Action.joints(q - np.asarray(target, dtype=np.float64), gripper), self.latch.active,
                             tuple(events))
