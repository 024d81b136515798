"""`robotrl record` on robot=franka against franky-sim, with a camera fed from a video file and a scripted teleop
device: the episodes hold the video's frames (new ones, with their capture times), the arm's measured motion in the
commanded direction, the labels, and they round-trip through LeRobotDataset v3."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from robotrl.hardware.teleop.scripted import ScriptedTeleop, parse_steps

from robotrl.demos import load_demos
from robotrl.workflows.record import record
from tests.camera_helpers import grey_index, write_video
from tests.franky_helpers import FrankySim

pytest.importorskip("cv2", reason="file-fed cameras need opencv-python-headless (the cameras extra, in dev)")
pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if importlib.util.find_spec("franky_sim") is None:
    pytest.skip("the robot=franka tests need franky-sim (in the dev extra)", allow_module_level=True)

ENV = {"image_size": "32", "frame_stack": "2", "action_repeat": "2"}


def franka(host: str, video) -> dict[str, str]:
    """franky-sim with the bounds of tests/test_deploy_cameras.py (2 shared cores) and the camera ``front`` fed
    from ``video`` (48 x 64, cropped square and resized to 32)."""
    cam = {"type": "opencv", "path": str(video), "fps": 30, "loop": True, "crop": [0, 8, 48, 48], "resize": 32,
           "max_frame_age_ms": 1000, "max_repeat_reads": 10}
    return {"hostname": host, "realtime": "ignore", "relative_dynamics_factor": "0.3",
            "home_rad": "[0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785]", "limits.watchdog_ms": "2000",
            "limits.driver_timeout_ms": "3000", "limits.overrun_factor": "1000",
            "limits.max_consecutive_overruns": "1000", "cameras": json.dumps({"front": cam})}


def test_record_on_franka_with_a_video_camera_round_trips_through_lerobot(tmp_path):  # ~17 s on 2 shared cores
    from robotrl.lerobot_dataset import import_lerobot

    video = write_video(tmp_path / "scene.avi", 90)
    # arm-frame deltas (m per control step): +z, then -y (the policy frame's +x on FR3: frame_map axes [-y, x, z])
    device = ScriptedTeleop(parse_steps([{"delta_m": [0, 0, 0.004], "repeat": 5}, {"events": ["success"]},
                                         {"delta_m": [0, -0.004, 0], "gripper": 1.0, "repeat": 4},
                                         {"events": ["failure"]}]))
    out = tmp_path / "session"
    with FrankySim() as server:
        summary = record(robot="franka", teleop="scripted", episodes=2, steps=20, reset_s=0, out=str(out),
                         overrides={"robot": franka(server.host, video), "env": ENV}, device=device)
    assert summary["kept"] == 2 and summary["labels"] == {"success": 1, "failure": 1}, summary
    meta = json.loads((out / "meta.json").read_text())
    assert meta["robot"] == "franka" and meta["cameras"] == ["front"] and meta["episode_lengths"] == [5, 4]
    assert meta["episode_stops"] == [None, None]
    eps = load_demos(out)
    # the policy frame's proprioception moved as commanded: +z in episode 0, +x in episode 1 (FR3's -y)
    up = eps[0].obs["state"][-1, :3] - eps[0].obs["state"][0, :3]
    right = eps[1].obs["state"][-1, :3] - eps[1].obs["state"][0, :3]
    # (franky-sim lags its targets, more so on a loaded CPU: 9.8 mm of the 40 mm commanded were measured once)
    assert up[2] > 0.003 and np.abs(up[:2]).max() < 0.3 * up[2], up
    assert right[0] > 0.003 and np.abs(right[1:]).max() < 0.3 * right[0], right
    # the person closed the gripper; executed is what franky's gripper is moving to: closed, or still open while the
    # reset's gripper move runs (a new move starts only after it; seen on a loaded CPU; the step's mean over its sends)
    assert (np.load(out / "episode_000001.npz")["commanded_action"][:, 3] == 1.0).all()
    gripper = eps[1].action[:, 3]
    assert (np.abs(gripper) <= 1).all() and (np.diff(gripper) >= 0).all(), gripper  # closing, never reopened
    for i, ep in enumerate(eps):  # the video's frames: red patch top left, new frames as the video plays
        raw = np.load(out / f"episode_{i:06d}.npz")
        frames = ep.obs["pixels"].transpose(0, 2, 3, 1)
        assert (frames[:, 2, 2, 0] > 200).all() and (frames[:, 2, 2, 2] < 60).all()
        assert len({grey_index(f) for f in frames}) >= 3
        assert raw["frame_new"][0].all() and (np.diff(raw["frame_time"][:, 0]) >= 0).all()
    back = import_lerobot(out / "lerobot", tmp_path / "imported")
    info = json.loads((out / "lerobot" / "meta" / "info.json").read_text())
    assert info["robot_type"] == "franka" and info["total_episodes"] == 2 and info["fps"] == 10
    for i, (ours, theirs) in enumerate(zip(eps, load_demos(back), strict=True)):
        np.testing.assert_array_equal(ours.action, theirs.action)
        np.testing.assert_array_equal(ours.obs["state"], theirs.obs["state"])
        np.testing.assert_array_equal(ours.success, theirs.success)
        assert np.abs(ours.obs["pixels"].astype(int) - theirs.obs["pixels"]).mean() < 6
        np.testing.assert_array_equal(np.load(back / f"episode_{i:06d}.npz")["frame_time"],
                                      np.load(out / f"episode_{i:06d}.npz")["frame_time"])
