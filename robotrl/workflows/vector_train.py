"""``env.num_envs=N`` training: N envs in worker processes, the agent acting on batches, one replay stream per env.

The :class:`VectorCollector` plays in *segments*. A segment starts N episodes at once (episode indices
``episode .. episode+N-1``, seeded as the one-env collector seeds them) and deals the next index to whichever env
finishes first. When an evaluation, a checkpoint or the end of training is due, the segment drains: finished envs
take no new episode and the rest play theirs to the end (an idle worker is reset unseeded and its steps ignored;
with fixed-length episodes, dm-control and Meta-World, all envs finish together and nothing is wasted). Between
segments no episode is in progress, so checkpoints hold no half-played episode and a resumed run replays exactly
what the uninterrupted run did. Updates keep the one-env ratio: one ``agent.update`` per env step, i.e. k per
vector step with k active envs, from ``seed_frames`` on -- or later, from the first finished episode: an episode
reaches the replay at its end (``robotrl.episode_streams.EpisodeStreams``), so with one env's first episode longer
than the seed phase, updates wait for it.

A crashed or hung worker (``robotrl.envs.vector``) is restarted; the episode it was playing is discarded (never
added to the replay), counted in ``discarded_episodes`` / ``discarded_steps`` in ``train.csv`` and ``summary.json``
(not in ``step``/``frames``, which count only the steps that reached the replay), and played again from the same
seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from robotrl.envs.vector import RESTARTED, make_vector_env, num_envs_of
from robotrl.episode_streams import EpisodeStreams
from robotrl.errors import ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.rewards import wrap_vector_env
from robotrl.types import capabilities_of
from robotrl.workflows.rollout import run_episodes_vector
from robotrl.workflows.trainer.console import GracefulInterrupt, stop_point
from robotrl.workflows.trainer.run import Run
from robotrl.workflows.trainer.schedule import episode_seed
from robotrl.workflows.trainer.stats import EpisodeStats


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


def build_vector_envs(cfg: DictConfig, reward_model: Any) -> dict[str, Any]:
    """The training vector env (reward layer on), the eval vector env (at most ``eval_episodes`` envs) and its
    eval player; ``vector_env`` is the unwrapped training one (its workers, restarts)."""
    num_envs = num_envs_of(cfg.env)
    vector_env = make_vector_env(cfg.env, seed=int(cfg.seed))
    eval_envs = max(1, min(num_envs, int(cfg.eval_episodes)))
    return {"env": wrap_vector_env(vector_env, cfg.reward, reward_model), "vector_env": vector_env,
            "eval_env": make_vector_env(cfg.env, seed=int(cfg.seed), num_envs=eval_envs),
            "env_info": {**dict(vector_env.call_at(0, "robotrl_info")), "num_envs": num_envs},
            "player": vector_player}


def check_batch_agent(agent: Any, name: str) -> None:
    if not capabilities_of(agent).batched_acting:
        raise ConfigError(f"agent={name} cannot act on a batch of observations (no act_batch); "
                          f"use env.num_envs=1 with it")


def reset_agent_slot(agent: Any, index: int) -> None:
    """Agents that keep per-env state (TD-MPC2's warm-started plans) forget env ``index``'s."""
    agent.reset_env(index)  # batched_acting agents declare it (checked in check_batch_agent)


def vector_player(eval_env: Any, agent: Any) -> Any:
    """The eval player of a vector env: the eval seeds dealt to its envs, the agent acting on the batch."""

    def play(seeds: list[int], video: Path | None, step: int, beat: Heartbeat) -> list[dict[str, Any]]:
        started = {"n": 0}

        def reset_slot(i: int) -> None:
            started["n"] += 1
            reset_agent_slot(agent, i)

        def batch_policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            stop_point()
            beat.tick(lambda: f"episode {started['n']}/{len(seeds)} started ({eval_env.num_envs} envs)")
            return agent.act_batch(obs, step, eval_mode=True)

        return run_episodes_vector(eval_env, batch_policy, seeds, video, on_reset=reset_slot)

    return play


class VectorCollector:
    """Episodes on every env of a vector env until a drain empties them all (see the module docstring).

    Its own loop, not :func:`robotrl.episodes.record_episode`: sub-envs start and end episodes at different steps
    and act in one batch; each sub-env's steps still go through one ``EpisodeBuilder`` (``EpisodeStreams``)."""

    def __init__(self, vector_env: Any, seed_steps: int) -> None:
        self.vector_env, self.seed_steps = vector_env, seed_steps
        self.num_envs = int(vector_env.num_envs)
        self.streams: EpisodeStreams | None = None

    def start(self, run: Run) -> None:
        self.streams = EpisodeStreams(run.replay, self.num_envs)  # after a resume replaced the replay

    def collect(self, run: Run, interrupt: GracefulInterrupt) -> Iterator[EpisodeStats]:
        n, agent, state = self.num_envs, run.agent, run.state
        self._run, self._next_start = run, state.episode
        self._episode_of: list[int | None] = [None] * n
        self._stats = [EpisodeStats() for _ in range(n)]
        obs = self._reset(np.ones(n, bool), np.zeros(n, bool))
        draining = False
        while any(e is not None for e in self._episode_of):
            interrupt.check()
            actions = agent.act_batch(obs, state.step, eval_mode=False)
            active = [i for i in range(n) if self._episode_of[i] is not None]
            can_update = len(run.replay) > 0  # episodes reach the replay at their end
            for j, i in enumerate(active):  # one update per env step, as with one env
                if state.step + j >= self.seed_steps and can_update:
                    with interrupt.anytime():
                        self._stats[i].updates.append(agent.update(run.replay, state.step + j))
            obs, reward, terminated, truncated, infos = run.env.step(actions)
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
                info = info_at(infos, i)
                self.streams.add(i, actions[i], float(reward[i]), {k: v[i] for k, v in obs.items()},
                                 bool(terminated[i]), bool(truncated[i]), success=bool(info.get("success", False)),
                                 reward_invalid=bool(info.get("reward_invalid", False)))
                self._stats[i].add_step(float(reward[i]), info)
                state.step += 1
                if finished[i]:
                    yield self._stats[i]
                    ended.append(i)
            # decided on the whole vector step: envs that finish together (fixed-length episodes) drain together
            draining = draining or (bool(ended) and run.drain_due())
            for i in ended:
                if draining:
                    self._episode_of[i], idle[i] = None, True
                else:
                    self._episode_of[i], start[i] = self._next_start, True
                    self._next_start += 1
            run.progress.steps(state.step)
            if (start | idle).any():
                obs = self._reset(start, idle)

    def _reset(self, start: np.ndarray, idle: np.ndarray) -> dict[str, np.ndarray]:
        """Reset envs in ``start`` into episodes (a new index where none is assigned) and ``idle`` ones unseeded."""
        seeds: list[int | None] = [None] * self.num_envs
        for i in np.flatnonzero(start):
            if self._episode_of[i] is None:
                self._episode_of[i] = self._next_start
                self._next_start += 1
            seeds[i] = episode_seed(int(self._run.cfg.seed), self._episode_of[i])
        new_obs, _ = self._run.env.reset(seed=seeds, options={"reset_mask": start | idle})
        for i in np.flatnonzero(start):
            reset_agent_slot(self._run.agent, int(i))
            self.streams.begin(int(i), {k: v[i] for k, v in new_obs.items()})
            self._stats[i] = EpisodeStats()
        return new_obs

    def _discard(self, i: int) -> None:
        """A restarted worker's episode: never reaches the replay, counted beside ``step`` (not in it: frames count
        only the steps that reached the replay), played again."""
        steps = self.streams.discard(i)
        state = self._run.state
        state.step -= steps
        state.discards.steps += steps
        state.discards.episodes += 1
        self._run.console.print(f"[yellow]env worker {i} was restarted: episode {self._episode_of[i]} discarded "
                                f"({state.discards.episodes} so far) and played again from its seed[/yellow]")
