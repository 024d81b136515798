"""``env.num_envs=N`` training: N envs in worker processes, the agent acting on batches, one replay stream per env.

The loop runs in *segments*. A segment starts N episodes at once (episode indices ``episode .. episode+N-1``,
seeded as the one-env trainer seeds them) and deals the next index to whichever env finishes first. When an
evaluation, a checkpoint or the end of training is due, the segment drains: finished envs take no new episode and
the rest play theirs to the end (an idle worker is reset unseeded and its steps ignored; with fixed-length episodes,
dm-control and Meta-World, all envs finish together and nothing is wasted). Between segments no episode is in
progress, so checkpoints hold no half-played episode and a resumed run replays exactly what the uninterrupted run
did. Updates keep the one-env ratio: one ``agent.update`` per env step, i.e. k per vector step with k active envs,
from ``seed_frames`` on -- or later, from the first finished episode: an episode reaches the replay at its end
(``robotrl.episode_streams.EpisodeStreams``), so with one env's first episode longer than the seed phase, updates
wait for it.

A crashed or hung worker (``robotrl.envs.vector``) is restarted; the episode it was playing is discarded (never
added to the replay), counted in ``discarded_episodes`` / ``discarded_steps`` in ``train.csv`` and ``summary.json``
(not in ``step``/``frames``, which count only the steps that reached the replay), and played again from the same
seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robotrl.agents import agent_capabilities
from robotrl.envs.vector import RESTARTED, make_vector_env, num_envs_of
from robotrl.episode_streams import EpisodeStreams
from robotrl.errors import ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.rewards import wrap_vector_env
from robotrl.workflows.rollout import run_episodes_vector
from robotrl.workflows.segments import SegmentedTrainer
from robotrl.workflows.train import EpisodeStats, GracefulInterrupt, episode_seed


def info_at(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info dict from a vector env's dict of arrays (keys its step did not set are left out)."""
    out = {}
    for key, value in infos.items():
        if key.startswith("_") or key == RESTARTED:
            continue
        mask = infos.get(f"_{key}")
        if mask is None or mask[i]:
            out[key] = value[i]
    return out


class VectorTrainer(SegmentedTrainer):
    """:class:`Trainer` over ``env.num_envs`` envs in worker processes (see the module docstring)."""

    def _build_envs(self) -> None:
        cfg = self.cfg
        self.num_envs = num_envs_of(cfg.env)
        self.vector_env = make_vector_env(cfg.env, seed=int(cfg.seed))
        self.env = wrap_vector_env(self.vector_env, cfg.reward, self.reward_model)
        eval_envs = max(1, min(self.num_envs, int(cfg.eval_episodes)))
        self.eval_env = make_vector_env(cfg.env, seed=int(cfg.seed), num_envs=eval_envs)
        self.env_info = {**dict(self.vector_env.call_at(0, "robotrl_info")), "num_envs": self.num_envs}
        self.discarded_episodes = self.discarded_steps = 0

    def _build_agent(self) -> None:
        super()._build_agent()
        if not agent_capabilities(self.cfg.agent).batched_acting:
            raise ConfigError(f"agent={self.cfg.agent.name} cannot act on a batch of observations (no act_batch); "
                              f"use env.num_envs=1 with it")

    def _reset_agent_slot(self, index: int) -> None:
        self.agent.reset_env(index)  # batched_acting agents declare it (checked in _build_agent)

    # ---------------------------------------------------------------- loop
    def _before_segments(self) -> None:
        self.streams = EpisodeStreams(self.replay, self.num_envs)  # after a resume replaced self.replay

    def _run_segment(self, total_steps: int, seed_steps: int, interrupt: GracefulInterrupt) -> None:
        """Play episodes on every env until a drain empties them all (see the module docstring)."""
        n = self.num_envs
        self._next_start = self.episode
        self._episode_of: list[int | None] = [None] * n
        self._stats = [EpisodeStats() for _ in range(n)]
        obs = self._reset(np.ones(n, bool), np.zeros(n, bool))
        draining = False
        progress, task = self._progress_task
        while any(e is not None for e in self._episode_of):
            interrupt.check()
            actions = self.agent.act_batch(obs, self.step, eval_mode=False)
            active = [i for i in range(n) if self._episode_of[i] is not None]
            can_update = len(self.replay) > 0  # episodes reach the replay at their end
            for j, i in enumerate(active):  # one update per env step, as with one env
                if self.step + j >= seed_steps and can_update:
                    self._stats[i].updates.append(self.agent.update(self.replay, self.step + j))
            obs, reward, terminated, truncated, infos = self.env.step(actions)
            finished = np.logical_or(terminated, truncated)
            restarted = infos.get(RESTARTED, np.zeros(n, bool))
            start, idle = np.zeros(n, bool), finished.copy()  # idle workers' unseeded episodes just restart
            ended: list[int] = []
            for i in active:
                idle[i] = False
                if restarted[i]:
                    self._discard(i)
                    start[i] = True  # the same episode index again, from its seed
                    continue
                step_obs = {k: v[i] for k, v in obs.items()}
                info = info_at(infos, i)
                self.streams.add(i, actions[i], float(reward[i]), step_obs, bool(terminated[i]),
                                 bool(truncated[i]), success=bool(info.get("success", False)),
                                 reward_invalid=bool(info.get("reward_invalid", False)))
                self._stats[i].add_step(float(reward[i]), info)
                self.step += 1
                if not finished[i]:
                    continue
                self.episode += 1
                self._log_train_episode(self._stats[i])
                progress.update(task, ret=self._stats[i].ret)
                ended.append(i)
            # decided on the whole vector step: envs that finish together (fixed-length episodes) drain together
            draining = draining or (bool(ended) and self._due(total_steps))
            for i in ended:
                if draining:
                    self._episode_of[i], idle[i] = None, True
                else:
                    self._episode_of[i], start[i] = self._next_start, True
                    self._next_start += 1
            progress.update(task, completed=min(self.step, total_steps))
            if (start | idle).any():
                obs = self._reset(start, idle)

    def _reset(self, start: np.ndarray, idle: np.ndarray) -> dict[str, np.ndarray]:
        """Reset envs in ``start`` into episodes (a new index where none is assigned) and ``idle`` ones unseeded."""
        seeds: list[int | None] = [None] * self.num_envs
        for i in np.flatnonzero(start):
            if self._episode_of[i] is None:
                self._episode_of[i] = self._next_start
                self._next_start += 1
            seeds[i] = episode_seed(int(self.cfg.seed), self._episode_of[i])
        new_obs, _ = self.env.reset(seed=seeds, options={"reset_mask": start | idle})
        for i in np.flatnonzero(start):
            self._reset_agent_slot(int(i))
            self.streams.begin(int(i), {k: v[i] for k, v in new_obs.items()})
            self._stats[i] = EpisodeStats()
        return new_obs

    def _discard(self, i: int) -> None:
        """A restarted worker's episode: never reaches the replay, counted beside ``step`` (not in it: frames count
        only the steps that reached the replay), played again."""
        steps = self.streams.discard(i)
        self.step -= steps
        self.discarded_steps += steps
        self.discarded_episodes += 1
        self.console.print(f"[yellow]env worker {i} was restarted: episode {self._episode_of[i]} discarded "
                           f"({self.discarded_episodes} so far) and played again from its seed[/yellow]")

    def _log_train_episode(self, stats: EpisodeStats) -> None:
        # the cumulative counts ride in the row's extra columns (where reward=<model> puts its sums)
        stats.rewards = {**stats.rewards, "discarded_episodes": float(self.discarded_episodes),
                         "discarded_steps": float(self.discarded_steps)}
        super()._log_train_episode(stats)

    def _run_eval_episodes(self, seeds: list[int], video: Path | None, policy: Any, on_reset: Any) -> list[dict]:
        beat = Heartbeat(f"eval @ {self.frame} frames ({self.eval_env.num_envs} envs)", write=self.console.print)
        started = {"n": 0}

        def reset_slot(i: int) -> None:
            started["n"] += 1
            self._reset_agent_slot(i)

        def batch_policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            beat.tick(lambda: f"episode {started['n']}/{len(seeds)} started")
            return self.agent.act_batch(obs, self.step, eval_mode=True)

        return run_episodes_vector(self.eval_env, batch_policy, seeds, video, on_reset=reset_slot)
