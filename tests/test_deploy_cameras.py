"""`robotrl deploy` of a pixel policy on robot=franka (franky-sim) with a camera fed from a video file: the policy
sees the camera's frames (cropped and resized by config), the live view's .rrd holds the frames, the policy's and
the executed actions and the safety events; a camera that stops delivering holds the arm and names the camera."""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import numpy as np
import pytest
from robotrl.hardware.cameras.opencv import OpenCVCamera
from robotrl.hardware.obs_checks import CameraError

from robotrl.workflows.deploy import deploy
from tests.camera_helpers import write_video
from tests.deploy_helpers import train_reach_policy
from tests.franky_helpers import FrankySim

pytest.importorskip("cv2", reason="file-fed cameras need opencv-python-headless (the cameras extra, in dev)")
pytest.importorskip("rerun", reason="the live view needs rerun-sdk (the live extra, in dev)")
pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if importlib.util.find_spec("franky_sim") is None:
    pytest.skip("the robot=franka tests need franky-sim (in the dev extra)", allow_module_level=True)

from robotrl.live_view import read_rrd  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_reach_policy(tmp_path_factory.mktemp("reach"))  # pixels, camera corner2, 32 x 32, action_repeat 2


@pytest.fixture(scope="module")
def server():
    with FrankySim() as running:
        yield running


def franka_overrides(host: str, video, **camera) -> dict:
    """franky-sim, limits for 2 shared cores (as tests/test_robot_env_franka.py), and the policy's camera (named as
    in training: corner2) fed from ``video``: the 48 x 64 file cropped to a square and resized to 32."""
    # max_frame_age_ms 1 s: a capture thread starved by a loaded CPU (a ~350 ms stall was measured) is not the test
    cam = {"type": "opencv", "path": str(video), "fps": 30, "loop": True, "crop": [0, 8, 48, 48], "resize": 32,
           "max_frame_age_ms": 1000, "max_repeat_reads": 10, **camera}
    return {"hostname": host, "realtime": "ignore", "relative_dynamics_factor": 0.3,
            "home_rad": [0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785], "limits.watchdog_ms": 2000,
            "limits.driver_timeout_ms": 3000, "limits.overrun_factor": 1000, "cameras": {"corner2": cam}}


def test_pixel_policy_deploys_on_franka_with_a_video_camera(run_dir, server, tmp_path):
    video = write_video(tmp_path / "scene.avi", 60)
    rrd = tmp_path / "live.rrd"
    summary = deploy(str(run_dir), robot="franka", hz=10, steps=4, out=str(tmp_path / "out"),
                     robot_overrides=franka_overrides(server.host, video), live_view=str(rrd), estop_key=False)
    assert summary["steps"] == 4 and summary["sends"] == 8 and summary["error"] is None, summary
    assert summary["final_state"] == "disconnected"
    data = read_rrd(rrd)
    frames = [np.asarray(r["Image:buffer"][0], np.uint8).reshape(32, 32, 3) for r in data["camera/corner2"]]
    assert len(frames) == 4
    for frame in frames:  # the video's frames, cropped and resized: the red patch top left (RGB), grey elsewhere
        assert frame[2, 2, 0] > 200 and frame[2, 2, 2] < 60 and abs(int(frame[30, 30, 0]) - int(frame[30, 30, 2])) < 20
    assert len({f[16:, 16:].mean() for f in frames}) >= 2  # new frames as the video plays, not one repeated
    rows = [json.loads(line) for line in (tmp_path / "out" / "steps.jsonl").read_text().splitlines()]
    policy = [r["Scalars:scalars"] for r in data["action/policy"]]
    np.testing.assert_allclose(policy, [r["policy_action"] for r in rows], atol=1e-5)
    executed = np.array([r["Scalars:scalars"] for r in data["action/executed"]])
    np.testing.assert_allclose(executed, np.mean([r["sent_action"] for r in rows], axis=1), atol=1e-5)
    texts = [t for r in data.get("safety", []) for t in r["TextLog:text"]]
    assert any(t.startswith("home") for t in texts) and any(t.startswith("disconnect") for t in texts), texts


def test_frozen_camera_holds_the_arm_and_names_the_camera(run_dir, server, tmp_path, monkeypatch):
    freeze = threading.Event()
    grab = OpenCVCamera._grab

    def stalling(self):  # a device that stopped delivering frames (LeRobot's #1083 V4L2 stall)
        if freeze.is_set():
            time.sleep(0.02)
            return None
        return grab(self)

    monkeypatch.setattr(OpenCVCamera, "_grab", stalling)

    def operator(step, obs):  # never takes over; freezes the camera once the policy has driven two steps
        if step == 2:
            freeze.set()
        return None

    video = write_video(tmp_path / "scene.avi", 60)
    rrd = tmp_path / "live.rrd"
    with pytest.raises(CameraError, match="camera 'corner2' (stale|frozen).*arm holds"):
        deploy(str(run_dir), robot="franka", hz=10, steps=30, out=str(tmp_path / "out"), operator=operator,
               robot_overrides=franka_overrides(server.host, video), live_view=str(rrd), estop_key=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["final_state"] == "disconnected" and "corner2" in summary["error"]
    assert 2 <= summary["steps"] < 30  # the policy drove until the frames went stale, then nothing more was sent
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    held = [e for e in events if e["kind"] == "camera_error"]
    assert len(held) == 1 and held[0]["camera"] == "corner2"
    after = events[events.index(held[0]) + 1:]
    assert not any(e["kind"] in ("home", "resume") for e in after)  # the arm was not moved again
    texts = [(t, lvl) for r in read_rrd(rrd)["safety"] for t, lvl in zip(r["TextLog:text"], r["TextLog:level"],
                                                                            strict=True)]
    assert any(t.startswith("camera_error") and "camera=corner2" in t and lvl == "WARN" for t, lvl in texts), texts


def test_camera_frames_of_another_size_are_refused_naming_the_fix(run_dir, tmp_path):
    """robot=mock with the video camera at its own 48 x 64: the 32 x 32 policy is refused before it acts, and the
    line names the override that fixes it."""
    from robotrl.errors import ConfigError

    cam = {"type": "opencv", "path": str(write_video(tmp_path / "scene.avi", 60)), "fps": 30, "loop": True}
    refused = r"camera 'corner2' gives \(48, 64, 3\) frames.*robot.cameras.corner2.resize=32"
    with pytest.raises(ConfigError, match=refused):
        deploy(str(run_dir), robot="mock", steps=2, out=str(tmp_path / "out"), estop_key=False,
               robot_overrides={"cameras": {"corner2": cam}, "limits.watchdog_ms": 2000})
