"""``type: realsense`` through pyrealsense2's own playback of a recording made here without hardware
(``rs.software_device`` + ``rs.recorder``; librealsense 2.59 writes ROS2 .db3 files): colour in order, depth aligned
to colour, device timestamps; a stream whose timestamps stop advancing goes stale; the recording's end is an unplug
that re-opens; a missing serial is a one-line error."""

from __future__ import annotations

import time

import numpy as np
import pytest
from robotrl.hardware.cameras import CameraFault, NewFrameGuard, StaleFrameError, make_camera

from tests.camera_helpers import wait_until

rs = pytest.importorskip("pyrealsense2", reason="realsense cameras need the cameras extra and libusb-1.0-0",
                         exc_type=ImportError)
W, H, FPS = 64, 48, 30


def _intrinsics(width: int, height: int) -> object:
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy = width, height, width / 2, height / 2
    intr.fx = intr.fy = 50.0 * width / W
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    return intr


def _stream(sensor, kind, fmt, bpp: int, uid: int, width: int, height: int):
    vs = rs.video_stream()
    vs.type, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = kind, uid, width, height, FPS, bpp, fmt
    vs.intrinsics, vs.index = _intrinsics(width, height), 0
    return sensor.add_video_stream(vs)


def _push(sensor, profile, pixels: np.ndarray, bpp: int, ts_ms: float, number: int) -> None:
    frame = rs.software_video_frame()
    frame.pixels, frame.stride, frame.bpp = pixels, pixels.shape[1] * bpp, bpp
    frame.timestamp, frame.domain, frame.frame_number = ts_ms, rs.timestamp_domain.hardware_clock, number
    frame.profile = profile.as_video_stream_profile()
    sensor.on_video_frame(frame)


def record(path, n: int, depth_size: tuple[int, int] | None = (32, 24), timestamps=None) -> str:
    """A recording (made in real time) of ``n`` colour frames (uniform value 10*i; frame i at ``timestamps[i]`` ms,
    default i/FPS s) and, with ``depth_size`` (width, height), depth frames of uniform 1000+i mm at another
    resolution."""
    timestamps = timestamps or [i * 1e3 / FPS for i in range(n)]
    device = rs.software_device()
    color_sensor = device.add_sensor("Color")
    color = _stream(color_sensor, rs.stream.color, rs.format.rgb8, 3, 1, W, H)
    sensors = [(color_sensor, color)]
    if depth_size:
        depth_sensor = device.add_sensor("Depth")
        depth = _stream(depth_sensor, rs.stream.depth, rs.format.z16, 2, 0, *depth_size)
        depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
        extrinsics = rs.extrinsics()
        extrinsics.rotation, extrinsics.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        depth.register_extrinsics_to(color, extrinsics)
        sensors.append((depth_sensor, depth))
    recorder = rs.recorder(str(path), device)
    for sensor, profile in sensors:
        sensor.open(profile)
        sensor.start(lambda f: None)
    for i in range(n):
        time.sleep(1 / FPS)  # the recorder stores arrival times: real-time playback replays at this pace
        _push(color_sensor, color, np.full((H, W, 3), (10 * i) % 256, np.uint8), 3, timestamps[i], i)
        if depth_size:
            _push(depth_sensor, depth, np.full(depth_size[::-1], 1000 + i, np.uint16), 2, timestamps[i], i)
    for sensor, _ in sensors:
        sensor.stop()
        sensor.close()
    del recorder  # the file is finished when the recorder goes
    return str(path)


def realsense(name: str, file: str, **cfg):
    return make_camera(name, {"type": "realsense", "file": file, "width": W, "height": H, "fps": FPS,
                              "warmup_frames": 0, **cfg})


def test_playback_gives_every_colour_frame_in_order_with_aligned_depth(tmp_path):
    cam = realsense("wrist", record(tmp_path / "wrist.db3", 20), use_depth=True, resize=[24, 32],
                    max_frame_age_ms=1000, reconnect_s=5.0)
    guard, frames = NewFrameGuard(), []
    cam.connect()
    try:
        deadline = time.monotonic() + 30
        while cam.reconnects == 0 and time.monotonic() < deadline:  # until the recording's end re-opens it
            frame, problem = cam.poll()
            if problem is None and guard.check("wrist", frame):
                frames.append(frame)
            time.sleep(0.01)
    finally:
        cam.disconnect()
    values = [int(f.image[0, 0, 0]) // 10 for f in frames]
    assert len(values) >= 5 and values == sorted(values) and len(set(values)) == len(values), values
    assert all(f.image.shape == (24, 32, 3) and f.depth.shape == (24, 32) for f in frames)
    assert all(f.depth.dtype == np.uint16 for f in frames)
    for f, v in zip(frames, values, strict=True):
        assert f.depth[12, 16] == 1000 + v  # the depth captured with that colour frame, at its pixel
        assert f.device_timestamp == pytest.approx(v * 1e3 / FPS, abs=0.01)
    assert cam.timestamp_domain == "hardware_clock"


def test_a_stream_whose_timestamps_stop_is_stale_not_new(tmp_path):
    """Frames keep coming but their device time is stuck (a frozen sensor): none of them is a new frame."""
    stamps = [i * 1e3 / FPS for i in range(8)] + [7e3 / FPS] * 22
    cam = realsense("front", record(tmp_path / "frozen.db3", 30, depth_size=None, timestamps=stamps),
                    max_frame_age_ms=150, max_repeat_reads=10_000, reconnect_s=5.0)
    cam.connect()
    try:
        wait_until(lambda: cam.dropped_duplicates >= 3, timeout=20, what="the frozen frames")
        seq = cam.seq
        with pytest.raises(StaleFrameError, match="camera 'front' stale") as info:
            wait_until(lambda: cam.read_fresh() is None, timeout=10, what="a stale read")
        assert info.value.cameras == ("front",) and cam.seq == seq <= 8
    finally:
        cam.disconnect()


def test_end_of_recording_is_an_unplug_then_a_fault_when_it_is_gone(tmp_path):
    path = tmp_path / "short.db3"
    cam = realsense("front", record(path, 6, depth_size=None), reconnect_s=0.5, retry_interval_s=0.05,
                    max_frame_age_ms=3000)
    cam.connect()
    try:
        wait_until(lambda: cam.reconnects >= 1, timeout=20, what="the re-open at the end")
        path.unlink()
        wait_until(lambda: cam._fault is not None, timeout=20, what="the fault")
        with pytest.raises(CameraFault, match=r"camera 'front': lost \(ConnectionError: end of recording"):
            cam.poll()
    finally:
        cam.disconnect()


def test_a_missing_serial_is_a_one_line_error_naming_the_camera():
    cam = make_camera("wrist", {"type": "realsense", "serial": "000000000000", "width": W, "height": H, "fps": FPS})
    with pytest.raises(CameraFault, match=r"camera 'wrist': cannot open .*no RealSense with serial '000000000000' "
                                          r"is connected; connected: \[\]") as info:
        cam.connect()
    assert "\n" not in str(info.value)
