"""``WorldEnv``: a gymnasium env that steps through a learned world model instead of a simulator (World-Env).

``reset`` starts from real initial frames (``context`` frames + proprioception recorded in the simulator, one set
drawn per seed, or ``options={"index": i}``); ``step`` predicts the next frame with the world model; the reward is
the reflector's success probability on that frame and the episode terminates when the score has exceeded the
reflector's threshold on ``reflector.consecutive`` frames in a row (``terminate_on_success``) or is truncated after
``max_steps``. It satisfies the env contract
(``pixels`` uint8 ``(3 * frame_stack, H, W)``, ``state`` = the robot's proprioception, float32 actions in [-1, 1],
``info["success"]``), so any of our agents can train in it. The model and the reflector are handed in
(:class:`robotrl.world.WorldModel`, :class:`robotrl.world.Reflector`): this module imports neither agents nor rewards.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from robotrl.contract import check_action
from robotrl.errors import ConfigError
from robotrl.world import (
    Reflector,
    WorldModel,
    check_context,
    check_instruction,
    success_streak,
    termination_rule,
)


class WorldEnv(gym.Env):
    """``state_bound``: the ``state`` space is [-bound, bound] (finite, as gymnasium's checker asks; Meta-World's
    proprioception, hand position in metres and gripper opening, lies well inside 10) and a predicted or initial
    state is clipped into it; ``render_fps``: Meta-World's 80 Hz control over action repeat 2."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 40}
    render_mode = "rgb_array"

    def __init__(self, model: WorldModel, reflector: Reflector, initial_frames: np.ndarray,
                 initial_proprio: np.ndarray, instruction: str, max_steps: int = 60, frame_stack: int = 1,
                 terminate_on_success: bool = True, state_bound: float = 10.0, render_fps: float = 40.0,
                 render_mode: str | None = "rgb_array"):
        self.model, self.reflector = model, reflector
        self.instruction = check_instruction(instruction)
        size, c = model.image_size, model.context
        frames, proprio = check_context(initial_frames, initial_proprio, size, c, model.proprio_dim, "WorldEnv")
        if max_steps < 1 or frame_stack < 1:
            raise ConfigError(f"WorldEnv max_steps={max_steps}, frame_stack={frame_stack}, expected both >= 1")
        if not (np.isfinite(state_bound) and state_bound > 0 and np.isfinite(render_fps) and render_fps > 0):
            raise ConfigError(f"WorldEnv state_bound={state_bound}, render_fps={render_fps}, expected both finite "
                              f"and > 0")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"WorldEnv render_mode={render_mode!r}, expected None or one of "
                              f"{self.metadata['render_modes']}")
        self.metadata = {**self.metadata, "render_fps": render_fps}
        self.state_bound, self.render_mode = float(state_bound), render_mode
        # a spec, as gymnasium.make would give, so checkers and gymnasium code can make it again (other render modes)
        self.spec = EnvSpec("robotrl/WorldEnv-v0", entry_point=WorldEnv, kwargs={
            "model": model, "reflector": reflector, "initial_frames": initial_frames,
            "initial_proprio": initial_proprio, "instruction": instruction, "max_steps": max_steps,
            "frame_stack": frame_stack, "terminate_on_success": terminate_on_success, "state_bound": state_bound,
            "render_fps": render_fps})
        self.initial_frames, self.initial_proprio = frames, proprio
        self.max_steps, self.frame_stack, self.terminate_on_success = max_steps, frame_stack, terminate_on_success
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (3 * frame_stack, size, size), np.uint8),
            "state": gym.spaces.Box(-self.state_bound, self.state_bound, (model.proprio_dim,), np.float32),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (model.action_dim,), np.float32)
        self.robotrl_info = {"suite": "worldenv", "task": self.instruction, "name": "worldenv", "frame_stack":
                             frame_stack, "image_size": size, "max_episode_steps": max_steps, "action_repeat": 1}
        self._frames: deque[np.ndarray] = deque(maxlen=frame_stack)
        self._state: Any = None
        self._t = 0
        self._streak = np.zeros(1, np.int64)

    def _obs(self, proprio: np.ndarray) -> dict[str, np.ndarray]:
        state = np.clip(proprio, -self.state_bound, self.state_bound).astype(np.float32)
        return {"pixels": np.concatenate(list(self._frames), axis=0), "state": state}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        n = len(self.initial_frames)
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(n))
        elif not 0 <= int(index) < n:
            raise ConfigError(f"WorldEnv reset index={index}, expected 0 <= index < {n} (the initial states)")
        frames, proprio = self.initial_frames[int(index)], self.initial_proprio[int(index)]
        self._state = self.model.init(frames[None], proprio[None])
        self._frames.clear()
        for _ in range(self.frame_stack):
            self._frames.append(frames[-1])
        self._t = 0
        self._streak[:] = 0
        return self._obs(proprio), {"index": int(index), "success": False}

    def step(self, action: np.ndarray):
        if self._state is None:
            raise ConfigError("WorldEnv.step called before reset")
        action = check_action(action, self.action_space)
        self._state, frame, proprio = self.model.step(self._state, action[None])
        self._frames.append(frame[0])
        self._t += 1
        score = float(self.reflector.score(frame.transpose(0, 2, 3, 1), [self.instruction])[0])
        self._streak, done = success_streak(self._streak, np.array([score]), *termination_rule(self.reflector))
        success = bool(done[0])
        terminated = bool(success and self.terminate_on_success)
        truncated = bool(self._t >= self.max_steps and not terminated)
        return self._obs(proprio[0]), score, terminated, truncated, {"success": success, "reflector_score": score}

    def render(self) -> np.ndarray:
        return self._frames[-1].transpose(1, 2, 0).copy()


__all__ = ["WorldEnv"]
