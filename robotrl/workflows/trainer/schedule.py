"""When an evaluation, a checkpoint or the end is due: written once for every loop (one env, vector, Ray, SB3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVAL_SEED_BASE = 1_000_000  # eval episodes use seeds EVAL_SEED_BASE + i, the same set at every evaluation


def episode_seed(run_seed: int, episode: int) -> int:
    """A reset seed for training episode ``episode``: deterministic, and above the eval seeds' range."""
    low = 2 * EVAL_SEED_BASE  # eval seeds are EVAL_SEED_BASE + i, i < EVAL_SEED_BASE
    return low + int(np.random.SeedSequence([run_seed, episode]).generate_state(1)[0]) % (2**31 - 1 - low)


def eval_seeds(episodes: int) -> list[int]:
    """The fixed seeds of every evaluation (and of the baselines compared with the final one)."""
    return [EVAL_SEED_BASE + i for i in range(int(episodes))]


@dataclass(frozen=True)
class Due:
    """What is due between episodes: ``eval``, ``checkpoint``, training ``done``, and a ``preempted`` run (a
    preemption signal, not done yet) that checkpoints and hands over."""

    eval: bool
    checkpoint: bool
    done: bool
    preempted: bool = False

    @property
    def any(self) -> bool:
        """A collector with episodes in flight drains them: something must run with none in progress."""
        return self.eval or self.checkpoint or self.done or self.preempted


@dataclass
class Schedule:
    """Frames at which the next evaluation and checkpoint are due, and the run's length in agent steps."""

    total_steps: int
    eval_every: int
    checkpoint_every: int
    eval_episodes: int
    next_eval_frame: int
    next_ckpt_frame: int

    @classmethod
    def from_config(cls, cfg: object, action_repeat: int) -> Schedule:
        """``frames``, ``eval_every_frames``, ``eval_at_start``, ``eval_episodes``, ``checkpoint_every_frames``."""
        return cls(total_steps=int(cfg.frames) // action_repeat, eval_every=int(cfg.eval_every_frames),
                   checkpoint_every=int(cfg.checkpoint_every_frames), eval_episodes=int(cfg.eval_episodes),
                   next_eval_frame=0 if cfg.eval_at_start else int(cfg.eval_every_frames),
                   next_ckpt_frame=int(cfg.checkpoint_every_frames))

    def eval_due(self, frame: int) -> bool:
        return self.eval_episodes > 0 and frame >= self.next_eval_frame

    def due(self, step: int, frame: int, last_eval_frame: int | None, preempted: bool = False) -> Due:
        """At an episode boundary: the final evaluation is always of the final policy, and the end checkpoints."""
        done = step >= self.total_steps
        final_eval_missing = done and last_eval_frame != frame
        return Due(eval=self.eval_episodes > 0 and (frame >= self.next_eval_frame or final_eval_missing),
                   checkpoint=frame >= self.next_ckpt_frame or done, done=done, preempted=preempted and not done)

    def evaluated(self, frame: int) -> None:
        while self.next_eval_frame <= frame:
            self.next_eval_frame += self.eval_every

    def checkpointed(self, frame: int) -> None:
        while self.next_ckpt_frame <= frame:
            self.next_ckpt_frame += self.checkpoint_every
