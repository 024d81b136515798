"""SB3 buffers that keep made-up rewards out of learning (``info["reward_invalid"]``: a failed reward-model call).

A reward model that fails on a step gives it a placeholder reward (``robotrl.rewards.base.GuardedModel``); SB3's
own buffers would learn from it as from a real one. SAC: :class:`FlaggedDictReplayBuffer` does not store a flagged
transition at all (one-step TD targets: the others are untouched). PPO: a rollout is one contiguous stretch, so a
step cannot be dropped; :class:`FlaggedDictRolloutBuffer` replaces a flagged reward by the critic's own estimate of
it (``V(s_t) - gamma * V(s_t+1)``), so its TD error is zero and the placeholder enters no advantage or return. The
PPO trainer marks a flagged step with :meth:`FlaggedDictRolloutBuffer.flag_next` (its ``add`` gets no infos).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import DictReplayBuffer, DictRolloutBuffer


class FlaggedDictReplayBuffer(DictReplayBuffer):
    """SB3's dict replay buffer that skips transitions whose info says ``reward_invalid``; ``skipped`` counts them."""

    skipped = 0

    def add(self, obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray], action: np.ndarray,
            reward: np.ndarray, done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        if any(bool(info.get("reward_invalid", False)) for info in infos):
            self.skipped += 1
            return
        super().add(obs, next_obs, action, reward, done, infos)


class FlaggedDictRolloutBuffer(DictRolloutBuffer):
    """SB3's dict rollout buffer whose flagged rewards add nothing to advantages and returns (module docstring)."""

    def reset(self) -> None:
        super().reset()
        self.reward_invalid = np.zeros((self.buffer_size, self.n_envs), bool)
        self._flag_next = False

    def flag_next(self) -> None:
        """The next ``add`` stores a step whose reward is made up."""
        self._flag_next = True

    def add(self, *args: Any, **kwargs: Any) -> None:
        if self._flag_next:
            self.reward_invalid[self.pos] = True
            self._flag_next = False
        super().add(*args, **kwargs)

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        if self.reward_invalid.any():  # the critic's estimate of the reward: delta_t = 0 at the flagged steps
            last = last_values.clone().cpu().numpy().flatten()
            next_values = np.concatenate([self.values[1:], last[None]])
            next_alive = np.concatenate([1.0 - self.episode_starts[1:], (1.0 - dones.astype(np.float32))[None]])
            implied = self.values - self.gamma * next_values * next_alive
            self.rewards = np.where(self.reward_invalid, implied, self.rewards).astype(np.float32)
        super().compute_returns_and_advantage(last_values, dones)
