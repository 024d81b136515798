"""Cameras (hardware/cameras): config parsing, and the freshness rules every camera kind shares, driven frame by
frame from a scripted (generated) source with a fake clock: a frozen stream, stale frames, an unplug and re-plug, a
slow camera beside a fast one. Each asserts the read is invalid or flagged, names the camera, and that a recorder
following ``RigRead.valid`` and ``NewFrameGuard`` never writes a repeated frame as new. OpenCV against real video
files is in test_cameras_opencv.py, RealSense playback in test_cameras_realsense.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from robotrl.hardware.cameras import (
    CameraConfig,
    CameraFault,
    CameraRig,
    NewFrameGuard,
    StaleFrameError,
    make_camera,
    make_rig,
    parse_cameras,
)
from robotrl.hardware.cameras.base import transform
from robotrl.hardware.mock import MockRobot
from robotrl.hardware.robot import DriverError, RobotState

from robotrl.errors import ConfigError
from tests.camera_helpers import FakeClock, ScriptedCamera, frame_of, wait_until


# ------------------------------------------------------------------------------------------------ config
def test_the_issue_example_parses():
    cams = parse_cameras({"front": {"type": "opencv", "index": 0, "width": 640, "height": 480, "fps": 30}})
    front = cams["front"]
    assert (front.type, front.index, front.width, front.height, front.fps) == ("opencv", 0, 640, 480, 30.0)
    assert front.fourcc == "MJPG" and front.output_size == (480, 640)
    wrist = parse_cameras({"wrist": {"type": "realsense", "serial": 123456, "width": 640, "height": 480, "fps": 30,
                                     "use_depth": True, "rotation": 90, "resize": 84}})["wrist"]
    assert wrist.serial == "123456" and wrist.output_size == (84, 84)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"type": "usb", "index": 0}, r"robot.cameras.front.type='usb': expected one of \['opencv', 'realsense'\]"),
    ({"type": "opencv", "index": 0, "fsp": 30}, r"unknown key robot.cameras.front.fsp for a opencv camera"),
    ({"type": "opencv", "index": 0, "path": "/dev/video0"}, r"exactly one of index .* or path"),
    ({"type": "opencv"}, r"exactly one of index .* or path"),
    ({"type": "opencv", "index": 0, "fps": 0}, r"robot.cameras.front.fps=0: expected a number > 0"),
    ({"type": "opencv", "index": 0, "width": 64.5}, r"robot.cameras.front.width=64.5: expected an integer > 0"),
    ({"type": "opencv", "index": 0, "rotation": 45}, r"rotation=45: expected one of \[0, 90, 180, 270\]"),
    ({"type": "opencv", "index": 0, "crop": [0, 0, 10]}, r"crop=\[0, 0, 10\]: expected \[top, left, height, width\]"),
    ({"type": "opencv", "index": 0, "width": 64, "height": 48, "crop": [0, 0, 48, 80]}, r"reaches past the 48x64"),
    ({"type": "opencv", "index": 0, "width": 64, "height": 48, "rotation": 90, "crop": [0, 0, 64, 48]}, None),
    ({"type": "opencv", "index": 0, "resize": [84, 0]}, r"resize=\[84, 0\]: expected sizes > 0"),
    ({"type": "opencv", "index": 0, "fps": 5, "max_frame_age_ms": 200}, r"shorter than 1.5 frame periods at fps=5"),
    ({"type": "opencv", "index": 0, "max_repeat_reads": 0}, r"max_repeat_reads=0: expected an integer > 0"),
    ({"type": "opencv", "index": 0, "fourcc": "MJPEG"}, r"fourcc='MJPEG': expected a 4-character code"),
    ({"type": "opencv", "index": 0, "loop": "yes"}, r"loop='yes': expected true or false"),
    ({"type": "realsense", "serial": "1", "width": 640, "height": 480}, r"front.fps is missing"),
    ({"type": "realsense", "width": 640, "height": 480, "fps": 30}, r"exactly one of serial .* or file"),
])  # fmt: skip
def test_bad_camera_configs_are_one_line_errors(cfg, message):
    if message is None:  # a crop that fits only after the rotation: valid
        assert parse_cameras({"front": cfg})["front"].output_size == (64, 48)
        return
    with pytest.raises(ConfigError, match=message) as info:
        parse_cameras({"front": cfg})
    assert "\n" not in str(info.value)


def test_camera_names_must_be_words_and_rig_validates_before_building():
    with pytest.raises(ConfigError, match="camera name 'front cam' must be a word"):
        parse_cameras({"front cam": {"type": "opencv", "index": 0}})
    with pytest.raises(ConfigError, match="robot.cameras.wrist.type=None"):  # the second camera is bad: none built
        make_rig({"front": {"type": "opencv", "index": 0}, "wrist": {}})


def test_factory_builds_by_type():
    from robotrl.hardware.cameras.opencv import OpenCVCamera
    from robotrl.hardware.cameras.realsense import RealSenseCamera

    assert type(make_camera("a", {"type": "opencv", "path": "/dev/video0"})) is OpenCVCamera
    cam = make_camera("b", {"type": "realsense", "serial": "1", "width": 64, "height": 48, "fps": 30})
    assert type(cam) is RealSenseCamera and (cam.height, cam.width) == (48, 64)


def test_rotation_crop_resize():
    image = np.zeros((4, 6, 3), np.uint8)
    image[0, 0] = 255  # top-left marker
    cfg = CameraConfig(type="opencv", index=0, rotation=90)
    rotated = transform(image, cfg)
    assert rotated.shape == (6, 4, 3) and rotated[0, 3, 0] == 255  # clockwise: top-left goes to top-right
    cropped = transform(image, CameraConfig(type="opencv", index=0, rotation=180, crop=[2, 3, 2, 3]))
    assert cropped.shape == (2, 3, 3) and cropped[1, 2, 0] == 255  # the marker is now bottom-right
    resized = transform(np.full((48, 64, 3), 7, np.uint8), CameraConfig(type="opencv", index=0, resize=(21, 32)))
    assert resized.shape == (21, 32, 3) and (resized == 7).all()


# ------------------------------------------------------------------------------------------------ freshness
@pytest.fixture
def clock():
    return FakeClock()


def connected(cam: ScriptedCamera, first_value: int = 1) -> ScriptedCamera:
    cam.push(frame_of(first_value))
    cam.connect()
    return cam


def test_warmup_frames_are_dropped_and_connect_waits_for_a_real_frame(clock):
    cam = ScriptedCamera("front", clock=clock, warmup_frames=3)
    for value in (10, 11, 12, 13):
        cam.push(frame_of(value))
    cam.connect()
    try:
        frame = cam.read()
        assert frame.seq == 1 and frame.image[0, 0, 0] == 13  # the three warm-up frames never reached a reader
    finally:
        cam.disconnect()


def test_a_silent_camera_fails_connect_naming_it_and_its_thread_stops(clock):
    cam = ScriptedCamera("wrist", clock=clock, connect_timeout_s=0.3)
    with pytest.raises(CameraFault, match="camera 'wrist': no frame within connect_timeout_s=0.3") as info:
        cam.connect()
    assert info.value.camera == "wrist" and not cam.is_connected
    assert not any(t.name == "camera-wrist" and t.is_alive() for t in threading.enumerate())


def test_stale_frame_is_invalid_and_names_the_camera(clock):
    cam = connected(ScriptedCamera("front", clock=clock, max_frame_age_ms=100))
    try:
        assert cam.read_fresh().seq == 1
        clock.t += 0.15  # the camera delivered nothing for 150 ms
        frame, problem = cam.poll()
        assert frame.seq == 1 and problem.camera == "front" and problem.kind == "stale"
        with pytest.raises(StaleFrameError, match="camera 'front' stale: newest frame is 150 ms old") as info:
            cam.read_fresh()
        assert info.value.cameras == ("front",)
        cam.push_and_wait(frame_of(2))  # a new capture makes the next read valid again
        assert cam.read_fresh().seq == 2
    finally:
        cam.disconnect()


def test_frozen_stream_is_invalid_after_n_reads_and_never_recorded_twice(clock):
    """LeRobot #1083: after a V4L2 select() timeout a whole episode repeated one image. Here the stream freezes
    (no new capture) while the clock barely moves (age stays under the limit): the Nth repeated read is invalid,
    and a recorder that writes only valid steps and asks NewFrameGuard writes each frame once."""
    cam = connected(ScriptedCamera("wrist", clock=clock, max_frame_age_ms=1000, max_repeat_reads=3))
    rig, guard, written, invalid = CameraRig([cam], clock=clock), NewFrameGuard(), [], []
    try:
        for step in range(12):
            if step < 4:
                cam.push_and_wait(frame_of(step + 2))  # live for 4 steps, then frozen
            clock.t += 0.01
            read = rig.read()
            if not read.valid:
                invalid.append((step, read.problems[0].camera, read.problems[0].kind))
                continue
            if guard.check("wrist", read.frames["wrist"]):
                written.append(read.frames["wrist"].seq)
    finally:
        cam.disconnect()
    assert written == [2, 3, 4, 5]  # connect's frame 1 was never read; each live frame once
    assert invalid == [(s, "wrist", "frozen") for s in range(6, 12)]  # steps 4, 5 repeat (valid, not written)


def test_a_device_resending_one_buffer_is_not_a_new_frame(clock):
    """The device keeps delivering, but its own timestamp does not advance: nothing new reaches a reader."""
    cam = connected(ScriptedCamera("front", clock=clock, max_frame_age_ms=100), first_value=1)
    try:
        cam.push_and_wait(frame_of(2, device_ms=500.0))
        for _ in range(5):
            clock.t += 0.03
            cam.push_and_wait(frame_of(3, device_ms=500.0))
        assert cam.seq == 2 and cam.dropped_duplicates == 5
        with pytest.raises(StaleFrameError, match="camera 'front' stale"):
            cam.read_fresh()
    finally:
        cam.disconnect()


def test_unplug_then_replug_within_reconnect_s(clock):
    cam = connected(ScriptedCamera("front", clock=clock, reconnect_s=2.0, warmup_frames=0))
    guard = NewFrameGuard()
    try:
        assert guard.check("front", cam.read_fresh())
        cam.plugged = False
        cam.push(ConnectionError("read failed (unplugged or stalled)"))
        wait_until(lambda: cam._lost_since is not None, what="the loss")
        frame, problem = cam.poll()
        assert problem.camera == "front" and "device lost" in problem.detail and frame.seq == 1
        time.sleep(0.05)  # several failed re-opens (retry_interval_s=0.01), all within reconnect_s on the fake clock
        assert cam.opens == 1 and cam.is_connected
        cam.plugged = True
        wait_until(lambda: cam.opens == 2, what="the re-open")
        seq = cam.push_and_wait(frame_of(9))
        frame = cam.read_fresh()
        assert seq == 2 and frame.image[0, 0, 0] == 9 and cam.reconnects == 1
        assert guard.check("front", frame)  # a new frame after the re-plug, not the pre-unplug one again
    finally:
        cam.disconnect()


def test_unplugged_longer_than_reconnect_s_faults_naming_the_camera(clock):
    cam = connected(ScriptedCamera("front", clock=clock, reconnect_s=1.0))
    rig = CameraRig([cam], clock=clock)
    try:
        cam.plugged = False
        cam.push(ConnectionError("read failed (unplugged or stalled)"))
        wait_until(lambda: cam._lost_since is not None, what="the loss")
        clock.t += 1.5  # past reconnect_s
        wait_until(lambda: cam._fault is not None, what="the fault")
        with pytest.raises(CameraFault, match="camera 'front': lost .* not back within reconnect_s=1") as info:
            rig.read()
        assert info.value.camera == "front" and isinstance(info.value, ConnectionError)
        with pytest.raises(CameraFault):
            cam.read()
    finally:
        cam.disconnect()


def test_slow_camera_beside_a_fast_one_is_invalid_and_skew_flagged(clock):
    """LeRobot #1356: a slow camera stalled the loop. Here reads never wait; the slow camera's old frame makes the
    step invalid naming it, and the spread of capture times is flagged naming the oldest camera."""
    fast = connected(ScriptedCamera("fast", clock=clock, max_frame_age_ms=200))
    slow = connected(ScriptedCamera("slow", clock=clock, max_frame_age_ms=200))
    rig = CameraRig([fast, slow], max_skew_ms=50, clock=clock)
    try:
        for _ in range(3):  # 3 fast frames over 90 ms, none from the slow camera
            clock.t += 0.03
            fast.push_and_wait(frame_of(5))
        read = rig.read()
        assert read.valid and read.skew_ms == pytest.approx(90) and [(f.camera, f.kind) for f in read.flags] == [
            ("slow", "skew")]
        clock.t += 0.15  # slow's frame is now 240 ms old, fast's 150 ms
        read = rig.read()
        assert not read.valid and [(p.camera, p.kind) for p in read.problems] == [("slow", "stale")]
        with pytest.raises(StaleFrameError, match="camera 'slow' stale") as info:
            read.raise_if_invalid()
        assert info.value.cameras == ("slow",)
        slow.push_and_wait(frame_of(6))
        fast.push_and_wait(frame_of(7))  # both fresh again, captured at the same instant
        read = rig.read()
        assert read.valid and not read.flags and read.repeated == frozenset()
        assert rig.read().repeated == {"fast", "slow"}  # nothing new since: the recorder sees the repeat
    finally:
        rig.disconnect()


def test_rig_connect_fails_as_one_error_naming_every_failed_camera(clock):
    good = ScriptedCamera("good", clock=clock)
    good.push(frame_of(1))
    bad = ScriptedCamera("bad", clock=clock, connect_timeout_s=0.2)
    bad.plugged = False
    rig = CameraRig([good, bad], clock=clock)
    with pytest.raises(CameraFault, match="camera 'bad': cannot open .*no such device"):
        rig.connect()
    assert not good.is_connected and not bad.is_connected  # the good one was disconnected again


def test_reads_never_wait_for_a_slow_camera():
    """A camera delivering nothing (a 1 fps device between frames) costs the control loop microseconds per read."""
    cam = connected(ScriptedCamera("slow", max_frame_age_ms=5000, max_repeat_reads=10_000))
    try:
        t0 = time.perf_counter()
        for _ in range(2000):
            cam.poll()
        per_read_ms = (time.perf_counter() - t0) / 2000 * 1e3
    finally:
        cam.disconnect()
    assert per_read_ms < 1.0, per_read_ms  # measured ~0.002 ms on a quiet machine; a blocking read would be 1000 ms


class CameraArm(MockRobot):
    """A driver whose cameras are a CameraRig, as a real arm's will be: an invalid step raises in get_observation."""

    def __init__(self, rig: CameraRig) -> None:
        super().__init__(cameras=())
        self.rig = rig

    def _read_frames(self):
        read = self.rig.read()
        read.raise_if_invalid()
        return read.frames


def test_through_the_robot_interface_a_stale_step_raises_and_a_lost_camera_faults(clock):
    """A stale frame is a StaleFrameError (a RobotError: the arm stays connected, for the safety layer to hold);
    a camera lost past reconnect_s is a driver failure: the robot goes to FAULT and the error names the camera."""
    cam = connected(ScriptedCamera("wrist", clock=clock, max_frame_age_ms=100, reconnect_s=0.5))
    arm = CameraArm(CameraRig([cam], clock=clock))
    arm.connect()
    try:
        assert arm.get_observation().frames["wrist"].seq == 1
        clock.t += 0.2
        with pytest.raises(StaleFrameError, match="camera 'wrist' stale"):
            arm.get_observation()
        assert arm.state is RobotState.READY
        cam.plugged = False
        cam.push(ConnectionError("read failed"))
        wait_until(lambda: cam._lost_since is not None, what="the loss")
        clock.t += 1.0
        wait_until(lambda: cam._fault is not None, what="the fault")
        with pytest.raises(DriverError, match="read cameras failed .*camera 'wrist': lost .*robot is in FAULT"):
            arm.get_observation()
        assert arm.state is RobotState.FAULT
    finally:
        arm.disconnect()
        cam.disconnect()


def test_a_camera_that_opens_but_never_delivers_faults_after_reconnect_s(clock):
    """A V4L2 stall: every re-open succeeds and every read after it fails. Each re-open restarted the reconnect_s
    clock, so the camera cycled for ever (the arm held at each step, never a fault); the clock now runs until a
    frame arrives."""
    class Stalled(ScriptedCamera):
        stalled = False

        def _grab(self):
            if self.stalled:
                raise ConnectionError("select() timeout")
            return super()._grab()

    cam = connected(Stalled("front", clock=clock, reconnect_s=1.0))
    try:
        cam.stalled = True
        wait_until(lambda: cam.opens >= 3, what="re-opens")  # it re-opens fine, again and again
        clock.t += 1.5  # past reconnect_s since the first loss
        wait_until(lambda: cam._fault is not None, what="the fault")
        with pytest.raises(CameraFault, match="not back within reconnect_s=1"):
            cam.read()
    finally:
        cam.disconnect()
