"""``robotrl train``'s trainer: :func:`~robotrl.workflows.trainer.factory.make_trainer` builds it from parts
(:mod:`robotrl.workflows.trainer`). ``Trainer(cfg, run_dir)`` is the name call sites have always used for it.

Checkpoints are only taken between episodes and every episode starts from ``env.reset(seed=...)`` with a seed
derived from (run seed, episode index), so a resumed run replays exactly what the uninterrupted run would have
done: same episodes, same replay samples, same gradient steps.
"""

from __future__ import annotations

from robotrl.workflows.trainer.console import GracefulInterrupt, make_progress
from robotrl.workflows.trainer.factory import make_trainer, trainer_kind
from robotrl.workflows.trainer.hooks import rank_config, update_at
from robotrl.workflows.trainer.schedule import EVAL_SEED_BASE, episode_seed
from robotrl.workflows.trainer.stats import EpisodeStats

Trainer = make_trainer  # Trainer(cfg, run_dir, console=None) -> the trainer cfg asks for; .train() runs it

__all__ = ["EVAL_SEED_BASE", "EpisodeStats", "GracefulInterrupt", "Trainer", "episode_seed", "make_progress",
           "make_trainer", "rank_config", "trainer_kind", "update_at"]
