"""``ThreadedCamera``: the capture thread, freshness checks and reconnects every camera kind shares.

A subclass implements three hooks: ``_open()`` (raise if the device is absent), ``_grab()`` (block up to about
a frame period; return a :class:`RawFrame`, or None when nothing new arrived; raise when the device is lost) and
``_close()``. ``connect`` opens the device and starts the thread; the thread drops ``warmup_frames``, rotates, crops
and resizes each frame, stamps it with the host's monotonic time when the grab returned it (its receipt: the
device's own capture clock, where it has one, is kept as ``device_timestamp``) and a sequence number, and keeps only
the newest. The control loop's :meth:`read` / :meth:`poll` never wait for the camera (LeRobot's #1356: a slow camera
stalled control), and :meth:`poll` says when the newest frame cannot be used:

- ``stale``: it is older than ``max_frame_age_ms`` (LeRobot's #1083: one frozen image recorded for a whole episode);
- ``frozen``: the ``max_repeat_reads``-th read in a row saw no new frame;
- ``disconnected``: the device is lost and being re-opened (for ``reconnect_s``, then the camera faults);
- ``no_frame``: nothing captured yet.

A fault (re-opening failed for ``reconnect_s``) is a :class:`CameraFault`, a ``ConnectionError``: inside a driver
hook it puts the robot in FAULT like any lost device; an unusable read is a :class:`StaleFrameError`, a
``RobotError``: the robot stays connected and the safety layer holds the arm. Both carry the camera's name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from robotrl.hardware.cameras.config import CameraConfig
from robotrl.hardware.robot import Camera, Frame, RobotError, monotonic

log = logging.getLogger(__name__)


class CameraFault(ConnectionError):
    """A camera cannot deliver frames (absent at connect, or lost for longer than ``reconnect_s``)."""

    def __init__(self, camera: str, message: str) -> None:
        super().__init__(f"camera {camera!r}: {message}")
        self.camera = camera


@dataclass(frozen=True)
class FrameProblem:
    """Why a read cannot be used (``kind``: stale, frozen, disconnected, no_frame; ``skew`` across cameras)."""

    camera: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"camera {self.camera!r} {self.kind}: {self.detail}"


class StaleFrameError(RobotError):
    """A read's newest frame cannot be used this step; the arm holds. ``problems`` name the camera(s)."""

    def __init__(self, problems: tuple[FrameProblem, ...]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
        self.cameras = tuple(p.camera for p in problems)


@dataclass(frozen=True)
class RawFrame:
    """What a ``_grab`` hook returns: an RGB uint8 image, optional depth (uint16) and the device's own time (ms)."""

    image: np.ndarray
    depth: np.ndarray | None = None
    device_timestamp: float | None = None


def _resize(image: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    if image.shape[:2] == size:
        return image
    try:
        import cv2  # the cameras extra; INTER_AREA is the usual choice for shrinking camera images
    except ImportError:
        from PIL import Image

        method = Image.NEAREST if nearest else Image.BILINEAR
        return np.asarray(Image.fromarray(image).resize((size[1], size[0]), method))
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def transform(image: np.ndarray, config: CameraConfig, nearest: bool = False) -> np.ndarray:
    """Rotate (clockwise), crop and resize one image as ``config`` says (``nearest`` for depth)."""
    if config.rotation:
        image = np.rot90(image, -config.rotation // 90)
    if config.crop is not None:
        top, left, height, width = config.crop
        if top + height > image.shape[0] or left + width > image.shape[1]:
            raise ValueError(f"crop {list(config.crop)} reaches past the {image.shape[0]}x{image.shape[1]} image")
        image = image[top : top + height, left : left + width]
    if config.resize is not None:
        image = _resize(np.ascontiguousarray(image), config.resize, nearest)
    return np.ascontiguousarray(image)


class ThreadedCamera(Camera):
    """A camera read by its own thread; see the module docstring. ``clock`` stamps and ages frames (tests pass a
    fake one)."""

    def __init__(self, name: str, config: CameraConfig, clock: Callable[[], float] = monotonic) -> None:
        self.name, self.config, self._clock = name, config, clock
        self.height, self.width = config.output_size or (0, 0)
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fault: CameraFault | None = None
        self._lost_since: float | None = None
        self._warmup_left = config.warmup_frames
        self._last_device_ts: float | None = None
        self._last_read_seq = -1
        self._repeat_reads = 0
        self.dropped_duplicates = 0  # frames whose device time did not advance (the device re-sent a buffer)
        self.reconnects = 0

    # ------------------------------------------------------------------------------------------ hooks
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> RawFrame | None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ lifecycle
    @property
    def is_connected(self) -> bool:
        return self._thread is not None

    def connect(self) -> None:
        """Open the device, start the capture thread, and wait (at most ``connect_timeout_s``) for the first frame
        after warm-up; raise :class:`CameraFault` naming this camera otherwise (the thread is stopped)."""
        if self._thread is not None:
            return
        try:
            self._open()
        except Exception as exc:
            raise CameraFault(self.name, f"cannot open ({type(exc).__name__}: {exc})") from exc
        self._stop.clear()
        self._fault, self._lost_since, self._latest = None, None, None
        self._warmup_left, self._last_device_ts, self._repeat_reads = self.config.warmup_frames, None, 0
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        if not self.wait_for_frame(0, self.config.connect_timeout_s):
            fault = self._fault
            self.disconnect()
            detail = str(fault) if fault else f"no frame within connect_timeout_s={self.config.connect_timeout_s:g}"
            raise CameraFault(self.name, detail)

    def disconnect(self) -> None:
        """Stop the thread (bounded: a grab stuck in the driver is abandoned) and close the device. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=max(2.0, 2 * self.config.retry_interval_s))
        if thread.is_alive():
            log.warning("camera %r: capture thread did not stop within 2 s (a blocked grab); abandoned", self.name)
        try:
            self._close()
        except Exception as exc:  # closing a lost device may fail; it is closed as far as we are concerned
            log.warning("camera %r: close failed (%s)", self.name, exc)

    def wait_for_frame(self, after_seq: int, timeout: float) -> bool:
        """Block until a frame newer than ``after_seq`` exists (connect and tests; never the control loop)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._seq > after_seq or self._fault is not None or
                                       self._stop.is_set(), timeout) and self._seq > after_seq

    @property
    def seq(self) -> int:
        """How many new frames this camera has produced since connect."""
        return self._seq

    # ------------------------------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._grab()
            except Exception as exc:
                if self._stop.is_set() or not self._reconnect(exc):
                    return
                continue
            if raw is not None:
                self._store(raw, self._clock())

    def _store(self, raw: RawFrame, t: float) -> None:
        if raw.device_timestamp is not None and raw.device_timestamp == self._last_device_ts:
            self.dropped_duplicates += 1  # the same capture again: not a new frame, so its age keeps growing
            return
        self._last_device_ts = raw.device_timestamp
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return
        image = transform(raw.image, self.config)
        depth = None if raw.depth is None else transform(raw.depth, self.config, nearest=True)
        with self._lock:
            self._seq += 1
            self._latest = Frame(image, t, self._seq, raw.device_timestamp, depth)
            self._lost_since = None  # a frame: whatever was lost is back
            self.height, self.width = image.shape[:2]
            self._lock.notify_all()

    def _reconnect(self, exc: Exception) -> bool:
        """Re-open a lost device every ``retry_interval_s`` until ``reconnect_s`` after it was lost; False (and a
        fault) if it stays away. The loss lasts until a frame arrives (``_store``), not until a re-open succeeds: a
        device that opens but never delivers (a stalled V4L2 stream) faults too. Frames read meanwhile are reported
        ``disconnected``."""
        if self._lost_since is None:
            self._lost_since = self._clock()
        log.warning("camera %r lost (%s: %s); re-opening for %gs", self.name, type(exc).__name__, exc,
                    self.config.reconnect_s)
        self._try_close()
        last_try = "it re-opened but gave no frame"
        while not self._stop.wait(self.config.retry_interval_s):
            if self._clock() - self._lost_since >= self.config.reconnect_s:
                self._set_fault(f"lost ({type(exc).__name__}: {exc}) and not back within reconnect_s="
                                f"{self.config.reconnect_s:g} (last try: {last_try})")
                return False
            try:
                self._open()
            except Exception as retry_exc:
                last_try = str(retry_exc)
                continue
            log.warning("camera %r re-opened after %.2fs", self.name, self._clock() - self._lost_since)
            self.reconnects += 1
            self._warmup_left, self._last_device_ts = self.config.warmup_frames, None
            return True
        return False

    def _try_close(self) -> None:
        try:
            self._close()
        except Exception as exc:
            log.debug("camera %r: close after loss failed (%s)", self.name, exc)

    def _set_fault(self, message: str) -> None:
        with self._lock:
            self._fault = CameraFault(self.name, message)
            self._lock.notify_all()
        log.error("%s", self._fault)

    # ------------------------------------------------------------------------------------------ reads
    def read(self) -> Frame:
        """The newest frame, without waiting and without freshness checks (it may be one handed out before: its
        ``seq`` says so). Raises :class:`CameraFault` once the camera faulted, StaleFrameError before any frame."""
        if self._fault is not None:
            raise self._fault
        frame = self._latest
        if frame is None:
            raise StaleFrameError((FrameProblem(self.name, "no_frame", "no frame captured yet"),))
        return frame

    def poll(self, now: float | None = None) -> tuple[Frame | None, FrameProblem | None]:
        """The newest frame and why it cannot be used this step (None when it can); never waits.

        Every call counts as one read for ``max_repeat_reads``. Raises :class:`CameraFault` once faulted.
        """
        if self._fault is not None:
            raise self._fault
        frame = self._latest
        now = self._clock() if now is None else now
        if frame is None:
            return None, FrameProblem(self.name, "no_frame", "no frame captured yet")
        if frame.seq == self._last_read_seq:
            self._repeat_reads += 1
        else:
            self._last_read_seq, self._repeat_reads = frame.seq, 0
        age_ms = (now - frame.timestamp) * 1e3
        if self._lost_since is not None:
            return frame, FrameProblem(self.name, "disconnected", f"device lost {now - self._lost_since:.2f}s ago, "
                                       f"re-opening (newest frame {age_ms:.0f} ms old)")
        if age_ms > self.config.max_frame_age_ms:
            return frame, FrameProblem(self.name, "stale", f"newest frame is {age_ms:.0f} ms old > max_frame_age_ms="
                                       f"{self.config.max_frame_age_ms:g} (frame {frame.seq})")
        if self._repeat_reads >= self.config.max_repeat_reads:
            return frame, FrameProblem(self.name, "frozen", f"{self._repeat_reads} reads in a row saw no new frame "
                                       f"(max_repeat_reads={self.config.max_repeat_reads}; frame {frame.seq})")
        return frame, None

    def read_fresh(self) -> Frame:
        """:meth:`poll`, raising :class:`StaleFrameError` (naming this camera) when the frame cannot be used."""
        frame, problem = self.poll()
        if problem is not None:
            raise StaleFrameError((problem,))
        return frame
