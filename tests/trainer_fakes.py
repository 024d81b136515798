"""Small fakes for the trainer's parts: an agent, a replay, a vector env whose workers "restart", and a
:class:`~robotrl.workflows.trainer.loop.TrainLoop` built from real parts (run state, schedule, run services, logger,
checkpoints) around them. A whole loop of a few 3-step episodes runs in well under a second."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console
from robotrl.envs.vector import RESTARTED

from robotrl.distributed import DistContext
from robotrl.logger import Logger
from robotrl.workflows.trainer.hooks import DistHooks
from robotrl.workflows.trainer.loop import TrainLoop
from robotrl.workflows.trainer.run import Run
from robotrl.workflows.trainer.schedule import Schedule
from robotrl.workflows.trainer.state import Discards, RunState

ACTION_REPEAT = 2  # frames = 2 x agent steps, as in the tiny real runs


class FakeAgent(torch.nn.Module):
    """Acts 0, records every update's step; ``loss(step)`` is the ``critic_loss`` it reports."""

    def __init__(self, loss: Callable[[int], float] = float) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)
        self.loss, self.updated = loss, []

    def act(self, obs: Any, step: int, eval_mode: bool) -> np.ndarray:
        return np.zeros(1, np.float32)

    def act_batch(self, obs: dict[str, np.ndarray], step: int, eval_mode: bool) -> np.ndarray:
        return np.zeros((len(next(iter(obs.values()))), 1), np.float32)

    def update(self, replay: Any, step: int) -> dict[str, float]:
        self.updated.append(step)
        return {"critic_loss": self.loss(step)}

    def reset(self) -> None:
        pass

    def reset_env(self, index: int) -> None:
        pass


class CounterEnv(gym.Env):
    """One env of 3-step episodes: ``obs["pixels"]`` holds the step count (2 stacked 1-channel frames)."""

    observation_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (2, 1, 1), np.uint8)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.t = 0
        return {"pixels": np.zeros((2, 1, 1), np.uint8)}, {}

    def step(self, action: np.ndarray):
        self.t += 1
        return {"pixels": np.full((2, 1, 1), self.t, np.uint8)}, float(action[0]), False, self.t == 3, {}


class FakeReplay:
    """What the one-env collector hands a replay: counts of first observations and steps."""

    def __init__(self) -> None:
        self.firsts, self.steps = 0, 0

    def add_first(self, obs: Any) -> None:
        self.firsts += 1

    def add(self, action: Any, reward: float, obs: Any, terminated: bool, truncated: bool,
            reward_invalid: bool = False) -> None:
        self.steps += 1

    def __len__(self) -> int:
        return self.steps


class FakeVectorEnv:
    """``num_envs`` envs of ``length``-step episodes in this process; ``obs["state"] = [seed, t]`` (the episode's
    reset seed mod 997, -1 after an unseeded reset). ``restart_at={call: env}``: on that ``step`` call env's worker
    is reported restarted, as :class:`robotrl.envs.vector.ResilientVectorEnv` reports a killed, hung or raising
    one (``truncated`` and ``RESTARTED`` set, the observation that of a fresh unseeded reset)."""

    single_observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    single_action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, num_envs: int, length: int, restart_at: dict[int, int] | None = None) -> None:
        self.num_envs, self.length, self.restart_at = num_envs, length, dict(restart_at or {})
        self.t, self.seed = np.zeros(num_envs, int), np.full(num_envs, -1)
        self.calls, self.restarts, self.seeded = 0, 0, []

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": np.stack([self.seed, self.t], axis=1).astype(np.float32)}

    def reset(self, seed: list[int | None], options: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
        for i in np.flatnonzero(options["reset_mask"]):
            self.t[i], self.seed[i] = 0, -1 if seed[i] is None else seed[i] % 997
            if seed[i] is not None:
                self.seeded.append(seed[i])
        return self._obs(), {RESTARTED: np.zeros(self.num_envs, bool)}

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict]:
        self.calls += 1
        self.t += 1
        truncated, restarted = self.t >= self.length, np.zeros(self.num_envs, bool)
        reward = self.t.astype(np.float64)
        if self.calls in self.restart_at:
            i = self.restart_at[self.calls]
            restarted[i] = truncated[i] = True
            self.t[i], self.seed[i], self.restarts = 0, -1, self.restarts + 1
        return self._obs(), reward, np.zeros(self.num_envs, bool), truncated, {RESTARTED: restarted}

    def close(self) -> None:
        pass


def parts_loop(run_dir: Path, env: Any, collector: Any, agent: Any, replay: Any, *, frames: int,
               checkpoint_every: int, eval_every: int = 10**9, eval_episodes: int = 0,
               discards: Discards | None = None, play_eval: Any = None) -> TrainLoop:
    """A training loop of real parts (run state, schedule, the run's logging, evaluation and checkpoints) around
    ``env``, ``collector``, ``agent`` and ``replay``; ``play_eval(seeds, video, step, beat)`` plays evaluations."""
    cfg = OmegaConf.create({"frames": frames, "seed": 1, "env": {"name": "fake/counter"}, "agent": {"name": "fake"},
                            "reward": {"name": "env"}, "eval_episodes": eval_episodes, "save_video": False,
                            "compare_baselines": False, "checkpoint_replay": False, "checkpoint_keep": 2})
    schedule = Schedule(frames // ACTION_REPEAT, eval_every, checkpoint_every, eval_episodes,
                        next_eval_frame=0, next_ckpt_frame=checkpoint_every)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg=cfg, run_dir=run_dir, console=Console(quiet=True), device=torch.device("cpu"),
              dist=DistHooks(DistContext()), env=env, eval_env=env, env_info={}, reward_model=None, agent=agent,
              replay=replay, state=RunState(schedule, ACTION_REPEAT, discards=discards),
              play_eval=play_eval or (lambda seeds, video, step, beat: []), logger=Logger(run_dir, use_tb=False))
    return TrainLoop(run, collector)
