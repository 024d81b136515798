"""A tiny DrQ-v2 policy trained on Meta-World reach through the real trainer (shared by the deploy tests)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY_OVERRIDES

# 32x32 pixels, 50-step episodes: 200 frames = 2 episodes, 100 gradient updates after 100 seed frames (~20 s).
REACH_OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith(("env=", "env.max_episode_steps"))] + [
    "env=metaworld/reach", "env.max_episode_steps=100", "frames=200", "seed_frames=100", "eval_every_frames=1000000",
]


def train_reach_policy(run_dir: Path, *overrides: str) -> Path:
    """Train the tiny policy into ``run_dir`` and return it (a run dir is a valid ``checkpoint=``)."""
    from hydra import compose, initialize_config_module

    from robotrl.config import register_hydra
    from robotrl.workflows.train import Trainer

    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*REACH_OVERRIDES, *overrides])
    Trainer(cfg, run_dir).train()
    return run_dir


# Tests share 2 CPU cores with other jobs: a policy step can take > 200 ms there, which the sim config's watchdog
# (rightly) treats as a dead loop. Tests that are not about the watchdog give it 2 s.
SLOW_CPU = {"limits.watchdog_ms": 2000}
