"""``CameraRig``: the cameras of one arm, connected together and read together once per control step.

``read()`` never waits for a camera; it returns a :class:`RigRead`: every camera's newest frame, the problems that
make this step's observation invalid (one per camera: stale, frozen, disconnected, no_frame; the safety layer holds
the arm and logs the camera's name), a ``skew`` flag when the cameras' capture times lie further apart than
``max_skew_ms``, and which frames were already handed out by an earlier read (``repeated``). A recorder writes a
step's frames only when ``read.valid``, and :class:`NewFrameGuard` refuses a frame it has already written as new.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from robotrl.hardware.cameras.base import CameraFault, FrameProblem, StaleFrameError, ThreadedCamera
from robotrl.hardware.robot import Frame, monotonic

DEFAULT_MAX_SKEW_MS = 50.0


@dataclass(frozen=True)
class RigRead:
    """One step's frames. ``problems`` make it invalid; ``flags`` (skew) are logged but do not invalidate it."""

    frames: dict[str, Frame]
    problems: tuple[FrameProblem, ...] = ()
    flags: tuple[FrameProblem, ...] = ()
    repeated: frozenset[str] = field(default_factory=frozenset)
    skew_ms: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.problems

    def raise_if_invalid(self) -> None:
        """Raise :class:`StaleFrameError` naming the camera(s) when this step cannot be used."""
        if self.problems:
            raise StaleFrameError(self.problems)


class CameraRig:
    """Several :class:`ThreadedCamera` s read as one (``max_skew_ms=None``: no skew check)."""

    def __init__(self, cameras: Mapping[str, ThreadedCamera] | list[ThreadedCamera],
                 max_skew_ms: float | None = DEFAULT_MAX_SKEW_MS, clock: Callable[[], float] = monotonic) -> None:
        cams = list(cameras.values()) if isinstance(cameras, Mapping) else list(cameras)
        names = [c.name for c in cams]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        self.cameras = {c.name: c for c in cams}
        self.max_skew_ms, self._clock = max_skew_ms, clock
        self._handed_out: dict[str, int] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.cameras)

    def connect(self) -> None:
        """Connect every camera at once (each warm-up bounded by its own ``connect_timeout_s``, so N cameras take
        as long as the slowest, not the sum: LeRobot's #1179). If any fails, all are disconnected and one
        CameraFault names every camera that failed."""
        errors: dict[str, Exception] = {}

        def connect_one(cam: ThreadedCamera) -> None:
            try:
                cam.connect()
            except Exception as exc:
                errors[cam.name] = exc

        threads = [threading.Thread(target=connect_one, args=(c,), daemon=True) for c in self.cameras.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.disconnect()
            first = next(iter(errors))
            message = "; ".join(str(e) for e in errors.values())
            raise CameraFault(first, message.removeprefix(f"camera {first!r}: "))
        self._handed_out.clear()

    def disconnect(self) -> None:
        for cam in self.cameras.values():
            cam.disconnect()

    def __enter__(self) -> CameraRig:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def read(self) -> RigRead:
        """Every camera's newest frame and what is wrong with this step; never waits. Raises CameraFault when a
        camera has faulted (lost longer than its ``reconnect_s``)."""
        now = self._clock()
        frames: dict[str, Frame] = {}
        problems: list[FrameProblem] = []
        repeated = set()
        for name, cam in self.cameras.items():
            frame, problem = cam.poll(now)
            if problem is not None:
                problems.append(problem)
            if frame is None:
                continue
            frames[name] = frame
            if self._handed_out.get(name) == frame.seq:
                repeated.add(name)
            self._handed_out[name] = frame.seq
        flags, skew_ms = self._skew(frames)
        return RigRead(frames, tuple(problems), flags, frozenset(repeated), skew_ms)

    def _skew(self, frames: dict[str, Frame]) -> tuple[tuple[FrameProblem, ...], float]:
        if len(frames) < 2:
            return (), 0.0
        oldest = min(frames, key=lambda n: frames[n].timestamp)
        newest = max(frames, key=lambda n: frames[n].timestamp)
        skew_ms = (frames[newest].timestamp - frames[oldest].timestamp) * 1e3
        if self.max_skew_ms is None or skew_ms <= self.max_skew_ms:
            return (), skew_ms
        detail = f"captured {skew_ms:.0f} ms before camera {newest!r} (max_skew_ms={self.max_skew_ms:g})"
        return (FrameProblem(oldest, "skew", detail),), skew_ms


class NewFrameGuard:
    """What a recorder asks before writing a camera frame as a new one: each camera's ``seq`` may be written once.

    ``check(name, frame)`` returns True for a frame not written before and records it; a repeat returns False (write
    it, if at all, marked as a repeat); ``require_new`` raises instead. A frame without a sequence number
    (``seq == -1``, a source that does not count) is compared by capture time.
    """

    def __init__(self) -> None:
        self._written: dict[str, tuple[int, float]] = {}

    def check(self, name: str, frame: Frame) -> bool:
        key = (frame.seq, frame.timestamp if frame.seq < 0 else 0.0)
        if self._written.get(name) == key:
            return False
        self._written[name] = key
        return True

    def require_new(self, name: str, frame: Frame) -> None:
        if not self.check(name, frame):
            raise StaleFrameError((FrameProblem(name, "repeated", f"frame {frame.seq} was already written"),))
