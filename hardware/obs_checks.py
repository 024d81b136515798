"""Checks on what a robot reports, at the robot boundary: camera frames and camera read failures.

:func:`check_frame` is the one place where a camera image becomes the ``(H, W, 3)`` uint8 array a policy sees
(``RobotEnv`` and ``robotrl deploy`` both call it): a frame of another dtype (a float image in [0, 1] cast to uint8
is black), channel count or layout (channels first) is an :class:`ObservationSpecError` naming the camera, never
silently cast. :func:`read_observation` reads state and frames on the driver thread without letting a camera error
fault the arm, so the safety layer can hold it first (the state's age is checked in ``limit_check.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from robotrl.hardware.cameras.base import CameraFault
from robotrl.hardware.robot import DriverError, Frame, JointState, RobotError

from robotrl.errors import ObservationError


class ObservationSpecError(ObservationError):
    """A camera frame does not match what the policy expects (dtype, value range, channels, layout, size)."""


class CameraError(RobotError):
    """A camera read failed; the safety layer held the arm first."""


def read_observation(robot: Any) -> tuple[JointState, dict[str, Frame] | Exception]:
    """``robot``'s state and frames (on the driver thread); a failed camera read (a stale or frozen frame:
    StaleFrameError) is returned, not raised, and does not put the robot in FAULT: the arm can still be held. A
    camera that stayed lost past its ``reconnect_s`` (CameraFault) is a lost device: FAULT, as a lost arm link."""
    state = robot.get_state()
    try:
        return state, robot._read_frames()
    except CameraFault as exc:
        robot.mark_fault()
        raise DriverError(f"{robot.name}: {exc}; robot is in FAULT") from exc
    except Exception as exc:  # handed to the safety layer, which holds and raises CameraError
        return state, exc


def check_frame(camera: str, image: Any, size: int | None = None) -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 array, or ObservationSpecError naming ``camera``, what it gave and what
    was expected (``size``: the expected H = W, e.g. ``env.image_size``)."""
    arr = np.asarray(image)
    expected = f"({size}, {size}, 3)" if size else "(H, W, 3)"
    if arr.dtype != np.uint8:
        lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if arr.size and arr.dtype.kind in "fiub" else (0, 0)
        raise ObservationSpecError(f"camera {camera!r} gives {arr.dtype} frames (values in [{lo:g}, {hi:g}]), "
                                   f"expected uint8 in [0, 255] of shape {expected}")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        raise ObservationSpecError(f"camera {camera!r} gives channels-first frames of shape {arr.shape}, expected "
                                   f"channels last {expected}")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ObservationSpecError(f"camera {camera!r} gives frames of shape {arr.shape}, expected {expected} "
                                   "(RGB, channels last)")
    if size and arr.shape[:2] != (size, size):
        raise ObservationSpecError(f"camera {camera!r} gives frames of shape {arr.shape}, expected {expected} "
                                   "(env.image_size)")
    return arr
