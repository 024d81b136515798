"""robot=so101 against an emulated Feetech STS3215 bus on a pseudo-terminal: the real ``feetech-servo-sdk`` client
code talks to it over a serial port, and the tests assert the exact bytes written (reliability cases 5-8, 16)."""

from __future__ import annotations

import json
import math
import os
import select
import threading
import time
import tty
from typing import Any

import numpy as np
import pytest
from robotrl.hardware import make_robot
from robotrl.hardware.robot import Action, DriverError, RobotState, RobotStateError, UnsafeActionError

from robotrl.errors import ConfigError

pytest.importorskip("scservo_sdk", reason="robot=so101 needs the so101 extra (feetech-servo-sdk)")

PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def checksum(body: bytes) -> int:
    """Feetech checksum: bitwise NOT of the sum of ID..last parameter, low byte."""
    return ~sum(body) & 0xFF


def packet(motor_id: int, instr_or_err: int, params: bytes = b"") -> bytes:
    body = bytes([motor_id, len(params) + 2, instr_or_err]) + params
    return b"\xff\xff" + body + bytes([checksum(body)])


class FeetechEmulator:
    """Servos 1-6 as register files behind a pty: answers PING, READ, WRITE, SYNC_READ, SYNC_WRITE; a written goal
    position becomes the present position at once. ``received`` holds every instruction packet, byte-exact."""

    def __init__(self, present: int = 2048) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.regs = {i: bytearray(256) for i in range(1, 7)}
        for regs in self.regs.values():
            regs[3:5] = (777).to_bytes(2, "little")  # STS3215 model number
            regs[56:58] = present.to_bytes(2, "little")
        self.received: list[bytes] = []
        self.silent = False  # stop answering (a hung or unplugged bus)
        self.corrupt = False  # answer with a wrong checksum
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        os.close(self.master)
        os.close(self.slave)

    def _reply(self, motor_id: int, data: bytes = b"") -> None:
        if self.silent:
            return
        out = packet(motor_id, 0, data)
        if self.corrupt:
            out = out[:-1] + bytes([out[-1] ^ 0xFF])
        os.write(self.master, out)

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.02)[0]:
                continue
            try:
                self._buf += os.read(self.master, 1024)
            except OSError:
                return
            while len(self._buf) >= 6 and self._buf[:2] == b"\xff\xff" and len(self._buf) >= self._buf[3] + 4:
                n = self._buf[3] + 4
                pkt, self._buf = self._buf[:n], self._buf[n:]
                self.received.append(pkt)
                if checksum(pkt[2:-1]) == pkt[-1]:
                    self._handle(pkt[2], pkt[4], pkt[5:-1])

    def _handle(self, motor_id: int, instr: int, params: bytes) -> None:
        if instr == PING:
            self._reply(motor_id)
        elif instr == READ:
            addr, n = params
            self._reply(motor_id, bytes(self.regs[motor_id][addr : addr + n]))
        elif instr == WRITE:
            self._write(motor_id, params[0], params[1:])
            self._reply(motor_id)
        elif instr == SYNC_READ:
            addr, n = params[:2]
            for i in params[2:]:
                self._reply(i, bytes(self.regs[i][addr : addr + n]))
        elif instr == SYNC_WRITE:
            addr, n = params[:2]
            for k in range(2, len(params), n + 1):
                self._write(params[k], addr, params[k + 1 : k + 1 + n])

    def _write(self, motor_id: int, addr: int, data: bytes) -> None:
        self.regs[motor_id][addr : addr + len(data)] = data
        if addr == 42:  # Goal_Position: the servo gets there at once
            self.regs[motor_id][56:58] = data[:2]

    def goal_writes(self) -> list[dict[int, int]]:
        """Every SYNC_WRITE of Goal_Position decoded: [{id: raw goal}]."""
        out = []
        for pkt in self.received:
            if pkt[4] == SYNC_WRITE and pkt[5] == 42:
                p = pkt[7:-1]
                out.append({p[k]: p[k + 1] | p[k + 2] << 8 for k in range(0, len(p), 3)})
        return out


@pytest.fixture
def bus():
    emulator = FeetechEmulator()
    yield emulator
    emulator.close()


def wait_for(condition: Any, timeout: float = 2.0) -> None:
    """Packets without a reply (sync writes) reach the emulator asynchronously: wait until it has read them."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def calibration_file(tmp_path, **override: Any) -> str:
    """A LeRobot-format calibration: every motor centred at 2048 with range 1024..3072 (+-pi/2 rad)."""
    cal = {m: {"id": i, "drive_mode": 0, "homing_offset": 0, "range_min": 1024, "range_max": 3072}
           for i, m in enumerate(MOTORS, start=1)}
    cal.update(override)
    path = tmp_path / "so101_test.json"
    path.write_text(json.dumps(cal))
    return str(path)


def so101_cfg(port: str, cal: str, **limits: Any) -> dict[str, Any]:
    return {
        "name": "so101",
        "port": port,
        "calibration_file": cal,
        "packet_timeout_ms": 150,  # a Python emulator on a shared CPU can take longer than the SDK's ~35 ms
        "limits": {
            "control_hz": 20, "watchdog_ms": 1000, "driver_timeout_ms": 3000, "on_limit": "clip",
            "joint_lower": -1.2, "joint_upper": 1.2, "joint_max_step": 0.05, "joint_max_velocity": 2.0,
            "ee_max_step": 0.01, "ee_max_velocity": 0.5, **limits,
        },
    }  # fmt: skip


def test_exact_bytes_on_connect_move_and_disconnect(bus, tmp_path):
    layer = make_robot(so101_cfg(bus.port, calibration_file(tmp_path)))
    with layer:
        n_connect = len(bus.received)
        sent = layer.send_action(Action.joints([0.01, 0, 0, 0, -0.01], gripper=0.0))
    wait_for(lambda: len(bus.received) >= n_connect + 3 + 12)
    assert bus.received[n_connect] == packet(0xFE, SYNC_READ, bytes([56, 4, 1, 2, 3, 4, 5, 6]))  # state check first
    write = bus.received[n_connect + 1]
    # connect: ping + model read per motor, sync-read of position+velocity, goal = present, torque on per motor
    assert bus.received[0] == bytes([0xFF, 0xFF, 0x01, 0x02, PING, 0xFB])
    assert bus.received[1] == packet(1, READ, bytes([3, 2]))
    assert bus.received[12] == packet(0xFE, SYNC_READ, bytes([56, 4, 1, 2, 3, 4, 5, 6]))
    goal_is_present = b"".join(bytes([i, 0x00, 0x08]) for i in range(1, 7))  # 2048 = 0x0800, little-endian
    assert bus.received[13] == packet(0xFE, SYNC_WRITE, bytes([42, 2]) + goal_is_present)
    assert bus.received[14:20] == [packet(i, WRITE, bytes([40, 1])) for i in range(1, 7)]
    # the move: 0.01 rad = 6.5 steps -> 7 (pan +, wrist_roll -), gripper 0 = open = range_max 3072
    goals = {1: 2048 + 7, 2: 2048, 3: 2048, 4: 2048, 5: 2048 - 7, 6: 3072}
    assert write == packet(0xFE, SYNC_WRITE, bytes([42, 2]) + b"".join(
        bytes([i, g & 0xFF, g >> 8]) for i, g in goals.items()))
    assert sent.delta[0] == pytest.approx(7 * 2 * math.pi / 4095)  # what was sent, after rounding to whole steps
    # disconnect: hold (read present, goal = present), then torque off per motor
    assert bus.received[-6:] == [packet(i, WRITE, bytes([40, 0])) for i in range(1, 7)]
    assert layer.state is RobotState.DISCONNECTED


def test_nothing_unchecked_reaches_the_bus(bus, tmp_path):
    """NaN is never written; 500 random (often huge) actions keep every written goal inside the joint limits and
    its steps within joint_max_step (finite differences of the bytes on the bus)."""
    layer = make_robot(so101_cfg(bus.port, calibration_file(tmp_path)), clock=(clock := FakeClock()))
    rng = np.random.default_rng(0)
    with layer:
        before = len(bus.goal_writes())
        with pytest.raises(UnsafeActionError, match="non-finite action on \\['elbow_flex'\\]"):
            layer.send_action(Action.joints([0, 0, np.nan, 0, 0]))
        assert [e for e in layer.events if e["kind"] == "nonfinite"][0]["axes"] == ["elbow_flex"]
        assert layer.state is RobotState.HOLD
        assert len(bus.goal_writes()) == before + 1  # only the hold (goal = present), no command
        layer.resume()
        for k in range(500):
            clock.t += 0.05  # 20 Hz
            push = 0.2 if k < 100 else 0.0  # drive every joint into its upper limit first
            delta = rng.normal(0, 1, 5) * 10.0 ** rng.integers(-3, 3) + push
            layer.send_action(Action.joints(delta, rng.uniform(-1, 2)))
    wait_for(lambda: len(bus.goal_writes()) >= 500 + 4)
    rad = np.array([[w[i] - 2048 for i in range(1, 6)] for w in bus.goal_writes()]) * 2 * math.pi / 4095
    assert np.all(np.abs(rad) <= 1.2 + 1e-3)  # +- half a servo step of rounding
    assert np.all(np.abs(np.diff(rad, axis=0)) <= 0.05 + 2 * math.pi / 4095)
    assert all(1024 <= w[6] <= 3072 for w in bus.goal_writes())
    assert layer.counts["joint_limit"] > 0 and layer.counts["joint_step"] > 0


def test_silent_bus_times_out_faults_and_still_closes_the_port(bus, tmp_path):
    layer = make_robot(so101_cfg(bus.port, calibration_file(tmp_path)))
    with pytest.raises(DriverError, match="sync read address 56: \\[TxRxResult\\] There is no status packet"), layer:
        layer.send_action(Action.joints([0.01, 0, 0, 0, 0]))
        layer.get_state()  # answered: the emulator has read everything before it
        bus.silent = True
        n = len(bus.received)
        layer.get_observation()
    wait_for(lambda: len(bus.received) >= n + 1 + 6)
    assert len(bus.received) == n + 1 + 6  # the failed read, then only the torque-off attempt: no goal writes
    assert layer.inner.bus is None and layer.state is RobotState.DISCONNECTED  # port closed
    assert "driver_error" in [e["kind"] for e in layer.events]


def test_corrupt_reply_is_a_fault(bus, tmp_path):
    layer = make_robot(so101_cfg(bus.port, calibration_file(tmp_path)))
    with layer:
        bus.corrupt = True
        with pytest.raises(DriverError, match="sync read address 56"):
            layer.get_state()
        assert layer.state is RobotState.FAULT
        with pytest.raises(RobotStateError):
            layer.send_action(Action.joints([0.01, 0, 0, 0, 0]))


@pytest.mark.parametrize(
    ("override", "limits", "message"),
    [
        ({"elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 0, "range_min": 3000, "range_max": 1000}}, {},
         "elbow_flex range \\[3000, 1000\\]"),
        ({"gripper": {"id": 9, "drive_mode": 0, "homing_offset": 0, "range_min": 0, "range_max": 4095}}, {},
         "gripper has id 9, expected 6"),
        ({}, {"joint_upper": 2.0}, "joint\\[0\\] \\(shoulder_pan\\) range .* outside its calibrated range"),
    ],
)
def test_calibration_and_limits_are_checked_before_connecting(bus, tmp_path, override, limits, message):
    with pytest.raises(ConfigError, match=message):
        make_robot(so101_cfg(bus.port, calibration_file(tmp_path, **override), **limits))
    assert bus.received == []  # nothing was sent on the bus
