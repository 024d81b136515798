"""``robot=so101``: LeRobot's SO-101 (and SO-100) follower arm, six Feetech STS3215 servos on one serial bus, driven
through ``feetech-servo-sdk`` (``pip install robotrl[so101]``; imported only when this robot connects).

Motors and registers follow LeRobot (``so_follower.py``, ``feetech/tables.py``): ids 1-6 = shoulder_pan,
shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper; 1 Mbaud, protocol 0 (little-endian);
``Present_Position`` at 56 (2 bytes, with ``Present_Velocity`` at 58 read in the same sync-read), ``Goal_Position``
at 42, ``Torque_Enable`` at 40, model number 777 at address 3. The calibration is the JSON file LeRobot users
already have (``{motor: {id, drive_mode, homing_offset, range_min, range_max}}``, from ``lerobot-calibrate``).

Units: the five arm joints in rad, with LeRobot's degree convention (``(raw - (min + max) / 2) * 360 / 4095`` deg,
sign flipped when ``drive_mode`` is 1), so a calibration gives the same angles here as in LeRobot. The gripper
command [0, 1] maps linearly to ``[range_max, range_min]`` (0 = open at ``range_max``; unverified on a physical arm:
flip ``drive_mode`` of the gripper if yours closes the other way). Only joint-delta actions: end-effector actions
would need the arm's kinematics, which this layer does not model (``ee_pos`` is ``None``).

Every bus error (no answer within the SDK's packet timeout, a corrupt checksum, a servo error bit) raises, so the
robot goes to FAULT; on disconnect torque is disabled (LeRobot's default: the arm then goes limp, so park it first)
and the port is closed even if that fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from robotrl.hardware.robot import Action, ActionMode, JointState, Robot, VendorLimits, monotonic, refuse_unknown_keys

from robotrl.errors import ConfigError

MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ARM_JOINTS = MOTORS[:5]
ADDR_MODEL, ADDR_TORQUE_ENABLE, ADDR_GOAL, ADDR_PRESENT = 3, 40, 42, 56
STS3215_MODEL = 777
MAX_RAW = 4095
RAD_PER_STEP = 2 * math.pi / MAX_RAW  # LeRobot's degrees: 360 / 4095 per step
STEPS_PER_S_TO_RAD = 2 * math.pi / 4096  # Present_Velocity is in steps/s
GRIPPER_MAX_WIDTH_M = 0.1  # nominal jaw opening, not measured: gripper_width = opening fraction * this
HOME_STEP_RAD, HOME_RATE_HZ = 0.02, 50.0  # reset_to_home interpolates this far per command, at this rate


@dataclass(frozen=True)
class MotorCalibration:
    """One motor's entry of a LeRobot calibration file (all ints)."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int

    @property
    def mid(self) -> float:
        return (self.range_min + self.range_max) / 2


def load_calibration(path: str | Path) -> dict[str, MotorCalibration]:
    """Read and validate a LeRobot SO-101 calibration JSON; raise ConfigError naming the bad entry."""
    path = Path(path).expanduser()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"robot.calibration_file={str(path)!r} is not a readable JSON file ({exc})") from None
    missing = [m for m in MOTORS if m not in raw]
    if missing:
        raise ConfigError(f"calibration {path} lacks motor {missing[0]!r}; expected entries for {list(MOTORS)}")
    cal = {}
    for i, motor in enumerate(MOTORS, start=1):
        entry = raw[motor]
        keys = ("id", "drive_mode", "homing_offset", "range_min", "range_max")
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), int) for k in keys):
            raise ConfigError(f"calibration {path}: {motor} must have int {list(keys)}, got {entry!r}")
        c = MotorCalibration(**{k: entry[k] for k in keys})
        if c.id != i:
            raise ConfigError(f"calibration {path}: {motor} has id {c.id}, expected {i}")
        if not 0 <= c.range_min < c.range_max <= MAX_RAW:
            raise ConfigError(f"calibration {path}: {motor} range [{c.range_min}, {c.range_max}] must satisfy "
                              f"0 <= range_min < range_max <= {MAX_RAW}")
        cal[motor] = c
    return cal


def _sign_magnitude(value: int, bit: int) -> int:
    """Feetech's sign-magnitude encoding (bit 15 for positions and velocities) to a Python int."""
    return -(value & ~(1 << bit)) if value & (1 << bit) else value


class FeetechBus:
    """The few bus operations the arm needs, each raising ``ConnectionError`` on any communication failure."""

    def __init__(self, port: str, baudrate: int, ids: tuple[int, ...], packet_timeout_ms: float | None = None) -> None:
        import scservo_sdk as scs  # the vendor SDK, imported only when an SO-101 connects

        self.scs, self.ids = scs, ids
        self.port = scs.PortHandler(port)
        if packet_timeout_ms is not None:  # as LeRobot patches it: the SDK's ~35 ms suits hardware, not emulators
            self.port.setPacketTimeout = lambda _length: self.port.setPacketTimeoutMillis(packet_timeout_ms)
        self.packets = scs.PacketHandler(0)  # protocol 0: STS/SMS, little-endian
        if not self.port.openPort():
            raise ConnectionError(f"cannot open serial port {port}")
        if not self.port.setBaudRate(baudrate):
            self.port.closePort()
            raise ConnectionError(f"cannot set {baudrate} baud on {port}")

    def _check(self, what: str, result: int, error: int = 0) -> None:
        if result != self.scs.COMM_SUCCESS:
            raise ConnectionError(f"{what}: {self.packets.getTxRxResult(result)}")
        if error:
            raise ConnectionError(f"{what}: servo error {self.packets.getRxPacketError(error)}")

    def ping(self, motor_id: int) -> int:
        """Return the model number of ``motor_id`` (ping, then a read of address 3)."""
        model, result, error = self.packets.ping(self.port, motor_id)
        self._check(f"ping id {motor_id}", result, error)
        return model

    def write1(self, motor_id: int, address: int, value: int) -> None:
        result, error = self.packets.write1ByteTxRx(self.port, motor_id, address, value)
        self._check(f"write id {motor_id} address {address}", result, error)

    def sync_read(self, address: int, length: int) -> dict[int, list[int]]:
        group = self.scs.GroupSyncRead(self.port, self.packets, address, length)
        for motor_id in self.ids:
            group.addParam(motor_id)
        self._check(f"sync read address {address}", group.txRxPacket())
        return {i: [group.getData(i, address + k, 1) for k in range(length)] for i in self.ids}

    def sync_write2(self, address: int, values: dict[int, int]) -> None:
        group = self.scs.GroupSyncWrite(self.port, self.packets, address, 2)
        for motor_id, value in values.items():
            group.addParam(motor_id, [value & 0xFF, (value >> 8) & 0xFF])
        self._check(f"sync write address {address}", group.txPacket())

    def close(self) -> None:
        self.port.closePort()


class SO101Robot(Robot):
    """The SO-101 follower arm over a Feetech bus."""

    name = "so101"
    joint_names: ClassVar[tuple[str, ...]] = ARM_JOINTS
    action_modes: ClassVar[tuple[ActionMode, ...]] = (ActionMode.JOINT_DELTA,)
    vendor_limits = VendorLimits(  # a servo turns one revolution; STS3215 no-load speed ~0.222 s/60 deg at 12 V
        joint_lower=(-math.pi,) * 5,
        joint_upper=(math.pi,) * 5,
        joint_max_velocity=(4.7,) * 5,
        workspace_lower=(-0.5, -0.5, -0.1),  # nominal reach (unused: no end-effector mode)
        workspace_upper=(0.5, 0.5, 0.6),
        ee_max_velocity=1.0,
        # The servo's Acceleration register maximum, 254 x 100 steps/s^2 (Feetech's STS memory table; LeRobot writes
        # 254) = 25400 * 2 pi / 4096 rad/s^2.
        joint_max_acceleration=(38.9,) * 5,
        ee_max_acceleration=2.0,  # nominal (unused: no end-effector mode)
    )
    # its stop (_hold) is one sync read and one sync write: two bus transactions of at most a packet timeout each
    # (~35 ms at 1 Mbaud), with a wide margin for a USB adapter's latency
    stop_timeout_s = 0.5

    def __init__(
        self,
        port: str,
        calibration: dict[str, MotorCalibration],
        baudrate: int = 1_000_000,
        disable_torque_on_disconnect: bool = True,
        home_rad: tuple[float, ...] = (0.0,) * 5,
        packet_timeout_ms: float | None = None,
    ) -> None:
        super().__init__()
        self.port_name, self.calibration, self.baudrate = port, calibration, baudrate
        self.disable_torque_on_disconnect = disable_torque_on_disconnect
        self.home_rad = np.asarray(home_rad, dtype=np.float64)
        self.packet_timeout_ms = packet_timeout_ms
        self.ids = tuple(calibration[m].id for m in MOTORS)
        self.bus: FeetechBus | None = None
        self._goal_raw: dict[str, int] = {}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SO101Robot:
        valid = {"port", "calibration_file", "baudrate", "disable_torque_on_disconnect", "home_rad",
                 "packet_timeout_ms"}
        refuse_unknown_keys(cfg, "so101", valid)
        for key in ("port", "calibration_file"):
            if not isinstance(cfg.get(key), str) or cfg[key] in ("", "???"):
                raise ConfigError(f"robot.{key}={cfg.get(key)!r}: robot=so101 needs it (e.g. robot.{key}=...)")
        home = tuple(cfg.get("home_rad") or (0.0,) * 5)
        if len(home) != 5:
            raise ConfigError(f"robot.home_rad has {len(home)} values, expected 5 ({list(ARM_JOINTS)})")
        timeout = cfg.get("packet_timeout_ms")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError(f"robot.packet_timeout_ms={timeout!r}, expected null (the SDK's) or a number > 0")
        return cls(cfg["port"], load_calibration(cfg["calibration_file"]), int(cfg.get("baudrate", 1_000_000)),
                   bool(cfg.get("disable_torque_on_disconnect", True)), home, timeout)

    def validate_limits(self, limits: Any) -> None:
        """Configured joint limits must lie inside each joint's calibrated range."""
        for i, joint in enumerate(ARM_JOINTS):
            c = self.calibration[joint]
            lo, hi = sorted((self.to_rad(joint, c.range_min), self.to_rad(joint, c.range_max)))
            if limits.joint_lower[i] < lo or limits.joint_upper[i] > hi:
                raise ConfigError(
                    f"robot.limits.joint[{i}] ({joint}) range [{limits.joint_lower[i]:.4f}, "
                    f"{limits.joint_upper[i]:.4f}] rad is outside its calibrated range [{lo:.4f}, {hi:.4f}] rad"
                )
            if not lo <= self.home_rad[i] <= hi:
                raise ConfigError(f"robot.home_rad[{i}]={self.home_rad[i]} ({joint}) is outside [{lo:.4f}, {hi:.4f}]")

    # ------------------------------------------------------------------------------------------ unit conversion
    def to_rad(self, joint: str, raw: float) -> float:
        c = self.calibration[joint]
        value = (raw - c.mid) * RAD_PER_STEP
        return -value if c.drive_mode else value

    def to_raw(self, joint: str, rad: float) -> int:
        c = self.calibration[joint]
        steps = (-rad if c.drive_mode else rad) / RAD_PER_STEP
        raw = int(round(c.mid + steps))
        if not c.range_min <= raw <= c.range_max:  # the safety layer keeps targets inside; never clip silently here
            raise ValueError(f"{joint} target {rad:.4f} rad = raw {raw} is outside its calibrated range "
                             f"[{c.range_min}, {c.range_max}]")
        return raw

    def _gripper_raw(self, command: float) -> int:
        c = self.calibration["gripper"]
        return int(round(c.range_max - command * (c.range_max - c.range_min)))

    # ------------------------------------------------------------------------------------------ hooks
    def _connect(self) -> None:
        self.bus = FeetechBus(self.port_name, self.baudrate, self.ids, self.packet_timeout_ms)
        try:
            for motor, motor_id in zip(MOTORS, self.ids, strict=True):
                model = self.bus.ping(motor_id)
                if model != STS3215_MODEL:
                    raise ConnectionError(f"{motor} (id {motor_id}) reports model {model}, expected {STS3215_MODEL}")
            self._goal_raw = self._present_raw()[0]
            self._write_goal()  # goal = present before torque on: enabling torque must not move the arm
            for motor_id in self.ids:
                self.bus.write1(motor_id, ADDR_TORQUE_ENABLE, 1)
        except BaseException:
            self.bus.close()
            raise

    def _present_raw(self) -> tuple[dict[str, int], dict[str, int]]:
        data = self.bus.sync_read(ADDR_PRESENT, 4)
        pos = {m: _sign_magnitude(data[i][0] | data[i][1] << 8, 15) for m, i in zip(MOTORS, self.ids, strict=True)}
        vel = {m: _sign_magnitude(data[i][2] | data[i][3] << 8, 15) for m, i in zip(MOTORS, self.ids, strict=True)}
        return pos, vel

    def _write_goal(self) -> None:
        self.bus.sync_write2(ADDR_GOAL, {self.calibration[m].id: self._goal_raw[m] for m in MOTORS})

    def _read_state(self) -> JointState:
        pos, vel = self._present_raw()
        q = np.array([self.to_rad(j, pos[j]) for j in ARM_JOINTS])
        sign = np.array([-1.0 if self.calibration[j].drive_mode else 1.0 for j in ARM_JOINTS])
        qd = sign * np.array([vel[j] for j in ARM_JOINTS]) * STEPS_PER_S_TO_RAD
        g = self.calibration["gripper"]
        opening = (pos["gripper"] - g.range_min) / (g.range_max - g.range_min)
        return JointState(
            joint_pos=q,
            joint_vel=qd,
            ee_pos=None,
            ee_quat=None,
            gripper_width=float(np.clip(opening, 0.0, 1.0)) * GRIPPER_MAX_WIDTH_M,
            timestamp=monotonic(),
            joint_target=np.array([self.to_rad(j, self._goal_raw[j]) for j in ARM_JOINTS]),
        )

    def _send(self, action: Action) -> Action:
        goal = dict(self._goal_raw)
        for joint, delta in zip(ARM_JOINTS, action.delta, strict=True):
            goal[joint] = self.to_raw(joint, self.to_rad(joint, goal[joint]) + float(delta))
        goal["gripper"] = self._gripper_raw(action.gripper)
        sent = np.array([self.to_rad(j, goal[j]) - self.to_rad(j, self._goal_raw[j]) for j in ARM_JOINTS])
        self._goal_raw = goal
        self._write_goal()
        return Action(action.mode, sent, action.gripper)  # after rounding to whole servo steps

    def _hold(self) -> None:
        self._goal_raw = self._present_raw()[0]
        self._write_goal()

    def _home(self) -> None:
        """Walk to ``home_rad`` in steps of at most HOME_STEP_RAD per joint at HOME_RATE_HZ (never one jump); an
        e-stop or Ctrl-C ends the walk within one step (``_pause``), then ``_hold`` sets the goal to the present."""
        current = np.array([self.to_rad(j, self._goal_raw[j]) for j in ARM_JOINTS])
        n = max(1, int(np.ceil(np.max(np.abs(self.home_rad - current)) / HOME_STEP_RAD)))
        for k in range(1, n + 1):
            waypoint = current + (self.home_rad - current) * k / n
            self._goal_raw.update({j: self.to_raw(j, q) for j, q in zip(ARM_JOINTS, waypoint, strict=True)})
            self._write_goal()
            self._pause(1.0 / HOME_RATE_HZ)  # a stop request ends the walk here; the base class holds

    def _disconnect(self) -> None:
        if self.bus is None:
            return
        errors = []
        if self.disable_torque_on_disconnect:
            for motor_id in self.ids:  # every motor, even after one failed
                try:
                    self.bus.write1(motor_id, ADDR_TORQUE_ENABLE, 0)
                except ConnectionError as exc:
                    errors.append(exc)
        self.bus.close()
        self.bus = None
        if errors:
            raise ConnectionError(f"torque off failed on {len(errors)} motor(s): {errors[0]}")
