"""The observation/action contract shared by every env, replay buffer and agent.

Observation: a dict with
  - "pixels": uint8 (3 * views * frame_stack, H, W), channels first, frames stacked oldest -> newest along
    channels; one frame is the RGB image of each camera view in order (3 * views channels); at reset the stack
    holds frame_stack copies of the first frame;
  - "state": float32 (S,): the simulator's full low-dimensional state (``obs_type`` ``state``/``pixels_state``)
    or the robot's proprioception only (``proprio``/``pixels_proprio``; LeRobot's ``observation.state``).
Action: float32 (A,) in [-1, 1].
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from robotrl.errors import ActionError, ObservationError

# env.obs_type -> the observation keys it gives; "state" holds proprioception for the *_proprio types
OBS_TYPES: dict[str, tuple[str, ...]] = {
    "pixels": ("pixels",),
    "state": ("state",),
    "pixels_state": ("pixels", "state"),
    "proprio": ("state",),
    "pixels_proprio": ("pixels", "state"),
}
PROPRIO_OBS_TYPES = ("proprio", "pixels_proprio")


def check_obs(obs: dict, space: gym.spaces.Dict) -> None:
    """Raise ObservationError unless ``obs`` matches ``space`` in keys, shape and dtype (unbatched)."""
    if not isinstance(obs, dict):
        raise ObservationError(f"observation must be a dict with keys {sorted(space.spaces)}, got {type(obs).__name__}")
    if set(obs) != set(space.spaces):
        raise ObservationError(f"observation keys {sorted(obs)} != expected {sorted(space.spaces)}")
    for key, sub in space.spaces.items():
        value = np.asarray(obs[key])
        if value.shape != sub.shape:
            hint = ""
            if key == "pixels" and value.ndim == 3 and value.shape[-1] == sub.shape[0]:
                hint = " (looks channels-last; expected channels-first (C, H, W))"
            raise ObservationError(f"observation[{key!r}] has shape {value.shape}, expected {sub.shape}{hint}")
        if value.dtype != sub.dtype:
            raise ObservationError(f"observation[{key!r}] has dtype {value.dtype}, expected {sub.dtype}")


def check_obs_batch(obs: dict, space: gym.spaces.Dict) -> None:
    """:func:`check_obs` on each row of a batch of N observations (``act_batch``'s input: leading dim N)."""
    for i in range(len(next(iter(obs.values())))):
        check_obs({k: v[i] for k, v in obs.items()}, space)


def check_action(action: np.ndarray, space: gym.spaces.Box, atol: float = 1e-6) -> np.ndarray:
    """Return ``action`` as float32 of the space's shape, or raise ActionError (shape, NaN/inf, bounds)."""
    action = np.asarray(action, dtype=np.float32)
    if action.shape != space.shape:
        raise ActionError(f"action has shape {action.shape}, expected {space.shape}")
    if not np.all(np.isfinite(action)):
        raise ActionError(f"action is not finite: {action.tolist()}")
    if np.any(action < space.low - atol) or np.any(action > space.high + atol):
        raise ActionError(
            f"action {np.round(action, 4).tolist()} is outside the bounds [{space.low.min()}, {space.high.max()}]"
        )
    return action
