"""The observation pipeline on an arm: robot observations -> the training env's observation (``RobotEnv`` uses it for
training, eval, ``robotrl deploy``, record and replay: there is one copy).

Per frame the views are concatenated along channels in camera order (3 * views, H, W), the last ``frame_stack``
frames stacked oldest first and padded with the first at reset; for ``*_proprio`` obs types a "state" of this env
step's proprioception and the previous env step's (the arm as it was before the last send of the action repeat,
:meth:`ObservationPipeline.between_sends`), as Meta-World's ``obs[0:4], obs[18:22]``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from robotrl.hardware.frame_map import IDENTITY, FrameMap
from robotrl.hardware.obs_checks import check_frame

from robotrl.contract import OBS_TYPES

GRIPPER_NORM_M = 0.1  # Meta-World's finger distance normalisation: opening = clip(width / 0.1 m, 0, 1)


def proprio(state: Any, frame_map: FrameMap = IDENTITY) -> np.ndarray:
    """Meta-World's 4-d proprioception from a measured JointState: hand xyz (m, in the training env's frame through
    ``frame_map``), finger opening in [0, 1] (NaN xyz for an arm that reports no end-effector position; a proprio
    policy refuses such an arm)."""
    opening = np.clip(state.gripper_width / GRIPPER_NORM_M, 0.0, 1.0)
    ee = np.full(3, np.nan) if state.ee_pos is None else frame_map.position_to_policy(state.ee_pos)
    return np.append(ee, opening).astype(np.float32)


class ObservationPipeline:
    """See the module doc. ``proprio`` holds the last observation's 8-d proprioception whatever ``obs_type`` is
    (recorders store it as ``state``)."""

    def __init__(self, obs_type: str, cameras: tuple[str, ...], image_size: int, frame_stack: int,
                 frame_map: FrameMap | None = None, proprio_fn: Callable[[Any], np.ndarray] | None = None) -> None:
        self.keys = OBS_TYPES[obs_type]
        self.cameras, self.image_size, self.frame_stack = tuple(cameras), image_size, frame_stack
        self.frame_map = IDENTITY if frame_map is None else frame_map
        # the current half of "state" from a measured JointState (JointRobotEnv: joint angles instead of the hand)
        self.proprio_of = proprio_fn or (lambda state: proprio(state, self.frame_map))
        self._frames: deque[np.ndarray] = deque(maxlen=frame_stack)
        self._prev: np.ndarray | None = None
        self.proprio = np.zeros(8, np.float32)

    def frame(self, observation: Any) -> np.ndarray:
        """The newest pixels (3 * views, H, W); the camera images must be ``image_size`` (a wrong dtype, range,
        layout or size: ObservationSpecError)."""
        views = [check_frame(cam, observation.frames[cam].image, self.image_size).transpose(2, 0, 1)
                 for cam in self.cameras]
        return np.ascontiguousarray(np.concatenate(views, axis=0))

    def between_sends(self, state: Any) -> None:
        """The arm's state read between two sends of one action repeat (the last one read becomes "previous")."""
        self._prev = self.proprio_of(state)

    def _obs(self, observation: Any) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "pixels" in self.keys:
            out["pixels"] = np.concatenate(list(self._frames), axis=0)
        current = self.proprio_of(observation.state)
        self.proprio = np.concatenate([current, current if self._prev is None else self._prev])
        self._prev = current  # with action_repeat 1 the previous env step is the previous agent step
        if "state" in self.keys:
            out["state"] = self.proprio
        return out

    def reset(self, observation: Any) -> dict[str, np.ndarray]:
        self._frames.clear()
        self._prev = None  # at reset Meta-World's previous proprioception is the current one
        if "pixels" in self.keys:
            self._frames.extend([self.frame(observation)] * self.frame_stack)
        return self._obs(observation)

    def step(self, observation: Any) -> dict[str, np.ndarray]:
        if "pixels" in self.keys:
            self._frames.append(self.frame(observation))
        return self._obs(observation)
