"""``type: realsense``: an Intel RealSense by serial number, or a recording of one played back (``file``), through
pyrealsense2 (``pip install robotrl[cameras]``; the wheel needs the system's ``libusb-1.0-0``).

Colour is streamed as RGB8 at ``width x height`` and ``fps``; with ``use_depth`` the depth stream (Z16, mm at the
default depth units) is aligned to the colour image (``rs.align``: same pixels, same size), rotated, cropped and
resized with it (nearest neighbour) and handed out as ``Frame.depth``. ``device_timestamp`` is the colour frame's
timestamp in ms, in its own domain (``timestamp_domain``: hardware clock, or global time on D400s); a frame whose
timestamp did not advance is not a new frame. A missing serial is a one-line error listing the serials present.

A grab waits at most two frame periods (``try_wait_for_frames``: no exception on a timeout), so a stalled camera
never blocks the capture thread for long; a device error (``camera_disconnected_error``, a closed pipeline) counts
as an unplug and the pipeline is restarted for ``reconnect_s``. A played-back file plays in real time (turning the
pacing off can hang: librealsense #10312) and counts as unplugged at its end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from robotrl.hardware.cameras.base import RawFrame, ThreadedCamera
from robotrl.hardware.cameras.config import CameraConfig
from robotrl.hardware.robot import monotonic


def _rs() -> Any:
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # the wheel is absent, or libusb-1.0.so.0 is (apt-get install libusb-1.0-0)
        raise ConnectionError(f"pyrealsense2 is not usable ({exc}); pip install robotrl[cameras] and "
                              f"apt-get install libusb-1.0-0") from exc
    return rs


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense devices plugged in now."""
    rs = _rs()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


class RealSenseCamera(ThreadedCamera):
    """A RealSense colour (+ aligned depth) stream."""

    def __init__(self, name: str, config: CameraConfig, clock: Callable[[], float] = monotonic) -> None:
        super().__init__(name, config, clock)
        self._pipeline: Any = None
        self._align: Any = None
        self.timestamp_domain: str | None = None

    def _open(self) -> None:
        rs, c = _rs(), self.config
        rs_config = rs.config()
        if c.file is not None:
            rs_config.enable_device_from_file(c.file, repeat_playback=False)
        else:
            serials = connected_serials()
            if c.serial not in serials:
                raise ConnectionError(f"no RealSense with serial {c.serial!r} is connected; connected: {serials}")
            rs_config.enable_device(c.serial)
        rs_config.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, int(c.fps))
        if c.use_depth:
            # any depth resolution the device offers at this fps (D400s: 848x480 is the best one): it is aligned
            # to the colour image anyway
            rs_config.enable_stream(rs.stream.depth, 0, 0, rs.format.z16, int(c.fps))
        pipeline = rs.pipeline()
        try:
            pipeline.start(rs_config)
        except RuntimeError as exc:  # e.g. "Couldn't resolve requests": no such stream profile on this device
            raise ConnectionError(f"cannot stream {c.width}x{c.height} at {c.fps:g} fps"
                                  f"{' with depth' if c.use_depth else ''} ({exc})") from exc
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color) if c.use_depth else None

    def _grab(self) -> RawFrame | None:
        pipeline = self._pipeline
        if pipeline is None:
            raise ConnectionError("not open")
        timeout_ms = int(2e3 / (self.config.fps or 30.0)) + 10
        ok, frames = pipeline.try_wait_for_frames(timeout_ms)  # raises on a device error, returns False on a timeout
        if not ok:
            if self.config.file is not None and self._at_end_of_file():
                raise ConnectionError(f"end of recording {self.config.file}")
            return None
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None
        depth = None
        if self.config.use_depth:
            depth_frame = frames.get_depth_frame()
            if not depth_frame:
                return None  # a step without aligned depth is not a frame of this camera
            depth = np.asanyarray(depth_frame.get_data()).copy()
        self.timestamp_domain = str(color.get_frame_timestamp_domain()).rsplit(".", 1)[-1]
        image = np.asanyarray(color.get_data()).copy()  # the SDK reuses its buffers
        return RawFrame(image, depth, float(color.get_timestamp()))

    def _at_end_of_file(self) -> bool:
        rs = _rs()
        try:
            playback = self._pipeline.get_active_profile().get_device().as_playback()
            return playback.current_status() == rs.playback_status.stopped
        except RuntimeError:
            return True

    def _close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            with contextlib.suppress(RuntimeError):  # already stopped (a lost device)
                pipeline.stop()
