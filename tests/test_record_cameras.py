"""`robotrl record` with a camera fed from a video file (robot=mock): a camera that freezes mid-episode ends the
episode (the arm holds, the log names the camera) and the written episode holds no repeated stale frame: it is cut
after its last new frame, and every frame carries its capture time (also in the LeRobotDataset v3 export)."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
from robotrl.hardware.cameras.opencv import OpenCVCamera
from robotrl.hardware.teleop.scripted import ScriptedTeleop, parse_steps

from robotrl.workflows.record import record
from tests.camera_helpers import write_video

pytest.importorskip("cv2", reason="file-fed cameras need opencv-python-headless (the cameras extra, in dev)")

ENV = {"image_size": "32", "frame_stack": "2", "action_repeat": "2"}
LIMITS = {"limits.watchdog_ms": "5000", "limits.driver_timeout_ms": "5000", "limits.max_consecutive_overruns": "1000",
          "limits.overrun_factor": "1000"}


def camera(video, **extra) -> str:
    """robot.cameras: the 48 x 64 video cropped and resized to 32; a generous age bound (a capture thread starved
    by a loaded CPU is not what these tests inject), a frozen stream caught by repeats."""
    cam = {"type": "opencv", "path": str(video), "fps": 30, "loop": True, "crop": [0, 8, 48, 48], "resize": 32,
           "max_frame_age_ms": 2000, "max_repeat_reads": 4, **extra}
    return json.dumps({"front": cam})


class FreezingTeleop(ScriptedTeleop):
    """The scripted device; at poll ``freeze_at`` the camera stops delivering frames (a V4L2 select() timeout)."""

    def __init__(self, steps, freeze: threading.Event, freeze_at: int) -> None:
        super().__init__(steps)
        self.freeze, self.freeze_at = freeze, freeze_at

    def poll(self, state=None):
        if self.polls == self.freeze_at:
            self.freeze.set()
        return super().poll(state)


def test_frozen_camera_mid_episode_writes_no_repeated_frame(tmp_path, monkeypatch, caplog):
    from robotrl.lerobot_dataset import import_lerobot

    freeze = threading.Event()
    grab = OpenCVCamera._grab
    monkeypatch.setattr(OpenCVCamera, "_grab", lambda self: (time.sleep(0.02), None)[1] if freeze.is_set()
                        else grab(self))
    device = FreezingTeleop(parse_steps([{"delta_m": [0.005, 0, 0], "repeat": 30}]), freeze, freeze_at=6)
    out = tmp_path / "session"
    video = write_video(tmp_path / "scene.avi", 90)
    with caplog.at_level(logging.WARNING):
        summary = record(robot="mock", teleop="scripted", episodes=1, steps=30, reset_s=0, out=str(out),
                         overrides={"robot": {"cameras": camera(video), **LIMITS}, "env": ENV}, device=device)
    assert summary["kept"] == 1 and summary["labels"] == {"unlabelled": 1}
    meta = json.loads((out / "meta.json").read_text())
    assert "camera 'front'" in meta["episode_stops"][0]  # the camera stop ended it, naming the camera
    ep = np.load(out / "episode_000000.npz")
    pixels = ep["pixels"]
    repeats = [i for i in range(1, len(pixels)) if np.array_equal(pixels[i], pixels[i - 1])]
    assert len(ep["action"]) <= 7 and repeats[-1:] != [len(pixels) - 1], (len(ep["action"]), repeats)
    times, new = ep["frame_time"][:, 0], ep["frame_new"][:, 0]
    assert len(pixels) == len(ep["action"]) + 1 == len(times) == len(new)
    # the steps up to the freeze at most (above: the 7th poll froze it, its step's frame may be a grab in flight);
    # the episode ends on a new frame, not the frozen one written again
    assert len(ep["action"]) >= 1 and new[-1]
    for i in range(1, len(pixels)):  # a frame equal to the previous one is only ever a marked repeat
        same = np.array_equal(pixels[i], pixels[i - 1])
        assert not same or not new[i], f"observation {i} repeats the previous frame unmarked"
        assert (times[i] > times[i - 1]) == bool(new[i])
    logged = [r.getMessage() for r in caplog.records if "camera 'front'" in r.getMessage()]
    assert any("dropped the last" in m for m in logged), logged
    back = import_lerobot(out / "lerobot", tmp_path / "imported")  # the capture times travel through LeRobot v3
    info = json.loads((out / "lerobot" / "meta" / "info.json").read_text())
    assert info["features"]["observation.frame_time"]["names"] == ["front"]
    imported = np.load(back / "episode_000000.npz")
    np.testing.assert_array_equal(imported["frame_time"], ep["frame_time"])
    np.testing.assert_array_equal(imported["frame_new"], ep["frame_new"])
