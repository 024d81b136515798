"""Training with env.num_envs=2: replay streams hold whole single-env episodes, exact resume, parallel eval."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from robotrl.envs import make_env

from robotrl.errors import ConfigError
from robotrl.workflows.train import Trainer, episode_seed
from robotrl.workflows.vector_train import VectorTrainer

from .conftest import assert_same_tensors

VEC = ["env.num_envs=2", "eval_episodes=2"]


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stored_episodes(replay) -> list[dict[str, np.ndarray]]:
    """The replay's episodes in slot order: frames (T+1), actions and rewards (T)."""
    a, n = replay._arrays, replay._head
    starts = a["episode_start"][:n]
    out = []
    for s in np.unique(starts):
        idx = np.flatnonzero(starts == s)
        out.append({"pixels": a["pixels"][idx], "action": a["action"][idx[:-1]], "reward": a["reward"][idx[:-1]]})
    return out


def test_vector_training_stores_each_env_episode_whole(compose_cfg, tmp_path):
    """Every episode in the replay is exactly the episode one env plays from that episode's seed with the stored
    actions (no step of another env in between), the episodes are the run's first ones, and eval runs 2 in
    parallel."""
    cfg = compose_cfg(*VEC)
    trainer = Trainer(cfg, tmp_path)
    assert isinstance(trainer, VectorTrainer)
    trainer.train()
    episodes = _stored_episodes(trainer.replay)
    assert len(episodes) == 4 and trainer.episode == 4  # 400 frames = 200 steps = 4 episodes of 50
    env = make_env(cfg.env, seed=0)
    matched = set()
    for ep in episodes:
        for k in range(4):
            obs, _ = env.reset(seed=episode_seed(int(cfg.seed), k))
            if not np.array_equal(obs["pixels"][-3:], ep["pixels"][0]):
                continue
            for t, action in enumerate(ep["action"]):
                obs, reward, *_ = env.step(action)
                assert np.array_equal(obs["pixels"][-3:], ep["pixels"][t + 1])
                assert np.float32(reward) == ep["reward"][t]
            matched.add(k)
            break
    assert matched == {0, 1, 2, 3}
    evals = _rows(tmp_path / "eval.csv")
    assert [int(r["frame"]) for r in evals] == [0, 200, 400]
    train = _rows(tmp_path / "train.csv")
    assert [r["discarded_episodes"] for r in train] == ["0.0"] * 4
    assert (tmp_path / "videos").is_dir() and list((tmp_path / "videos").glob("*.mp4"))


@pytest.mark.slow  # ~2 min here: three runs, each spawning its env workers
def test_vector_resume_is_exact(compose_cfg, tmp_path):
    full = Trainer(compose_cfg(*VEC, "frames=400"), tmp_path / "full")
    full.train()
    Trainer(compose_cfg(*VEC, "frames=200"), tmp_path / "split").train()
    resumed = Trainer(compose_cfg(*VEC, "frames=400", "resume=true"), tmp_path / "split")
    assert resumed.step == 100 and resumed.episode == 2
    resumed.train()
    assert_same_tensors(full.agent.state_dict(), resumed.agent.state_dict())


def test_sb3_agents_refuse_num_envs(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match="env.num_envs=2: Stable-Baselines3"):
        Trainer(compose_cfg("agent=sb3_sac", "env.num_envs=2", "env.obs_type=state", tiny=False), tmp_path)
