"""``type: opencv`` cameras through the real cv2.VideoCapture on small MJPG video files played at 30 fps (and a fake
capture for what a file cannot do: a V4L2 device that re-sends one buffer, the order of the settings asked of a
device, a device that ignores the size asked). Timing bounds are generous: these run on a shared 2-core CPU."""

from __future__ import annotations

import time

import numpy as np
import pytest
from robotrl.hardware.cameras import CameraFault, CameraRig, NewFrameGuard, StaleFrameError, make_camera

from tests.camera_helpers import grey_index, wait_until, write_video

cv2 = pytest.importorskip("cv2", reason="opencv cameras need the cameras extra (opencv-python-headless)")


def file_camera(name: str, path, **cfg):
    return make_camera(name, {"type": "opencv", "path": str(path), "warmup_frames": 0, **cfg})


def test_a_video_file_plays_in_order_at_its_fps_rgb_rotated_and_resized(tmp_path):
    video = write_video(tmp_path / "front.avi", n=60, fps=30.0)
    cam = file_camera("front", video, warmup_frames=2, rotation=180, resize=[24, 32], max_frame_age_ms=500)
    guard, indices, t0 = NewFrameGuard(), [], time.monotonic()
    cam.connect()
    try:
        for _ in range(15):  # 15 reads at 20 Hz = 0.75 s, while the file plays 30 frames a second
            frame, problem = cam.poll()  # (a loaded CPU may stall the capture thread: such reads are skipped)
            if problem is None and guard.check("front", frame):
                indices.append(grey_index(np.rot90(frame.image, 2)))
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        last = cam.read()
    finally:
        cam.disconnect()
    assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8
    red = np.rot90(frame.image, 2)[2, 2]  # top-left of the original: pure red in RGB after BGR -> RGB
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    assert len(indices) >= 5 and indices == sorted(indices) and len(set(indices)) == len(indices)
    assert indices[0] >= 2  # the two warm-up frames were dropped
    # paced as a camera: about 30 frames a second, not as fast as the file decodes (60 frames in a few ms)
    assert last.seq <= 30 * elapsed + 5, (last.seq, elapsed)
    assert last.device_timestamp == pytest.approx((last.seq + 2) * 1e3 / 30)  # its position in the file


def test_end_of_file_is_an_unplug_reopened_then_a_fault_once_the_file_is_gone(tmp_path):
    video = write_video(tmp_path / "front.avi", n=6, fps=30.0)
    cam = file_camera("front", video, reconnect_s=0.5, retry_interval_s=0.05, max_frame_age_ms=2000)
    cam.connect()
    try:
        # the file's end is an unplug; re-opening it is the re-plug
        wait_until(lambda: cam.reconnects >= 1, timeout=20, what="the re-open at the file's end")
        seq = cam.seq
        wait_until(lambda: cam.seq > seq, timeout=20, what="frames after the re-open")
        video.rename(tmp_path / "gone.avi")  # unplugged for good
        wait_until(lambda: cam._fault is not None, timeout=20, what="the fault")
        with pytest.raises(CameraFault, match=r"camera 'front': lost \(ConnectionError: end of video "
                                              r"file\) and not back within reconnect_s=0.5") as info:
            cam.read_fresh()
        assert info.value.camera == "front"
    finally:
        cam.disconnect()


def test_a_missing_device_fails_connect_with_one_line_naming_the_camera():
    cam = make_camera("wrist", {"type": "opencv", "path": "/dev/video_robotrl_absent"})
    with pytest.raises(CameraFault, match=r"camera 'wrist': cannot open .*did not open the device") as info:
        cam.connect()
    assert "\n" not in str(info.value) and not cam.is_connected


def test_slow_file_camera_beside_a_fast_one(tmp_path):
    """Two files at 30 and 4 fps read together at 20 Hz: the loop never waits for the slow one (read cost stays
    far below a period), the slow camera's reads go stale naming it, the fast one's stay valid."""
    fast = file_camera("fast", write_video(tmp_path / "fast.avi", n=90, fps=30.0), max_frame_age_ms=400)
    # a camera expected to keep frames under 100 ms old that delivers 4 a second (LeRobot #1356: low light)
    slow = file_camera("slow", write_video(tmp_path / "slow.avi", n=12, fps=4.0), max_frame_age_ms=100,
                       max_repeat_reads=1000)
    rig = CameraRig([fast, slow], max_skew_ms=100)
    problems, flags, costs = [], [], []
    with rig:
        for _ in range(40):
            t0 = time.perf_counter()
            read = rig.read()
            costs.append(time.perf_counter() - t0)
            problems += [(p.camera, p.kind) for p in read.problems]
            flags += [(f.camera, f.kind) for f in read.flags]
            time.sleep(0.05)
    # 250 ms between the slow camera's frames, 2 s of reads: most of its reads are stale; the fast one's rarely
    # (only when a loaded CPU stalls its thread)
    assert problems.count(("slow", "stale")) >= 5 and problems.count(("slow", "stale")) > 2 * problems.count(
        ("fast", "stale")), problems
    assert ("slow", "skew") in flags
    assert sorted(costs)[len(costs) // 2] < 0.005, costs  # a read never waits a slow-camera period (250 ms)


class FakeCapture:
    """A cv2.VideoCapture stand-in for a V4L2 device: records ``set`` calls; ``read`` serves ``frames`` (each
    (image, pos_msec)); the last one is served again forever (a device re-sending one buffer)."""

    def __init__(self, frames, width=64, height=48, fps=30.0):
        self.frames, self.sets, self.i = frames, [], 0
        self.props = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps,
                      cv2.CAP_PROP_FOURCC: cv2.VideoWriter_fourcc(*"MJPG")}

    def isOpened(self):  # noqa: N802 (cv2's name)
        return True

    def set(self, prop, value):
        self.sets.append(prop)
        return True

    def get(self, prop):
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.frames[min(self.i, len(self.frames)) - 1][1]
        return self.props.get(prop, 0)

    def read(self):
        time.sleep(1 / 30)
        image = self.frames[min(self.i, len(self.frames) - 1)][0]
        self.i += 1
        return True, image

    def release(self):
        pass


def test_a_device_resending_one_buffer_goes_stale_and_asks_mjpg_before_size(tmp_path):
    frames = [(np.full((48, 64, 3), 10 * i, np.uint8), 1000.0 + 33 * i) for i in range(3)]
    capture = FakeCapture(frames)
    cam = make_camera("wrist", {"type": "opencv", "index": 0, "width": 64, "height": 48, "fps": 30,
                                "warmup_frames": 0, "max_frame_age_ms": 150}, capture_factory=lambda *a: capture)
    cam.connect()
    try:
        wait_until(lambda: cam.dropped_duplicates >= 3, what="re-sent buffers")
        seq = cam.seq
        time.sleep(0.2)
        assert cam.seq == seq <= 3  # the re-sent buffer is never a new frame
        with pytest.raises(StaleFrameError, match="camera 'wrist' stale"):
            cam.read_fresh()
    finally:
        cam.disconnect()
    fourcc, width, height, fps, buffersize = (cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH,
                                              cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS, cv2.CAP_PROP_BUFFERSIZE)
    assert capture.sets == [fourcc, width, height, fps, buffersize]


def test_a_device_that_ignores_the_size_asked_fails_connect():
    capture = FakeCapture([(np.zeros((480, 640, 3), np.uint8), 1.0)], width=640, height=480)
    cam = make_camera("front", {"type": "opencv", "index": 0, "width": 1280, "height": 720},
                      capture_factory=lambda *a: capture)
    with pytest.raises(CameraFault, match="camera 'front': cannot open .*gives 640x480 frames, configured "
                                          "width=1280 height=720"):
        cam.connect()
