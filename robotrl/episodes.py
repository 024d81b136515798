"""One way to turn steps into an :class:`~robotrl.types.Episode` and one way to play an episode.

:class:`EpisodeBuilder` collects a reset observation and then one step at a time (the newest frame of each stacked
observation, as the replay and the demo format store it) and builds the ``Episode``, or any contiguous part of it
(an operator's take-over segment). :func:`record_episode` plays one episode from ``env.reset(seed=seed)`` with a
policy, the loop that evaluation, baselines, the one-env trainer, the Ray rollout actors, the expert demos,
reward_eval's rollouts and World-Env's simulator and WorldEnv episodes (chunked policies via :func:`chunked`) share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robotrl.types import Episode, Obs

Policy = Callable[[Obs], np.ndarray]
StepHook = Callable[[np.ndarray, float, Obs, bool, bool, dict[str, Any]], None]


class EpisodeBuilder:
    """Steps -> :class:`Episode`. ``frame_channels``: channels of one frame (all views) kept of ``obs["pixels"]``
    (0 keeps the observation whole); ``keys``: the observation keys kept (all when None); ``flags``: build
    ``reward_invalid`` (the replay's made-up-reward flags) or leave it None (the demo format has none)."""

    def __init__(self, frame_channels: int = 0, keys: Sequence[str] | None = None, flags: bool = True) -> None:
        if frame_channels < 0:
            raise ValueError(f"frame_channels={frame_channels}, expected >= 0")
        self.frame_channels, self.keys, self.flags = int(frame_channels), keys, flags
        self.obs: list[dict[str, np.ndarray]] = []
        self.action: list[np.ndarray] = []
        self.reward: list[float] = []
        self.terminated: list[bool] = []
        self.success: list[bool] = []
        self.reward_invalid: list[bool] = []

    def newest(self, obs: Obs) -> dict[str, np.ndarray]:
        """What an episode stores of ``obs``: the kept keys, pixels cut to the newest frame, copied."""
        keys = obs.keys() if self.keys is None else self.keys
        cut = {k: obs[k][-self.frame_channels:] if k == "pixels" and self.frame_channels else obs[k] for k in keys}
        return {k: np.array(v) for k, v in cut.items()}  # cut first: a copy of the whole stack would stay alive

    def begin(self, obs: Obs) -> None:
        """Start over from a reset observation."""
        self.obs = [self.newest(obs)]
        self.action, self.reward, self.terminated, self.success, self.reward_invalid = [], [], [], [], []

    def add(self, action: np.ndarray, reward: float, obs: Obs, terminated: bool, success: bool = False,
            reward_invalid: bool = False) -> None:
        """One step: the action taken, its reward and the observation after it."""
        if not self.obs:
            raise ValueError("EpisodeBuilder.add() before begin(); call begin(obs) with the reset observation")
        self.obs.append(self.newest(obs))
        self.action.append(np.asarray(action, np.float32))
        self.reward.append(float(reward))
        self.terminated.append(bool(terminated))
        self.success.append(bool(success))
        self.reward_invalid.append(bool(reward_invalid))

    def __len__(self) -> int:
        """Steps added since :meth:`begin`."""
        return len(self.action)

    def build(self, start: int = 0, end: int | None = None) -> Episode:
        """Steps ``start .. end-1`` (observations ``start .. end``) as an Episode; the whole episode by default."""
        end = len(self) if end is None else end
        if not 0 <= start < end <= len(self):
            raise ValueError(f"steps {start}..{end} of an episode of {len(self)} steps: expected 0 <= start < end")
        obs = self.obs[start:end + 1]
        return Episode(obs={k: np.stack([o[k] for o in obs]) for k in obs[0]},
                       action=np.stack(self.action[start:end]),
                       reward=np.asarray(self.reward[start:end], np.float32),
                       terminated=np.asarray(self.terminated[start:end], bool),
                       success=np.asarray(self.success[start:end], bool),
                       reward_invalid=np.asarray(self.reward_invalid[start:end], bool) if self.flags else None)


@dataclass
class Recorded:
    """One played episode: its return, length, success (None where the task defines none) and, when a builder
    was handed in, the built ``episode``."""

    seed: int
    ret: float
    length: int
    success: bool | None
    episode: Episode | None = None
    stopped: bool = False  # ended by ``stop`` (not by the env)
    terminated: bool = False  # the last step's ``terminated``

    def as_result(self) -> dict[str, Any]:
        """The per-episode result dict of ``robotrl.workflows.rollout``."""
        return {"seed": self.seed, "return": self.ret, "success": self.success, "length": self.length}


def chunked(act_chunk: Callable[[Obs], Sequence[np.ndarray]]) -> Policy:
    """A one-action policy from a chunked one (a VLA's ``act_chunk(obs) -> (K, A)``): a new chunk is asked for, with
    the current observation, only when the last one is used up; the rest of a chunk is dropped when the episode ends.
    Make one per episode (it holds the unused actions)."""
    queue: list[np.ndarray] = []

    def act(obs: Obs) -> np.ndarray:
        while not queue:  # (an empty chunk asks again with the same observation, as a chunk loop would)
            queue.extend(act_chunk(obs))
        return queue.pop(0)

    return act


def record_episode(env: Any, policy: Policy, seed: int | None, *, on_reset: Callable[[Obs], None] | None = None,
                   on_step: StepHook | None = None, frames: list[np.ndarray] | None = None,
                   builder: EpisodeBuilder | None = None, options: dict[str, Any] | None = None,
                   stop: Callable[[Obs], bool] | None = None) -> Recorded:
    """Play one episode from ``env.reset(seed=seed)`` with ``policy(obs) -> action``.

    ``on_reset(obs)`` runs after the reset, ``on_step(action, reward, obs, terminated, truncated, info)`` after
    each step (``action`` is what the env executed: ``info["executed_action"]`` when a person took over);
    ``frames`` gets ``env.render()`` after the reset and each step; ``builder`` stores the episode. Success is
    "solved at any step" (``info["success"]`` true at least once), Meta-World's usual definition. ``options`` go to
    ``env.reset`` (a WorldEnv's initial state ``{"index": i}``); ``stop(obs)`` true after a step that did not end the
    episode ends it there (``Recorded.stopped``: a reflector's termination).
    """
    obs, _ = env.reset(seed=seed) if options is None else env.reset(seed=seed, options=options)
    if on_reset is not None:
        on_reset(obs)
    if builder is not None:
        builder.begin(obs)
    if frames is not None:
        frames.append(env.render())
    ret, length, success, done, stopped, terminated = 0.0, 0, None, False, False, False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        action = info.get("executed_action", action)
        ret, length = ret + float(reward), length + 1
        if "success" in info:
            success = bool(success) or bool(info["success"])
        if builder is not None:
            builder.add(action, reward, obs, terminated, bool(info.get("success", False)),
                        bool(info.get("reward_invalid", False)))
        if on_step is not None:
            on_step(action, reward, obs, terminated, truncated, info)
        if frames is not None:
            frames.append(env.render())
        done = terminated or truncated
        if not done and stop is not None and stop(obs):
            done = stopped = True
    return Recorded(int(seed) if seed is not None else -1, ret, length, success,
                    builder.build() if builder is not None else None, stopped, bool(terminated))
