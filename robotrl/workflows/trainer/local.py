"""The collector of one env in this process: act, update, step, store, one episode after the other."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from robotrl.episodes import record_episode
from robotrl.workflows.trainer.console import GracefulInterrupt
from robotrl.workflows.trainer.run import Run
from robotrl.workflows.trainer.schedule import episode_seed
from robotrl.workflows.trainer.stats import EpisodeStats


class LocalCollector:
    """Every episode from ``env.reset(seed=episode_seed(seed, episode))``; one ``agent.update`` per agent step
    from ``seed_frames`` on, before the step (``update_at=step``) or, on an arm, after the episode while the arm
    holds (``update_at=episode_end``)."""

    def __init__(self, seed_steps: int, update_at: str) -> None:
        self.seed_steps, self.update_at = seed_steps, update_at

    def start(self, run: Run) -> None:
        """Nothing to start: the env is the run's."""

    def collect(self, run: Run, interrupt: GracefulInterrupt) -> Iterator[EpisodeStats]:
        while True:
            yield self.play(run, interrupt)
            if run.drain_due():
                return

    def play(self, run: Run, interrupt: GracefulInterrupt) -> EpisodeStats:
        """One training episode into the replay; its stats (update metrics included)."""
        agent, replay, state, robot = run.agent, run.replay, run.state, run.robot
        stats = EpisodeStats()

        def on_reset(obs: dict[str, np.ndarray]) -> None:
            agent.reset()
            replay.add_first(obs)
            if robot is not None:
                robot.begin(obs)

        def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            interrupt.check()
            action = agent.act(obs, state.step, eval_mode=False)
            if state.step >= self.seed_steps:
                if self.update_at == "step":
                    with interrupt.anytime():
                        stats.updates.append(agent.update(replay, state.step))
                else:  # on an arm: the same updates, after the episode, while the arm holds
                    stats.steps.append(state.step)
            return action

        def on_step(action: np.ndarray, reward: float, obs: dict[str, np.ndarray], terminated: bool,
                    truncated: bool, info: dict[str, Any]) -> None:
            if info.get("stale_observation"):  # on an arm, a camera gave no valid frame: ``obs`` is made up
                replay.end_episode()  # so the step is not stored; the episode ends at its last real observation
            else:  # ``action``: what the arm executed when a person took over
                replay.add(action, reward, obs, terminated, truncated,
                           reward_invalid=bool(info.get("reward_invalid", False)))  # kept out of targets
                if robot is not None:
                    robot.step(action, reward, obs, terminated, info)
            state.step += 1
            stats.add_step(reward, info)
            if not (terminated or truncated) and state.step % 100 == 0:
                run.progress.steps(state.step)

        record_episode(run.env, policy, episode_seed(int(run.cfg.seed), state.episode), on_reset=on_reset,
                       on_step=on_step)
        if robot is not None:  # before the episode's updates (episode_end): they may use them
            run.add_demos(robot.finish(state.episode))
        for step in stats.steps:  # update_at=episode_end: one update per agent step of the episode, in order
            with interrupt.anytime():
                stats.updates.append(agent.update(replay, step))
        return stats
