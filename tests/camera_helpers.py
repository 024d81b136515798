"""Camera test sources: a fake clock, a scripted camera (a generated source the test drives frame by frame) and
small video files written with cv2.VideoWriter."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
from robotrl.hardware.cameras import CameraConfig, RawFrame, ThreadedCamera


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def frame_of(value: int, size: tuple[int, int] = (8, 8), device_ms: float | None = None) -> RawFrame:
    """A uniform frame whose pixels all equal ``value``, so a test can tell frames apart."""
    return RawFrame(np.full((*size, 3), value % 256, np.uint8), None, device_ms)


class ScriptedCamera(ThreadedCamera):
    """A generated source: ``push`` a RawFrame (delivered at the next grab), or an exception (the grab raises it:
    an unplug); ``plugged=False`` makes re-opening fail. ``opens`` counts successful opens."""

    def __init__(self, name: str, config: CameraConfig | None = None, clock: Any = None, **overrides: Any) -> None:
        config = config or CameraConfig(type="opencv", index=0, **{"warmup_frames": 0, "retry_interval_s": 0.01,
                                                                    **overrides})
        super().__init__(name, config, clock) if clock is not None else super().__init__(name, config)
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.plugged = True
        self.opens = 0

    def push(self, item: Any) -> None:
        self.pushed += 1
        self.inbox.put(item)

    def push_and_wait(self, item: Any, timeout: float = 5.0) -> int:
        """Deliver one frame (or exception) and wait until the capture thread has handled it; returns the seq."""
        self.push(item)
        deadline = time.monotonic() + timeout
        while self.handled < self.pushed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"camera {self.name} did not take the frame")
            time.sleep(0.002)
        return self.seq

    pushed = handled = 0

    def _open(self) -> None:
        if not self.plugged:
            raise ConnectionError("no such device")
        self.opens += 1

    def _grab(self) -> RawFrame | None:
        try:
            item = self.inbox.get(timeout=0.01)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self.handled += 1
            raise item
        return item

    def _store(self, raw: RawFrame, t: float) -> None:
        try:
            super()._store(raw, t)
        finally:
            self.handled += 1

    def _close(self) -> None:
        pass


def write_video(path: Path, n: int, fps: float = 30.0, size: tuple[int, int] = (48, 64), step: int = 8) -> Path:
    """An MJPG AVI of ``n`` frames (height x width ``size``): frame i is uniform grey ``i * step`` with a pure red
    (RGB) top-left quarter, so reads can check the frame order and the BGR -> RGB conversion."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    assert writer.isOpened(), "cv2.VideoWriter could not open an MJPG AVI"
    for i in range(n):
        bgr = np.full((*size, 3), (i * step) % 256, np.uint8)
        bgr[: size[0] // 2, : size[1] // 2] = (0, 0, 255)  # red in OpenCV's BGR order
        writer.write(bgr)
    writer.release()
    return path


def grey_index(frame_image: np.ndarray, step: int = 8) -> int:
    """The frame number write_video encoded (read from the bottom-right quarter, away from the red patch)."""
    h, w = frame_image.shape[:2]
    return int(round(float(frame_image[h // 2 :, w // 2 :].mean()) / step))


def wait_until(condition: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` (for things a capture thread does asynchronously); generous timeouts for a loaded CPU."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)
