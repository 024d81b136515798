"""Cameras attached to an arm by config (``robot.cameras={front: {type: opencv, index: 0, ...}}``), one file per
kind: ``opencv`` (USB/V4L2 or a video file) and ``realsense`` (colour + aligned depth). Each is a
:class:`~robotrl.hardware.cameras.base.ThreadedCamera`: a capture thread started at ``connect``, non-blocking reads
of the newest frame with its capture time, freshness checks that name the camera; :class:`CameraRig` reads an
arm's cameras together and flags skew between them. Vendor packages are imported only when a camera opens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robotrl.hardware.cameras.base import CameraFault, FrameProblem, RawFrame, StaleFrameError, ThreadedCamera
from robotrl.hardware.cameras.config import CAMERA_TYPES, CameraConfig, parse_camera, parse_cameras
from robotrl.hardware.cameras.rig import DEFAULT_MAX_SKEW_MS, CameraRig, NewFrameGuard, RigRead
from robotrl.hardware.robot import monotonic

from robotrl.registry import Registry

# imported when a camera of that type is built (its SDK with it); CAMERA_TYPES (config.py) checks configs
CAMERAS = Registry("camera type", "camera types", {
    "opencv": "robotrl.hardware.cameras.opencv:OpenCVCamera",
    "realsense": "robotrl.hardware.cameras.realsense:RealSenseCamera",
})


def make_camera(name: str, config: CameraConfig | Any, clock: Callable[[], float] = monotonic,
                **kwargs: Any) -> ThreadedCamera:
    """A camera of ``config.type`` (a CameraConfig, or a raw mapping validated here); not yet connected."""
    if not isinstance(config, CameraConfig):
        config = parse_camera(name, config)
    return CAMERAS.load(config.type)(name, config, clock=clock, **kwargs)


def make_rig(cfg: Any, max_skew_ms: float | None = DEFAULT_MAX_SKEW_MS, where: str = "robot.cameras",
             clock: Callable[[], float] = monotonic) -> CameraRig:
    """A :class:`CameraRig` from a ``robot.cameras`` mapping, every camera validated before any is built."""
    configs = parse_cameras(cfg, where)
    return CameraRig([make_camera(n, c, clock) for n, c in configs.items()], max_skew_ms, clock)


__all__ = ["CAMERA_TYPES", "CameraConfig", "CameraFault", "CameraRig", "FrameProblem", "NewFrameGuard", "RawFrame",
           "RigRead", "StaleFrameError", "ThreadedCamera", "make_camera", "make_rig", "parse_camera",
           "parse_cameras"]
