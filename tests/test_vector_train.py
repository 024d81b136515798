"""Training with env.num_envs=2: replay streams hold whole single-env episodes, exact resume, parallel eval."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from robotrl.envs import make_env

from robotrl.errors import ConfigError
from robotrl.workflows.train import Trainer, episode_seed
from robotrl.workflows.vector_train import VectorCollector

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


@pytest.mark.slow  # ~40 s here: 4 env worker processes; the parts have fast tests (streams, act_batch, vector env)
def test_vector_training_stores_each_env_episode_whole(compose_cfg, tmp_path):
    """Every episode in the replay is exactly the episode one env plays from that episode's seed with the stored
    actions (no step of another env in between), the episodes are the run's first ones, and the final eval runs."""
    cfg = compose_cfg(*VEC, "eval_at_start=false", "env.max_episode_steps=40", "frames=120", "seed_frames=40",
                      "eval_every_frames=80", "checkpoint_every_frames=1000")
    trainer = Trainer(cfg, tmp_path)
    assert isinstance(trainer.collector, VectorCollector)
    trainer.train()
    episodes = _stored_episodes(trainer.replay)
    # 120 frames = 60 steps: 2 episodes of 20 per env, the 2nd pair ends past 60 (training stops at episode ends)
    assert len(episodes) == 4 and trainer.episode == 4 and trainer.step == 80
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
    assert [int(r["frame"]) for r in evals] == [80, 160]  # due at 80: both envs drained there, then the end
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


def test_episode_streams_keep_interleaved_episodes_apart():
    """Two envs' steps arrive interleaved; the replay gets each episode whole at its end, so every n-step
    transition stays inside one env's episode; a discarded stream never reaches the replay."""
    import gymnasium as gym

    from robotrl.episode_streams import EpisodeStreams
    from robotrl.replay import ReplayBuffer

    space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    replay = ReplayBuffer(100, space, action_dim=1, frame_stack=1, nstep=3, discount=1.0, seed=0)
    streams = EpisodeStreams(replay, 3)

    def obs(env, t):
        return {"state": np.array([env, t], np.float32)}

    for env in range(3):
        streams.begin(env, obs(env, 0))
    for t in range(1, 6):  # env 0: 5 steps, env 1: 3 steps (terminates), env 2: discarded after 4
        for env in range(3):
            if env == 1 and t > 3 or env == 2 and t > 4:
                continue
            added = streams.add(env, np.array([env / 10], np.float32), float(10 * env + t), obs(env, t),
                                terminated=env == 1 and t == 3, truncated=env == 0 and t == 5)
            assert added == (env == 1 and t == 3 or env == 0 and t == 5)
    assert streams.discard(2) == 4 and streams.pending == 0
    assert len(replay) == 8  # 3 + 5 transitions; env 2's 4 never stored
    batch = replay.sample(64)
    env_of = batch.obs["state"][:, 0].numpy()
    assert np.array_equal(env_of, batch.next_obs["state"][:, 0].numpy())  # never across streams
    assert set(env_of.tolist()) == {0.0, 1.0}
    t0, t1 = batch.obs["state"][:, 1].numpy(), batch.next_obs["state"][:, 1].numpy()
    m = t1 - t0  # steps bootstrapped over: 3, or fewer at an episode's end
    expected = np.array([sum(10 * e + k for k in range(int(a) + 1, int(b) + 1))
                         for e, a, b in zip(env_of, t0, t1, strict=True)])
    np.testing.assert_allclose(batch.reward.numpy().ravel(), expected)
    assert np.all((m == 3) | (t1 == np.where(env_of == 0, 5, 3)))


def _obs_batch(obs_space, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.integers(0, 255, (n, *s.shape)).astype(np.uint8) if s.dtype == np.uint8
                else rng.standard_normal((n, *s.shape)).astype(np.float32)) for k, s in obs_space.spaces.items()}


def test_drqv2_act_batch_matches_act_in_eval_mode():
    from .test_drqv2 import make, space

    obs_space = space()
    agent = make(obs_space)
    obs = _obs_batch(obs_space, 3)
    batch = agent.act_batch(obs, step=0, eval_mode=True)
    assert batch.shape == (3, 2) and batch.dtype == np.float32
    single = np.stack([agent.act({k: v[i] for k, v in obs.items()}, 0, True) for i in range(3)])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    train = agent.act_batch(obs, step=10**7, eval_mode=False)  # sampled: one draw per env
    assert train.shape == (3, 2) and not np.allclose(train[0], train[1])


def test_tdmpc2_act_batch_keeps_one_warm_start_per_env():
    """act_batch over 2 envs == planning each env in turn with its own previous plan, and reset_env(i) drops only
    env i's plan."""
    from robotrl.agents.tdmpc2 import TDMPC2Agent

    from .test_tdmpc2 import TINY, _spaces

    obs_space, act_space = _spaces("state")
    batched, single = (TDMPC2Agent(obs_space, act_space, "cpu", **TINY) for _ in range(2))
    single.load_state_dict(batched.state_dict())
    obs = [_obs_batch(obs_space, 2, seed) for seed in (1, 2)]
    plans = {0: None, 1: None}
    for o in obs:
        got = batched.act_batch(o, step=0, eval_mode=True)
        for i in range(2):
            single._prev_mean = plans[i]
            want = single.act({k: v[i] for k, v in o.items()}, 0, True)
            plans[i] = single._prev_mean
            np.testing.assert_array_equal(got[i], want)
    assert set(batched._prev_means) == {0, 1}
    batched.reset_env(0)
    assert set(batched._prev_means) == {1}


@pytest.mark.slow  # ~1 min: spawns workers, one of them twice
def test_killed_worker_during_training_discards_counts_and_replays_its_episode(compose_cfg, tmp_path):
    import os
    import signal

    cfg = compose_cfg(*VEC, "frames=200", "eval_episodes=1", "eval_at_start=false")
    trainer = Trainer(cfg, tmp_path)
    act_batch, calls = trainer.agent.act_batch, {"n": 0}

    def killing_act_batch(obs, step, eval_mode):
        calls["n"] += 1
        if calls["n"] == 10 and not eval_mode:
            os.kill(trainer.collector.vector_env.processes[1].pid, signal.SIGKILL)
        return act_batch(obs, step, eval_mode)

    trainer.agent.act_batch = killing_act_batch
    trainer.train()
    assert trainer.discarded_episodes == 1 and trainer.discarded_steps == 9
    assert trainer.collector.vector_env.restarts == 1
    episodes = _stored_episodes(trainer.replay)
    assert all(len(ep["action"]) == 50 for ep in episodes)  # no partial episode reached the replay
    assert trainer.step == 50 * len(episodes)  # frames: only the steps that reached the replay
    env = make_env(cfg.env, seed=0)
    firsts = []
    for k in range(len(episodes)):
        obs, _ = env.reset(seed=episode_seed(int(cfg.seed), k))
        firsts.append(obs["pixels"][-3:])
    assert sorted(next(k for k, f in enumerate(firsts) if np.array_equal(f, ep["pixels"][0])) for ep in episodes) \
        == list(range(len(episodes)))  # episode 1 was played again from its seed: indices 0..E-1, none lost
    assert _rows(tmp_path / "train.csv")[-1]["discarded_episodes"] == "1.0"


class _MeanRed:
    """A reward model: mean red intensity of each frame / 255; remembers the batch size of every call."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, frames, info=None):
        self.batches.append(len(frames))
        return frames[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255.0


def test_a_reward_model_scores_every_env_of_the_vector_collector(tmp_path, monkeypatch):
    """reward=<model> with env.num_envs=2, built as the trainer builds it (``build_vector_envs``) on light envs in
    real worker processes (tests/worker_faults.py, frames of ``10 t``), under the vector collector and the loop of
    real parts: RewardVectorWrapper scores both envs in one batched call per step, the agent gets the model reward
    and train.csv keeps the ground truth (``t``) beside it."""
    import functools

    from omegaconf import OmegaConf
    from robotrl.envs.vector import ResilientVectorEnv

    import robotrl.workflows.vector_train as vector_train
    from robotrl.replay import ReplayBuffer
    from robotrl.workflows.trainer.state import Discards
    from tests.trainer_fakes import FakeAgent, parts_loop
    from tests.worker_faults import FaultyCounter

    def light_vector_env(cfg, seed, num_envs=None):
        return ResilientVectorEnv([functools.partial(FaultyCounter, 10)] * (num_envs or 2), timeout_s=300.0)

    monkeypatch.setattr(vector_train, "make_vector_env", light_vector_env)
    model = _MeanRed()
    cfg = OmegaConf.create({"env": {"num_envs": 2}, "seed": 1, "eval_episodes": 1,
                            "reward": {"name": "mean_red", "render_size": 4}})
    envs = vector_train.build_vector_envs(cfg, model)
    try:
        assert type(envs["env"]).__name__ == "RewardVectorWrapper" and envs["env"].env is envs["vector_env"]
        assert envs["eval_env"].num_envs == 1 and envs["env_info"] == {"suite": "fake", "num_envs": 2}
        replay = ReplayBuffer(1000, FaultyCounter.observation_space, action_dim=1, frame_stack=1, nstep=1)
        loop = parts_loop(tmp_path, envs["env"], VectorCollector(envs["vector_env"], seed_steps=10), FakeAgent(),
                          replay, frames=40, checkpoint_every=1000, discards=Discards())
        loop.train()
    finally:
        envs["vector_env"].close(terminate=True)
        envs["eval_env"].close(terminate=True)
    assert model.batches == [2] * 10  # one call per vector step, both envs' frames in it
    rows = _rows(tmp_path / "train.csv")
    assert len(rows) == 2
    for row in rows:
        assert float(row["episode_return"]) == pytest.approx(float(row["model_reward"]), rel=1e-4)
        assert float(row["model_reward"]) == pytest.approx(sum(10 * t / 255 for t in range(1, 11)), rel=1e-4)
        assert float(row["gt_reward"]) == sum(range(1, 11)) and float(row["reward_invalid"]) == 0


@pytest.mark.slow  # ~15 s; the same with clip_tiny on dm-control workers (the test above holds it by default)
def test_vector_training_with_a_reward_model_scores_every_env(compose_cfg, tmp_path):
    """reward=<model> with env.num_envs=2: RewardVectorWrapper scores both envs in one batched call per step; the
    agent gets the model reward, train.csv keeps the ground truth beside it."""
    cfg = compose_cfg(*VEC, "reward=clip_tiny", "eval_at_start=false", "env.max_episode_steps=40", "frames=80",
                      "seed_frames=40", "eval_episodes=1", "save_video=false", "tensorboard=false")
    trainer = Trainer(cfg, tmp_path)
    assert type(trainer.env).__name__ == "RewardVectorWrapper"
    trainer.train()
    rows = _rows(tmp_path / "train.csv")
    assert len(rows) == 2
    for row in rows:
        assert float(row["episode_return"]) == pytest.approx(float(row["model_reward"]), rel=1e-4)
        assert float(row["gt_reward"]) != float(row["model_reward"]) and float(row["reward_invalid"]) == 0
