"""The services every training loop shares (one env, vector, Ray and SB3's own): episode rows, evaluation,
the between-episodes schedule, checkpoints and the final summary. Built by :func:`~.factory.make_trainer`."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console

from robotrl import preemption
from robotrl.atomic import atomic_write_text
from robotrl.heartbeat import Heartbeat
from robotrl.logger import Logger
from robotrl.rewards import is_env_reward
from robotrl.types import capabilities_of
from robotrl.workflows.rollout import summarize
from robotrl.workflows.trainer.console import ProgressBar
from robotrl.workflows.trainer.evaluation import compare_with_baselines, eval_row, plot
from robotrl.workflows.trainer.hooks import DistHooks, RobotHooks
from robotrl.workflows.trainer.schedule import eval_seeds
from robotrl.workflows.trainer.state import RunState, restore_run, save_run
from robotrl.workflows.trainer.stats import EpisodeStats, train_row

log = logging.getLogger(__name__)
# (seeds, video path or None, agent step, heartbeat) -> one result per seed (robotrl.workflows.rollout's dicts)
EvalPlayer = Callable[[list[int], Path | None, int, Heartbeat], list[dict[str, Any]]]


@dataclass
class Run:
    """One run's parts and the work between episodes. Building it has no side effects; the factory's steps
    (seeding, clearing stale outputs, run.json) are explicit."""

    cfg: DictConfig
    run_dir: Path
    console: Console
    device: torch.device
    dist: DistHooks
    env: Any
    eval_env: Any
    env_info: dict[str, Any]
    reward_model: Any
    agent: Any
    replay: Any
    state: RunState
    play_eval: EvalPlayer
    robot: RobotHooks | None = None
    logger: Logger | None = None
    progress: ProgressBar | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)  # collectors' clean-up, run at finish
    closed: bool = False

    @property
    def frame(self) -> int:
        return self.state.frame

    # ---------------------------------------------------------------- episodes
    def add_demos(self, episodes: list[Any]) -> None:
        """Operator segments as demos, for agents that keep demos (MoDem); others learn from them in the replay."""
        if episodes and capabilities_of(self.agent).learns_from_demos:
            self.agent.add_demos(episodes)

    def start_progress(self) -> ProgressBar:
        total = self.state.schedule.total_steps
        self.console.print(f"training {self.cfg.env.name} for {self.cfg.frames} frames ({total} agent steps)")
        self.progress = ProgressBar(self.console, total, self.state.step, self.frame)
        return self.progress

    def episode_finished(self, stats: EpisodeStats) -> None:
        """Count and log one finished training episode (its steps are in ``state.step`` already)."""
        self.state.episode += 1
        self.log_train_episode(stats)
        self.progress.episode(self.state.step, stats.ret)

    def log_train_episode(self, stats: EpisodeStats) -> None:
        state, fps = self.state, self.progress.fps(self.frame)
        if not self.console.is_terminal:  # logs and pipes get one plain line per episode instead of a live bar
            left = max(int(self.cfg.frames) - self.frame, 0)
            self.console.print(f"frame {self.frame}/{self.cfg.frames} | episode {state.episode} | return "
                               f"{stats.ret:.1f} | {fps:.0f} fps | ETA {left / max(fps, 1e-9) / 60:.1f} min")
        base = {"step": state.step, "episode": state.episode, "episode_return": stats.ret,
                "episode_length": stats.length, "fps": fps, "elapsed": state.elapsed()}
        where = (f"episode {state.episode} (frame {self.frame}); the last checkpoint in "
                 f"{self.run_dir / 'checkpoints'} is intact")
        discards = state.discards.columns() if state.discards is not None else None
        self.logger.log("train", self.frame, train_row(stats, base, discards, self.robot is not None, where))

    def between_episodes(self) -> bool:
        """No episode in progress: evaluate and checkpoint when due, hand over on preemption; True when done."""
        due = self.state.schedule.due(self.state.step, self.frame, self._last_eval_frame(), preemption.requested())
        if due.eval:
            self.evaluate()  # always at the end too: the final eval is of the final policy, not an earlier one
        if due.checkpoint:
            self.state.schedule.checkpointed(self.frame)
            self.save()
        if due.preempted:
            self.hand_off()
        return due.done

    def drain_due(self) -> bool:
        """Collectors with episodes in flight finish them (and start none) when this is true."""
        return self.state.schedule.due(self.state.step, self.frame, self._last_eval_frame(),
                                       preemption.requested()).any

    def _last_eval_frame(self) -> int | None:
        return None if self.state.last_eval is None else self.state.last_eval["frame"]

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, Any]:
        """Run ``cfg.eval_episodes`` deterministic-policy episodes on fixed seeds; log, record a video, plot."""
        cfg, state = self.cfg, self.state
        seeds = eval_seeds(int(cfg.eval_episodes))
        video = self.run_dir / "videos" / f"eval_{self.frame:012d}.mp4" if cfg.save_video else None
        beat = Heartbeat(f"eval @ {self.frame} frames", write=self.console.print)  # 10 episodes can take minutes
        before = self.robot.intervention_total() if self.robot is not None else 0
        with self.policy_only():
            summary = summarize(self.play_eval(seeds, video, state.step, beat))
        if self.robot is not None:
            summary["interventions_per_episode"] = (self.robot.intervention_total() - before) / max(len(seeds), 1)
        self.logger.log("eval", self.frame, eval_row(summary, state, self.env_info))
        state.evaluated(summary)
        success = "" if summary["success_rate"] is None else f", success {summary['success_rate']:.0%}"
        gt = "" if is_env_reward(cfg.reward) else "ground-truth "  # eval env has the env's own reward
        self.console.print(f"eval @ {self.frame} frames: {gt}return {summary['return_mean']:.1f} "
                           f"± {summary['return_std']:.1f}{success}")
        plot(self.run_dir)
        return summary

    @contextlib.contextmanager
    def policy_only(self) -> Iterator[None]:
        with self.robot.policy_only() if self.robot is not None else contextlib.nullcontext():
            yield

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        if not self.dist.ctx.is_main:
            return None  # rank 0's checkpoint holds the (identical) model; a resume starts every rank from it
        path = save_run(self.run_dir, self.cfg, self.state, self.agent, self.reward_model, self.replay,
                        self.env_info)
        self.console.print(f"[dim]checkpoint {path}[/dim]")
        return path

    def restore(self, path: Path, load_replay: Callable[[Path], None]) -> None:
        restore_run(path, self.cfg, self.state, self.agent, self.reward_model, load_replay)
        if self.robot is not None:  # the operator segments the agent had as demos at this checkpoint
            self.add_demos(self.robot.resumed(self.state.episode))
        self.console.print(f"resumed from {path} at frame {self.frame}")

    def hand_off(self) -> None:
        """A preemption/time-limit signal arrived: checkpoint here, between episodes (an exact-resume point), and
        hand over to the launcher, which requeues the job with ``resume=auto`` (submitit exits this process)."""
        if not (self.run_dir / "checkpoints" / f"frame_{self.frame:012d}").is_dir():
            self.save()
        self.console.print(f"preemption signal: checkpoint at frame {self.frame} written; the launcher requeues this "
                           f"job and it resumes from there", highlight=False)
        preemption.hand_off()

    # ---------------------------------------------------------------- end
    def finish(self) -> dict[str, Any]:
        """Compare the final evaluation with trivial policies on the same eval seeds; write summary.json."""
        cfg, state = self.cfg, self.state
        self.logger.close()
        summary: dict[str, Any] = {"env": cfg.env.name, "agent": cfg.agent.name, "seed": int(cfg.seed),
                                   "frames": self.frame, "elapsed_s": state.elapsed(), "final_eval": state.last_eval,
                                   "first_eval": state.first_eval,
                                   **{k: v for k, v in self.env_info.items() if k.endswith("version")}}
        if cfg.compare_baselines and cfg.eval_episodes > 0:
            summary.update(compare_with_baselines(self))
        if state.discards is not None:  # beside frames: steps discarded by restarted workers/actors
            summary.update(state.discards.counters())
        summary.update(self.dist.summary())
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))
        self.close()
        return summary

    def close(self) -> None:
        """Close the envs, the collectors' workers and the process group (once)."""
        if self.closed:
            return
        self.closed = True
        for env in own_envs(self.env, self.eval_env):
            env.close()
        for close in self.closers:
            close()
        self.dist.close()


def own_envs(env: Any, eval_env: Any) -> list[Any]:
    """The envs to close: the training env, and the eval env unless it is the one under the training env's
    wrappers (an arm's single RobotEnv)."""
    return [env] if eval_env is getattr(env, "unwrapped", env) else [env, eval_env]


@contextlib.contextmanager
def closed_on_error(*parts: Any) -> Iterator[None]:
    """Any exception that leaves the block (Ctrl-C, an error, a preemption hand-off) first closes ``parts`` (envs, or
    a whole :class:`Run`). On an arm that is the safety layer's hold and disconnect, not an arm left moving on its
    last command (or connected, while a later part failed to build) with only the watchdog to race the exit."""
    try:
        yield
    except BaseException:
        for part in parts:
            part.close()
        raise
