"""``teleop=so101_leader``: an SO-101 leader arm on its own emulated Feetech bus driving a follower on a second one
(the pty emulator of test_so101.py, the real feetech-servo-sdk client on both). Asserts what is read from the
leader, that its torque is switched off and nothing is written to its goals, and the follower's bus writes: they
reach the leader's pose step by step, each step inside the safety layer's joint_max_step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from robotrl.hardware import make_robot
from robotrl.hardware.robot import ActionMode
from robotrl.hardware.teleop import TeleopError, TeleopEvent, make_teleop

from robotrl.errors import ConfigError
from tests.test_so101 import WRITE, FakeClock, FeetechEmulator, calibration_file, packet, so101_cfg, wait_for

pytest.importorskip("scservo_sdk", reason="teleop=so101_leader needs the so101 extra (feetech-servo-sdk)")
STEP_RAD = 2 * math.pi / 4095


@pytest.fixture
def buses():
    leader, follower = FeetechEmulator(), FeetechEmulator()
    yield leader, follower
    leader.close()
    follower.close()


def set_present(bus: FeetechEmulator, raw: dict[int, int]) -> None:
    for motor_id, value in raw.items():
        bus.regs[motor_id][56:58] = value.to_bytes(2, "little")


class Keys:
    def __init__(self):
        self.queue = []

    def open(self):
        pass

    def read(self):
        out, self.queue = self.queue, []
        return out

    def close(self):
        pass


def test_leader_pose_drives_the_follower_through_the_safety_layer(buses, tmp_path):
    leader_bus, follower_bus = buses
    cal = calibration_file(tmp_path)
    # the person moved the leader: pan +100 steps, elbow -60, wrist_roll +20; gripper a quarter open
    leader_raw = {1: 2148, 2: 2048, 3: 1988, 4: 2048, 5: 2068, 6: 1024 + 512}
    set_present(leader_bus, leader_raw)
    keys = Keys()
    leader = make_teleop({"name": "so101_leader", "port": leader_bus.port, "calibration_file": cal,
                          "packet_timeout_ms": 150, "intervention": "toggle"}, labels=keys)
    follower = make_robot(so101_cfg(follower_bus.port, cal, joint_max_step=0.05), clock=(clock := FakeClock()))
    with leader, follower:
        q, gripper = leader.read_pose()
        np.testing.assert_allclose(q, np.array([100, 0, -60, 0, 20]) * STEP_RAD)
        assert gripper == pytest.approx(0.75)  # a quarter open = command 0.75 (0 is open)
        keys.queue = [("space", None), ("y", None)]
        commands = []
        for _ in range(6):
            clock.t += 0.05
            cmd = leader.poll(follower.get_state())
            commands.append(cmd)
            follower.send_action(cmd.action)
        n_follower = len(follower_bus.goal_writes())
    assert commands[0].events == (TeleopEvent.TAKE_OVER, TeleopEvent.SUCCESS) and commands[0].intervening
    assert all(c.action.mode is ActionMode.JOINT_DELTA for c in commands)
    wait_for(lambda: len(follower_bus.goal_writes()) >= n_follower)
    goals = follower_bus.goal_writes()[1:7]  # after connect's goal = present, the six commands
    pan = [g[1] for g in goals]
    assert pan[-1] == 2148 and goals[-1][3] == 1988 and goals[-1][5] == 2068  # the leader's pose, to the step
    steps = np.diff([2048, *pan]) * STEP_RAD
    assert steps.max() <= 0.05 + STEP_RAD and pan[:3] == sorted(pan[:3]) and pan[0] < 2148  # clipped, converging
    assert all(g[6] == 3072 - round(0.75 * 2048) for g in goals)  # gripper raw = range_max - command * range
    # the leader: pinged, torque off on every motor, then only reads; never a goal or torque-on write
    writes = [p for p in leader_bus.received if p[4] == WRITE]
    assert writes == [packet(i, WRITE, bytes([40, 0])) for i in range(1, 7)]
    assert not [p for p in leader_bus.received if p[4] == 0x83]  # no SYNC_WRITE


def test_leader_refuses_a_follower_that_is_not_an_so101(buses, tmp_path):
    leader_bus, _ = buses
    leader = make_teleop({"name": "so101_leader", "port": leader_bus.port, "calibration_file":
                          calibration_file(tmp_path), "packet_timeout_ms": 150})
    with leader, pytest.raises(TeleopError, match=r"teleop so101_leader: needs the follower's state with 5 joints"):
        leader.poll(None)


def test_leader_bus_lost_and_bad_config(buses, tmp_path):
    leader_bus, follower_bus = buses
    cal = calibration_file(tmp_path)
    with pytest.raises(ConfigError, match=r"teleop.port=None: teleop=so101_leader needs it"):
        make_teleop({"name": "so101_leader", "calibration_file": cal})
    leader = make_teleop({"name": "so101_leader", "port": leader_bus.port, "calibration_file": cal,
                          "packet_timeout_ms": 150})
    with leader:
        leader_bus.silent = True
        with pytest.raises(TeleopError, match=r"teleop so101_leader: lost the leader's bus on .*no status packet"):
            leader.read_pose()
    with pytest.raises(TeleopError, match=r"teleop so101_leader: cannot connect on /dev/robotrl_absent"):
        make_teleop({"name": "so101_leader", "port": "/dev/robotrl_absent", "calibration_file": cal}).connect()
