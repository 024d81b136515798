"""`robotrl record robot=so101 teleop=so101_leader`: the leader arm on one emulated Feetech bus drives the follower on
another (test_so101.py's pty emulator, the real feetech-servo-sdk client on both) through the joint-space RobotEnv
and its safety layer, as LeRobot records an SO-101: the follower's goal writes reach the leader's pose step by step,
each inside joint_max_step; the episode holds joint-space states and actions (commanded vs executed) and a label."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from robotrl.hardware.teleop import make_teleop

from robotrl.errors import ConfigError
from robotrl.workflows.record import record
from robotrl.workflows.replay_episode import ReplayDriftError, replay
from tests.camera_helpers import write_video
from tests.test_so101 import FeetechEmulator, calibration_file, wait_for
from tests.test_teleop_leader import set_present

pytest.importorskip("scservo_sdk", reason="robot=so101 needs the so101 extra (feetech-servo-sdk)")
pytest.importorskip("cv2", reason="file-fed cameras need opencv-python-headless (the cameras extra, in dev)")
STEP_RAD = 2 * math.pi / 4095
ENV = {"image_size": "32", "frame_stack": "2", "action_repeat": "2"}


class LabelAfter:
    """The terminal's keys: ``y`` (success) at the ``at``-th read, nothing before."""

    def __init__(self, at: int) -> None:
        self.at, self.reads = at, 0

    def open(self):
        pass

    def read(self):
        self.reads += 1
        return [("y", None)] if self.reads == self.at else []

    def close(self):
        pass


@pytest.fixture
def buses():
    leader, follower = FeetechEmulator(), FeetechEmulator()
    yield leader, follower
    leader.close()
    follower.close()


def follower_overrides(port: str, cal: str, video) -> dict[str, str]:
    cam = {"type": "opencv", "path": str(video), "fps": 30, "loop": True, "crop": [0, 8, 48, 48], "resize": 32,
           "max_frame_age_ms": 1000, "max_repeat_reads": 10}
    # packet_timeout_ms 500: the Python emulator answers late on a loaded shared CPU (150 missed a ping at load 13)
    return {"port": port, "calibration_file": cal, "packet_timeout_ms": "500", "limits.control_hz": "20",
            "limits.watchdog_ms": "2000", "limits.driver_timeout_ms": "3000", "limits.joint_lower": "-1.2",
            "limits.joint_upper": "1.2", "limits.joint_max_step": "0.05", "limits.joint_max_velocity": "2.0",
            "limits.overrun_factor": "1000", "limits.max_consecutive_overruns": "1000",
            "cameras": json.dumps({"front": cam})}


def test_so101_leader_records_the_follower_through_the_safety_layer(buses, tmp_path, request):
    leader_bus, follower_bus = buses
    cal = calibration_file(tmp_path)
    # the person holds the leader at: pan +100 steps, elbow -60, wrist_roll +20 (rad: x STEP_RAD); gripper 1/4 open
    set_present(leader_bus, {1: 2148, 2: 2048, 3: 1988, 4: 2048, 5: 2068, 6: 1024 + 512})
    leader = make_teleop({"name": "so101_leader", "port": leader_bus.port, "calibration_file": cal,
                          "packet_timeout_ms": 500}, labels=LabelAfter(at=5))
    out, video = tmp_path / "session", write_video(tmp_path / "v.avi", 60)
    summary = record(robot="so101", teleop="so101_leader", episodes=1, steps=20, reset_s=0, out=str(out),
                     export="none", device=leader,
                     overrides={"robot": follower_overrides(follower_bus.port, cal, video), "env": ENV})
    assert summary["kept"] == 1 and summary["labels"] == {"success": 1}, summary
    meta = json.loads((out / "meta.json").read_text())
    assert meta["robot"] == "so101" and meta["action_dim"] == 6 and meta["state_dim"] == 12
    assert meta["state_names"][:2] == ["shoulder_pan.pos", "shoulder_lift.pos"] and meta["rad_per_unit"] == [0.05] * 5
    ep = np.load(out / "episode_000000.npz")
    assert len(ep["action"]) == 4  # the 5th poll carried the label (it moves nothing)
    # the follower's bus: goals converge on the leader's pose, every command inside joint_max_step
    wait_for(lambda: len(follower_bus.goal_writes()) >= 9)
    goals = follower_bus.goal_writes()
    pan = [g[1] for g in goals]
    # (to the servo's step: the pose is split over the sends in rad, so a remaining step of 1 raw unit is sent as two
    # halves that the driver rounds: +-1 step of jitter around the pose, 0.0015 rad)
    assert abs(pan[-1] - 2148) <= 1 and abs(goals[-1][3] - 1988) <= 1 and abs(goals[-1][5] - 2068) <= 1, goals[-1]
    assert max(abs(d) for d in np.diff(pan)) * STEP_RAD <= 0.05 + STEP_RAD, pan  # each command inside the limit
    reached = next(i for i, p in enumerate(pan) if p >= 2147)
    assert pan[:reached + 1] == sorted(pan[:reached + 1]) and reached >= 5, pan  # approached over several sends
    assert max(pan) <= 2149 and min(pan[reached:]) >= 2147, pan  # then held at the pose, no overshoot past a step
    assert goals[-1][6] == 3072 - round(0.75 * 2048)  # gripper raw = range_max - command * range
    # the episode: the leader's command (pan 0.153 rad over 2 sends = 1.53 units) vs what the safety layer sent (1)
    np.testing.assert_allclose(ep["commanded_action"][0, :5], np.array([100, 0, -60, 0, 20]) * STEP_RAD / 2 / 0.05,
                               atol=1e-4)
    # (sent = what reached the servo, in whole raw steps: 1 step = 0.03 units)
    np.testing.assert_allclose(ep["action"][0], [1.0, 0.0, -0.9212, 0.0, 0.3071, 0.5], atol=0.035)
    assert np.abs(ep["action"]).max() <= 1.0 and ep["intervention"].all() and ep["success"][-1]
    state = ep["state"]  # joint angles (rad), gripper opening; the last one at the leader's pose
    assert state.shape == (5, 12)
    np.testing.assert_allclose(state[-1, :5], np.array([100, 0, -60, 0, 20]) * STEP_RAD, atol=2 * STEP_RAD)
    assert state[-1, 5] == pytest.approx(0.25, abs=0.01)
    # robotrl replay on a follower (a fresh bus; homed first): the recorded joint angles again, through the safety layer
    again = FeetechEmulator()
    request.addfinalizer(again.close)
    robot = {k: v for k, v in follower_overrides(again.port, cal, video).items() if k != "cameras"}
    report = replay(episode=str(out / "episode_000000.npz"), robot="so101", robot_overrides=robot,
                    max_drift_rad=2 * STEP_RAD)
    assert report["ok"] and report["steps"] == 4 and report["joint_drift_max_rad"] <= 2 * STEP_RAD, report
    with pytest.raises(ConfigError, match="max_drift_m= does not apply .* use max_drift_rad"):
        replay(episode=str(out / "episode_000000.npz"), robot="so101", robot_overrides=robot, max_drift_m=0.01)
    arrays = dict(np.load(out / "episode_000000.npz"))  # the check can fail: other actions, other joint angles
    arrays["action"][:, 0] = 0.0
    np.savez_compressed(out / "episode_000000.npz", **arrays)
    with pytest.raises(ReplayDriftError, match=r"rad from the recording, more than max_drift_rad"):
        replay(episode=str(out / "episode_000000.npz"), robot="so101", robot_overrides=robot,
               max_drift_rad=2 * STEP_RAD)


def test_an_end_effector_device_on_so101_is_refused(buses, tmp_path):
    _, follower_bus = buses
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"delta_m": [0.01, 0, 0]}]))
    device = make_teleop({"name": "scripted", "script": str(script)})
    with pytest.raises(ConfigError, match="robot=so101 takes no end-effector actions"):
        record(robot="so101", teleop="scripted", episodes=1, steps=5, reset_s=0, out=str(tmp_path / "s"),
               export="none", device=device, overrides={"robot": follower_overrides(
                   follower_bus.port, calibration_file(tmp_path), write_video(tmp_path / "v.avi", 10)), "env": ENV})
