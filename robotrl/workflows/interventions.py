"""A person's interventions during training on an arm, kept as demonstrations (SERL / HIL-SERL's intervention data).

:class:`~robotrl.hardware.robot_env.RobotEnv` lets an operator take over (``robot_env.operator``); the trainer stores
what the arm executed in its replay, and this recorder turns each contiguous operator-driven segment of a training
episode into a demo :class:`~robotrl.types.Episode`: saved under ``<run>/interventions/`` in the robotrl demo format
(``meta.json`` lists the training episode of each segment) and handed to the agent (``agent.add_demos``, MoDem's
demo buffer). A resumed run re-adds the segments of the episodes before its checkpoint, in order, so it continues
exactly; segments saved after that checkpoint (by a run that then crashed) are overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robotrl.atomic import atomic_write_text
from robotrl.demos import FORMAT_VERSION, META, episode_file, load_demos, save_episode
from robotrl.episodes import EpisodeBuilder
from robotrl.errors import CheckpointError
from robotrl.readers import read_json
from robotrl.types import Episode


class InterventionRecorder:
    """Collects one training episode's steps; :meth:`finish` returns (and saves) its operator-driven segments."""

    def __init__(self, out: Path, observation_space: gym.spaces.Dict, frame_stack: int, name: str) -> None:
        self.out, self.space, self.name = Path(out), observation_space, name
        self.keys = sorted(observation_space.spaces)
        frame_channels = observation_space["pixels"].shape[0] // frame_stack if "pixels" in self.keys else 0
        # as the replay stores it: the newest frame only (stacks are rebuilt); the demo format has no reward flags
        self.episode = EpisodeBuilder(frame_channels, self.keys, flags=False)
        self._train_episodes: list[int] = []
        self._operator: list[bool] = []  # per step: an operator drove it

    def begin(self, obs: dict[str, np.ndarray]) -> None:
        self.episode.begin(obs)
        self._operator = []

    def step(self, action: np.ndarray, reward: float, obs: dict[str, np.ndarray], terminated: bool,
             info: dict[str, Any]) -> None:
        self.episode.add(action, reward, obs, terminated, bool(info.get("success", False)))
        self._operator.append(bool(info.get("intervention", False)))

    def finish(self, train_episode: int) -> list[Episode]:
        """The finished episode's operator segments as Episodes (obs ``t .. t + k``), saved before returning."""
        flags = self._operator
        segments, t = [], 0
        while t < len(flags):
            if not flags[t]:
                t += 1
                continue
            end = t
            while end < len(flags) and flags[end]:
                end += 1
            segments.append(self.episode.build(t, end))
            t = end
        for segment in segments:
            self._save(segment, train_episode)
        return segments

    # ------------------------------------------------------------------------------------------ on disk
    def _save(self, episode: Episode, train_episode: int) -> None:
        """One segment in the demo format (pixels: the frames, or a 1x1 placeholder for a proprio-only env)."""
        self.out.mkdir(parents=True, exist_ok=True)
        n = len(episode.action) + 1
        pixels = episode.obs.get("pixels", np.zeros((n, 3, 1, 1), np.uint8))
        state = episode.obs.get("state", np.zeros((n, 1), np.float32))
        index = len(self._train_episodes)
        save_episode(self.out / episode_file(index), episode._replace(obs={"pixels": pixels, "state": state}))
        self._train_episodes.append(int(train_episode))
        views = max(pixels.shape[1] // 3, 1)
        meta = {"format_version": FORMAT_VERSION, "name": self.name, "num_episodes": len(self._train_episodes),
                "image_size": int(pixels.shape[-1]), "state_dim": int(state.shape[1]),
                "action_dim": int(episode.action.shape[1]), "cameras": [f"view{i}" for i in range(views)],
                "proprio_index": list(range(int(state.shape[1]))), "train_episodes": self._train_episodes,
                "source": "operator interventions during training (robotrl.workflows.interventions)"}
        atomic_write_text(self.out / META, json.dumps(meta, indent=1))

    def load(self, before_episode: int) -> list[Episode]:
        """The saved segments of training episodes ``< before_episode`` (a resumed run's), in the agent's format."""
        if not (self.out / META).is_file():
            return []
        meta = read_json(self.out / META, CheckpointError, "interventions meta.json")
        keep = [e for e in meta["train_episodes"] if e < before_episode]
        self._train_episodes = list(keep)
        episodes = load_demos(self.out)[: len(keep)]
        return [ep._replace(obs={k: ep.obs[k] for k in self.keys}) for ep in episodes]
