"""Small wrappers that turn any suite's base env into the robotrl observation/action contract.

The stack built by :func:`robotrl.envs.make_env` is, innermost first::

    base env (native action bounds, float32 state, ``render_frame(size)``)
    -> gymnasium.wrappers.RescaleAction  (agent actions in [-1, 1])
    -> ActionRepeat                      (sums rewards, ORs ``info["success"]``)
    -> gymnasium.wrappers.TimeLimit      (agent-step limit -> ``truncated``)
    -> DictObservation                   ({"pixels": (3 * views, H, W), "state": (S,) or proprioception})
    -> FrameStack                        (pixels (3 * views * k, H, W), oldest -> newest)
    -> ValidateAction                    (robotrl.contract.check_action -> ActionError)

FrameStack is written here because gymnasium's ``FrameStackObservation`` stacks on a new leading axis
((k, 3, H, W)) and stacks every Dict key, whereas the contract wants channels-first (3k, H, W) pixels and an
unstacked state.
"""

from __future__ import annotations

from collections import deque
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from robotrl.contract import OBS_TYPES, PROPRIO_OBS_TYPES, check_action

PIXELS, STATE = "pixels", "state"


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards and OR-ing ``info["success"]`` if present.

    Stops early when the episode ends so a terminal step is never stepped past.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        if repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {repeat}")
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total, success = 0.0, None
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if "success" in info:
                success = bool(success) or bool(info["success"])
            if terminated or truncated:
                break
        if success is not None:
            info = {**info, "success": success}
        return obs, total, terminated, truncated, info


class DictObservation(gym.ObservationWrapper):
    """Replace the base env's state vector by the contract dict ("pixels" single frame and/or "state").

    Pixels come from ``env.unwrapped.render_frame(image_size, view)`` so rendering happens once per agent step,
    after the action repeat; with several cameras (``env.unwrapped.cameras``) the views are concatenated along
    channels in camera order.  ``*_proprio`` observation types keep the entries ``env.unwrapped.proprio_index``
    of the state (the robot's own joints/gripper), so the agent sees no object or goal positions.
    """

    def __init__(self, env: gym.Env, obs_type: str, image_size: int) -> None:
        super().__init__(env)
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type={obs_type!r}, expected one of {list(OBS_TYPES)}")
        self.obs_type = obs_type
        self.image_size = image_size
        base = env.unwrapped
        self.num_views = len(getattr(base, "cameras", (None,)))
        self.proprio_index: np.ndarray | None = None
        if obs_type in PROPRIO_OBS_TYPES:
            if getattr(base, "proprio_index", None) is None:
                raise ValueError(f"obs_type={obs_type!r} but {type(base).__name__} defines no proprio_index")
            self.proprio_index = np.asarray(base.proprio_index)
        spaces: dict[str, gym.spaces.Box] = {}
        keys = OBS_TYPES[obs_type]
        if PIXELS in keys:
            spaces[PIXELS] = gym.spaces.Box(0, 255, (3 * self.num_views, image_size, image_size), np.uint8)
        if STATE in keys:
            state = env.observation_space
            low, high = state.low, state.high
            if self.proprio_index is not None:
                low, high = low[self.proprio_index], high[self.proprio_index]
            spaces[STATE] = gym.spaces.Box(low, high, low.shape, np.float32)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if PIXELS in self.observation_space.spaces:
            base = self.env.unwrapped
            if self.num_views == 1:
                frame = base.render_frame(self.image_size)
            else:
                frame = np.concatenate([base.render_frame(self.image_size, v) for v in range(self.num_views)], axis=2)
            out[PIXELS] = np.ascontiguousarray(frame.transpose(2, 0, 1))
        if STATE in self.observation_space.spaces:
            state = np.asarray(observation, dtype=np.float32)
            out[STATE] = state if self.proprio_index is None else state[self.proprio_index]
        return out


class FrameStack(gym.Wrapper):
    """Stack the last ``k`` pixel frames along channels (oldest first); reset pads with the first frame."""

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        spaces = dict(env.observation_space.spaces)
        if PIXELS in spaces:
            c, h, w = spaces[PIXELS].shape
            spaces[PIXELS] = gym.spaces.Box(0, 255, (c * k, h, w), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

    def _stacked(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if PIXELS not in obs:
            return obs
        return {**obs, PIXELS: np.concatenate(list(self._frames), axis=0)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if PIXELS in obs:
            self._frames.clear()
            for _ in range(self.k):
                self._frames.append(obs[PIXELS])
        return self._stacked(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if PIXELS in obs:
            self._frames.append(obs[PIXELS])
        return self._stacked(obs), reward, terminated, truncated, info


class ValidateAction(gym.Wrapper):
    """Reject bad actions with ActionError (wrong shape, NaN/inf, outside [-1, 1]) before they reach physics."""

    def step(self, action: Any):
        return self.env.step(check_action(action, self.action_space))


class RobotRLInfo(gym.Wrapper):
    """Outermost wrapper: carries ``robotrl_info`` (suite, task, versions) without reaching into ``unwrapped``.

    The same dict is also placed in ``env.metadata["robotrl"]`` so generic gymnasium code can see it.
    """

    def __init__(self, env: gym.Env, info: dict[str, Any]) -> None:
        super().__init__(env)
        self.robotrl_info = dict(info)
        self.metadata = {**env.metadata, "robotrl": self.robotrl_info}
