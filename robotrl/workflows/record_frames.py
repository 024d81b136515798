"""Which recorded frames are new: capture times per observation, and the tail a frozen camera leaves.

A camera slower than the agent step, or one whose stream froze (LeRobot's #1083: an episode that silently repeats
one image), hands out a frame the episode already holds. The camera rig makes a step invalid after
``max_repeat_reads`` repeats or ``max_frame_age_ms`` (the safety layer holds the arm and RobotEnv ends the episode
with ``info["stale_observation"]``), but the reads before that were valid and the stopped step's observation is the
previous one again. So the recorder (:mod:`robotrl.workflows.record`) stores per observation each camera's capture
time and whether the frame is new (not the one the previous observation of this episode held: same ``seq``, or the
same capture time for a source that does not number its frames), and when a camera stop ends an episode it drops
the stopped step and the steps before it whose frames were not new (the frozen stream's): the written episode
ends on its last new frame and holds no stale frame written as a new one.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def frame_stamps(observation: Any, cameras: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each camera's capture time (``time.monotonic`` s, this process's clock) and sequence number (-1: the source
    does not number its frames) in the :class:`~robotrl.hardware.robot.Observation` ``observation``."""
    frames = [observation.frames[cam] for cam in cameras]
    return (np.array([f.timestamp for f in frames], np.float64), np.array([f.seq for f in frames], np.int64))


def is_new(times: np.ndarray, seqs: np.ndarray, prev: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Per camera: is this frame another than the previous observation's (by ``seq`` where the source numbers its
    frames, else by capture time)? The first observation of an episode is new."""
    if prev is None:
        return np.ones(len(times), bool)
    prev_times, prev_seqs = prev
    numbered = (seqs >= 0) & (prev_seqs >= 0)
    return np.where(numbered, seqs != prev_seqs, times != prev_times)


def stale_tail(new: list[np.ndarray]) -> int:
    """How many observations at the end of an episode hold a frame that is not new (any camera): after a camera
    stop, the frozen stream's repeats and the stopped step's observation, to be dropped with their steps."""
    count = 0
    for flags in reversed(new[1:]):  # the first observation is always kept (it is new)
        if flags.all():
            break
        count += 1
    return count
