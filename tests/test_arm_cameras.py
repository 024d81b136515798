"""Cameras attached to an arm by config (``robot.cameras={front: {type: opencv, ...}}``) on robot=mock, fed from
video files: frames reach the observation cropped and resized, a frozen stream holds the arm naming the camera, a
camera lost past its reconnect time faults the arm, a camera that cannot open leaves no arm connected."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from robotrl.hardware.cameras.opencv import OpenCVCamera
from robotrl.hardware.obs_checks import CameraError
from robotrl.hardware.robot import Action, DriverError, RobotState, RobotStateError

from robotrl.errors import ConfigError
from tests.camera_helpers import grey_index, wait_until, write_video

pytest.importorskip("cv2", reason="file-fed cameras need opencv-python-headless (the cameras extra, in dev)")


def mock_config(cameras: dict, **limits) -> dict:
    from robotrl.workflows.run_env import load_robot_config

    return load_robot_config("mock", {"limits.watchdog_ms": 5000, **limits}, {"cameras": cameras})


def file_camera(path, **extra) -> dict:
    return {"type": "opencv", "path": str(path), "fps": 30, "loop": True, "warmup_frames": 0, **extra}


def freeze_grabs(monkeypatch) -> threading.Event:
    """After ``freeze.set()`` every OpenCV grab stalls (a V4L2 device that stopped delivering): no new frame."""
    freeze = threading.Event()
    grab = OpenCVCamera._grab

    def stalling(self):
        if freeze.is_set():
            time.sleep(0.02)
            return None
        return grab(self)

    monkeypatch.setattr(OpenCVCamera, "_grab", stalling)
    return freeze


def test_file_camera_frames_reach_the_observation_cropped_and_resized(tmp_path):
    from robotrl.hardware import make_robot

    video = write_video(tmp_path / "front.avi", 30, size=(48, 64))
    layer = make_robot(mock_config({"front": file_camera(video, crop=[0, 8, 48, 48], resize=32)}))
    assert layer.camera_names == ("front",)  # the video camera replaced the mock's generated one
    with layer:
        seqs, greys = [], []
        for _ in range(4):
            obs = layer.get_observation()
            frame = obs.frames["front"]
            assert frame.image.shape == (32, 32, 3) and frame.image.dtype == np.uint8
            assert frame.image[2, 2].tolist()[0] > 200 > frame.image[2, 2].tolist()[2]  # the red patch, as RGB
            seqs.append(frame.seq)
            greys.append(grey_index(frame.image))
            time.sleep(0.05)
        assert seqs == sorted(seqs) and len(set(seqs)) >= 3  # new frames from the file, in order
        assert layer.inner.rig.cameras["front"].is_connected
    assert not layer.inner.rig.cameras["front"].is_connected  # closed with the arm


def test_frozen_stream_holds_the_arm_and_names_the_camera(tmp_path, monkeypatch):
    from robotrl.hardware import make_robot

    freeze = freeze_grabs(monkeypatch)
    video = write_video(tmp_path / "wrist.avi", 30)
    layer = make_robot(mock_config({"wrist": file_camera(video, max_frame_age_ms=300)}))
    with layer:
        layer.get_observation()
        layer.send_action(Action.ee([0.0, 0.0, 0.001]))
        freeze.set()
        time.sleep(1.5)  # 5x max_frame_age_ms: the newest frame is stale even if a grab in flight landed late
        with pytest.raises(CameraError, match="camera 'wrist' stale"):
            layer.get_observation()
        assert layer.state is RobotState.HOLD
        event = [e for e in layer.events if e["kind"] == "camera_error"][-1]
        assert event["camera"] == "wrist" and "wrist" in event["detail"]
        with pytest.raises(RobotStateError, match="camera_error"):  # nothing moves until someone resumes
            layer.send_action(Action.ee([0.0, 0.0, 0.001]))


def test_repeated_frames_are_frozen_before_they_are_old(tmp_path, monkeypatch):
    """A loop faster than the camera sees the same frame a few times; the max_repeat_reads-th read without a new
    frame is invalid even while the frame is younger than max_frame_age_ms."""
    from robotrl.hardware import make_robot

    freeze = freeze_grabs(monkeypatch)
    video = write_video(tmp_path / "front.avi", 30)
    layer = make_robot(mock_config({"front": file_camera(video, max_frame_age_ms=60_000, max_repeat_reads=3)}))
    with layer:
        layer.get_observation()
        freeze.set()
        time.sleep(0.5)  # let a grab already in flight land
        with pytest.raises(CameraError, match="camera 'front' frozen"):
            for _ in range(5):  # the first may see the in-flight frame; the 3rd repeat after it is invalid
                layer.get_observation()
        assert layer.state is RobotState.HOLD


def test_camera_lost_past_reconnect_time_faults_the_arm(tmp_path):
    from robotrl.hardware import make_robot

    video = write_video(tmp_path / "front.avi", 6)  # 0.2 s at 30 fps, no loop: its end is an unplug
    layer = make_robot(mock_config({"front": file_camera(video, loop=False, reconnect_s=0.3,
                                                         retry_interval_s=0.05)}))
    with layer:
        layer.get_observation()
        video.unlink()  # re-opening fails: the camera stays lost
        cam = layer.inner.rig.cameras["front"]
        wait_until(lambda: cam._fault is not None, timeout=10.0, what="the camera fault")
        with pytest.raises(DriverError, match="camera 'front'.*reconnect_s=0.3.*FAULT"):
            layer.get_observation()
        assert layer.state is RobotState.FAULT


def test_camera_that_cannot_open_leaves_no_arm_connected(tmp_path, monkeypatch):
    from robotrl.hardware import make_robot
    from robotrl.hardware.mock import MockRobot

    connects = []
    original = MockRobot._connect
    monkeypatch.setattr(MockRobot, "_connect", lambda self: (connects.append(1), original(self))[1])
    layer = make_robot(mock_config({"front": file_camera(tmp_path / "missing.avi", connect_timeout_s=1.0)}))
    try:
        with pytest.raises(DriverError, match="camera 'front': cannot open"):
            layer.connect()
    finally:
        layer.disconnect()
    assert connects == []


@pytest.mark.parametrize(("robot", "cameras", "message"), [
    ("sim", {"front": {"type": "opencv", "index": 0}}, "robot=sim renders its cameras"),
    ("mock", {"front": {"type": "opencv", "index": 0, "exposure": 3}}, "unknown key robot.cameras.front.exposure"),
    ("mock", {"front": {"type": "webcam", "index": 0}}, r"robot.cameras.front.type='webcam'"),
])
def test_bad_camera_configs_are_refused_in_one_line(robot, cameras, message):
    from robotrl.hardware import make_robot

    from robotrl.workflows.run_env import load_robot_config

    with pytest.raises(ConfigError, match=message):
        make_robot(load_robot_config(robot, {}, {"cameras": cameras}))


def test_franka_takes_cameras_by_the_readme_override():
    """The README's override reaches the driver as an attached rig (nothing connects)."""
    from robotrl.hardware import make_robot

    from robotrl.workflows.run_env import load_robot_config

    override = "{front: {type: opencv, index: 0, width: 640, height: 480, fps: 30}}"
    pytest.importorskip("franky", reason="robot=franka needs the franka extra")
    layer = make_robot(load_robot_config("franka", {"hostname": "127.0.0.1", "cameras": override}))
    assert layer.camera_names == ("front",) and layer.inner.rig.cameras["front"].config.width == 640
    with pytest.raises(ConfigError, match="max_camera_skew_ms=-1"):
        make_robot(load_robot_config("franka", {"hostname": "127.0.0.1", "cameras": override,
                                                "max_camera_skew_ms": -1}))


def test_so101_on_its_emulated_bus_with_a_file_camera(tmp_path):
    """robot=so101 (an emulated Feetech bus) with a camera attached by config: joint commands reach the bus, the
    observation holds the camera's frames, and the camera closes with the arm."""
    pytest.importorskip("scservo_sdk", reason="robot=so101 needs the so101 extra (feetech-servo-sdk)")
    from robotrl.hardware import make_robot

    from tests.test_so101 import FeetechEmulator, calibration_file, so101_cfg

    bus = FeetechEmulator()
    try:
        cfg = so101_cfg(bus.port, calibration_file(tmp_path))
        cfg["cameras"] = {"wrist": file_camera(write_video(tmp_path / "wrist.avi", 30), resize=[24, 32])}
        layer = make_robot(cfg)
        assert layer.camera_names == ("wrist",)
        with layer:
            obs = layer.get_observation()
            assert obs.frames["wrist"].image.shape == (24, 32, 3) and obs.frames["wrist"].seq >= 1
            layer.send_action(Action.joints([0.01, 0, 0, 0, 0]))
            wait_until(lambda: bus.goal_writes(), what="a goal write on the bus")
        assert not layer.inner.rig.cameras["wrist"].is_connected
    finally:
        bus.close()


def test_cameras_further_apart_than_the_skew_are_flagged_not_refused(tmp_path, monkeypatch, caplog):
    from robotrl.hardware import make_robot

    grab = OpenCVCamera._grab
    stalled = threading.Event()
    monkeypatch.setattr(OpenCVCamera, "_grab", lambda self: (time.sleep(0.02), None)[1]
                        if stalled.is_set() and self.name == "side" else grab(self))
    video = write_video(tmp_path / "v.avi", 30)
    relaxed = {"max_frame_age_ms": 60_000, "max_repeat_reads": 1000}
    cfg = mock_config({"front": file_camera(video, **relaxed), "side": file_camera(video, **relaxed)})
    cfg["max_camera_skew_ms"] = 100
    layer = make_robot(cfg)
    with layer:
        layer.get_observation()
        assert layer.inner.camera_flags == ()
        stalled.set()
        time.sleep(0.5)
        obs = layer.get_observation()  # still valid: skew is a flag
        assert set(obs.frames) == {"front", "side"} and layer.state is not RobotState.HOLD
        (flag,) = layer.inner.camera_flags
        assert flag.kind == "skew" and flag.camera == "side" and "max_skew_ms=100" in flag.detail
    assert "camera 'side' skew" in caplog.text


def test_training_overrides_compose_through_hydra():
    """`robotrl train ... robot=franka robot.cameras={...} robot_env.live_view=FILE.rrd` (the README's training
    form) composes, and the composed robot config attaches the camera (nothing connects)."""
    pytest.importorskip("franky", reason="robot=franka needs the franka extra")
    from hydra import compose, initialize_config_module
    from robotrl.hardware import make_robot

    from robotrl.config import register_hydra

    cams = "{corner2: {type: opencv, index: 0, width: 640, height: 480, fps: 30, crop: [0, 80, 480, 480], resize: 84}}"
    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=["robot=franka", "robot.hostname=127.0.0.1", f"robot.cameras={cams}",
                                           "robot_env.live_view=train.rrd"])
    assert cfg.robot_env.live_view == "train.rrd"
    layer = make_robot(cfg.robot)
    assert layer.camera_names == ("corner2",)
    assert layer.inner.rig.cameras["corner2"].config.crop == (0, 80, 480, 480)
