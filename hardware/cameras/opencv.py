"""``type: opencv``: a USB/V4L2 camera by index or path, or a video file, through opencv-python-headless
(``pip install robotrl[cameras]``; ``cv2`` is imported only when a camera opens).

A device is asked for ``fourcc`` (MJPG: a USB-2 camera cannot stream 640x480 uncompressed at 30 fps beside another
one) before size and fps, as LeRobot does; the size and fps it reports back are checked, since ``set`` may be
ignored silently; a fourcc it does not offer is only logged. ``CAP_PROP_BUFFERSIZE=1`` keeps V4L2 from queueing
stale frames, and ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` defaults to 1 s here (OpenCV's 10 s made a stalled
camera block a read that long), so a stall is seen as a loss within about a second and the camera is re-opened.

A video file plays at its own fps (or ``fps``), paced by the capture thread as a camera would deliver it; at its end
it restarts (``loop: true``) or counts as unplugged. ``capture_factory`` replaces ``cv2.VideoCapture`` in tests.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from robotrl.hardware.cameras.base import RawFrame, ThreadedCamera
from robotrl.hardware.cameras.config import CameraConfig
from robotrl.hardware.robot import monotonic

log = logging.getLogger(__name__)
FPS_TOLERANCE = 1.0  # a device reporting 29.97 for 30 is fine


def _cv2() -> Any:
    os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")  # read by OpenCV when it first opens a V4L2 device
    import cv2

    return cv2


class OpenCVCamera(ThreadedCamera):
    """A camera read through ``cv2.VideoCapture``; frames are RGB."""

    def __init__(self, name: str, config: CameraConfig, clock: Callable[[], float] = monotonic,
                 capture_factory: Callable[..., Any] | None = None) -> None:
        super().__init__(name, config, clock)
        self.source: int | str = config.index if config.index is not None else str(config.path)
        self.is_file = isinstance(self.source, str) and os.path.isfile(self.source)
        self._factory = capture_factory
        self._cap: Any = None
        self._period = 0.0
        self._due = 0.0
        self._played = 0

    def _open(self) -> None:
        cv2 = _cv2()
        factory = self._factory or cv2.VideoCapture
        backend = cv2.CAP_ANY if self.is_file or os.name != "posix" else cv2.CAP_V4L2
        cap = factory(self.source, backend)
        if not cap.isOpened():
            cap.release()
            what = "video file" if self.is_file else "device (unplugged, busy in another process, or wrong index?)"
            raise ConnectionError(f"cv2.VideoCapture({self.source!r}) did not open the {what}")
        try:
            self._configure(cap, cv2)
        except BaseException:
            cap.release()
            raise
        self._cap = cap

    def _configure(self, cap: Any, cv2: Any) -> None:
        c = self.config
        if not self.is_file:
            if c.fourcc is not None:  # before size and fps: the driver picks the modes the format offers
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc))
            if c.width is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
            if c.height is not None:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
            if c.fps is not None:
                cap.set(cv2.CAP_PROP_FPS, c.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            got_fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
            if c.fourcc is not None and got_fourcc != c.fourcc:
                log.warning("camera %r does not offer fourcc %s; it streams %r", self.name, c.fourcc, got_fourcc)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (c.width is not None and width != c.width) or (c.height is not None and height != c.height):
            raise ConnectionError(f"gives {width}x{height} frames, configured width={c.width} height={c.height}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not self.is_file and c.fps is not None and abs(fps - c.fps) > FPS_TOLERANCE:
            raise ConnectionError(f"runs at {fps:g} fps, configured fps={c.fps:g}")
        if self.is_file:
            self._period = 1.0 / (c.fps or fps or 30.0)
            self._due = time.monotonic()

    def _grab(self) -> RawFrame | None:
        cap = self._cap
        if cap is None:
            raise ConnectionError("not open")
        if self.is_file:
            self._pace()
        ok, image = cap.read()
        if not ok and self.is_file and self.config.loop:
            cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
        if not ok or image is None:
            raise ConnectionError("end of video file" if self.is_file else "read failed (unplugged or stalled)")
        if self.is_file:
            self._played += 1
            device_ms = self._played * self._period * 1e3  # the position in the played stream
        else:
            device_ms = float(cap.get(_cv2().CAP_PROP_POS_MSEC)) or None  # V4L2: the driver's buffer timestamp
        return RawFrame(_to_rgb(image), None, device_ms)

    def _pace(self) -> None:
        """Deliver file frames at the file's rate, as a camera would (a file otherwise reads as fast as it decodes)."""
        now = time.monotonic()
        if self._due > now:
            time.sleep(self._due - now)
            self._due += self._period
        else:  # fell behind (a loaded machine): restart the schedule rather than burst to catch up
            self._due = now + self._period

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def _to_rgb(image: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
