"""The training loop: a collector plays episodes until something is due, the run logs each finished one; between
segments (no episode in progress) the run evaluates and checkpoints, so ``resume=true`` is exact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig
from rich.console import Console

from robotrl import preemption
from robotrl.workflows.trainer.console import GracefulInterrupt
from robotrl.workflows.trainer.run import Run, closed_on_error
from robotrl.workflows.trainer.stats import EpisodeStats


class Collector(Protocol):
    """Plays training episodes: one env here (:class:`~.local.LocalCollector`), ``env.num_envs`` worker processes
    (``robotrl.workflows.vector_train``) or Ray actors (``robotrl.workflows.ray_collector``)."""

    def start(self, run: Run) -> None:
        """Once, after a resume and before the first evaluation (start workers, bind to the restored replay)."""

    def collect(self, run: Run, interrupt: GracefulInterrupt) -> Iterator[EpisodeStats]:
        """One segment: play episodes (updating the agent as they go) and yield each finished one's stats, its
        steps already counted in ``run.state.step``; once ``run.drain_due()``, finish the episodes in flight and
        start none, so the segment ends with no episode in progress."""
        ...


class RunView:
    """The parts a caller of a trainer reads (``trainer.agent``, ``trainer.step``, ...): the run's."""

    run: Run

    @property
    def cfg(self) -> DictConfig:
        return self.run.cfg

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def console(self) -> Console:
        return self.run.console

    @property
    def agent(self) -> Any:
        return self.run.agent

    @property
    def replay(self) -> Any:
        return self.run.replay

    @property
    def env(self) -> Any:
        return self.run.env

    @property
    def reward_model(self) -> Any:
        return self.run.reward_model

    @property
    def step(self) -> int:
        return self.run.state.step

    @property
    def episode(self) -> int:
        return self.run.state.episode

    @property
    def frame(self) -> int:
        return self.run.frame

    @property
    def discarded_episodes(self) -> int:
        return self.run.state.discards.episodes if self.run.state.discards is not None else 0

    @property
    def discarded_steps(self) -> int:
        return self.run.state.discards.steps if self.run.state.discards is not None else 0

    def evaluate(self) -> dict[str, Any]:
        return self.run.evaluate()

    def save(self) -> Path | None:
        return self.run.save()


class TrainLoop(RunView):
    """A run and its collector: ``train()`` runs (or continues) training to ``cfg.frames``."""

    def __init__(self, run: Run, collector: Collector) -> None:
        self.run, self.collector = run, collector

    def train(self) -> dict[str, Any]:
        """Train until ``cfg.frames`` (finishing the current episode); return the final summary. A preemption signal
        meanwhile (:mod:`robotrl.preemption`) checkpoints at the next episode end and hands over to the launcher."""
        with preemption.cooperative():
            return self._train()

    def _train(self) -> dict[str, Any]:
        run, state = self.run, self.run.state
        state.started = time.perf_counter()
        with closed_on_error(run):
            self.collector.start(run)
            if state.schedule.eval_due(run.frame):
                run.evaluate()
            done = state.step >= state.schedule.total_steps
            with run.start_progress(), GracefulInterrupt() as interrupt:
                while not done:
                    for stats in self.collector.collect(run, interrupt):
                        run.episode_finished(stats)
                    done = run.between_episodes()
            return run.finish()
