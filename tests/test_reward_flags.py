"""A failed reward-model call is not data (issue 25, item 1): its flag is stored with the transition, saved and
restored, and its made-up reward enters no learning target (n-step sums, world-model rewards, SB3's buffers)."""

from __future__ import annotations

import copy
import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

from robotrl.replay import ReplayBuffer
from robotrl.types import Trajectories

SENTINEL = 1000.0  # the made-up reward of a flagged step: visible wherever it would leak into a target
GAMMA, NSTEP = 0.9, 3


def _space() -> gym.spaces.Dict:
    return gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)})


def _filled_buffer(flag_every: int = 3, episodes: int = 4, length: int = 20) -> ReplayBuffer:
    """State = the step's absolute index t; reward 1 + t/100, or SENTINEL (flagged) on every ``flag_every``-th."""
    buf = ReplayBuffer(500, _space(), 1, 1, nstep=NSTEP, discount=GAMMA, seed=0)
    t = 0
    for _ in range(episodes):
        buf.add_first({"state": np.array([t], np.float32)})
        for i in range(length):
            flagged = t % flag_every == flag_every - 1
            reward = SENTINEL if flagged else 1.0 + t / 100
            t += 1
            buf.add(np.zeros(1, np.float32), reward, {"state": np.array([t], np.float32)}, terminated=False,
                    truncated=i == length - 1, reward_invalid=flagged)
        t += 1  # the next episode's first slot
    return buf


def _expected(buf: ReplayBuffer, start: int) -> tuple[float, float, int]:
    """(n-step return, discount, m) by brute force: the horizon stops before the first flagged reward."""
    a, ret, m = buf._arrays, 0.0, 0
    ep = a["episode_start"][start]
    for i in range(NSTEP):
        s = start + i
        if not a["has_action"][s] or a["episode_start"][s] != ep or a["reward_invalid"][s]:
            break
        ret += GAMMA**i * float(a["reward"][s])
        m += 1
    return ret, GAMMA**m, m


def test_nstep_returns_never_sum_a_flagged_reward_and_stop_before_it():
    buf = _filled_buffer()
    assert buf.num_invalid_rewards == sum(1 for t in range(84) if t % 3 == 2 and t % 21 != 20)  # per stored step
    seen_m = set()
    for _ in range(50):
        batch = buf.sample(32)
        assert float(batch.reward.max()) < SENTINEL
        for t, ret, disc, nxt in zip(batch.obs["state"][:, 0].tolist(), batch.reward[:, 0].tolist(),
                                     batch.discount[:, 0].tolist(), batch.next_obs["state"][:, 0].tolist(),
                                     strict=True):
            want_ret, want_disc, m = _expected(buf, int(t))
            assert m >= 1, f"a transition starts at the flagged step {t}"
            assert ret == pytest.approx(want_ret, rel=1e-6) and disc == pytest.approx(want_disc, rel=1e-6)
            assert nxt == t + m
            seen_m.add(m)
    assert seen_m == {1, 2}  # every third reward flagged: n-step sums of 1 or 2 valid rewards, never 3


def test_trajectories_mask_flagged_rewards_and_flags_survive_save_and_load(tmp_path):
    buf = _filled_buffer()
    traj = buf.sample_trajectories(64, horizon=4)
    assert traj.reward_valid is not None and traj.reward_valid.shape == traj.reward.shape
    np.testing.assert_array_equal(traj.reward_valid.numpy() == 0.0, traj.reward.numpy() == SENTINEL)
    buf.save(tmp_path / "replay")
    loaded = ReplayBuffer.load(tmp_path / "replay")
    assert loaded.num_invalid_rewards == buf.num_invalid_rewards and len(loaded) == len(buf)
    n = buf._head
    np.testing.assert_array_equal(loaded._arrays["reward_invalid"][:n], buf._arrays["reward_invalid"][:n])
    a, b = loaded.sample(16), buf.sample(16)  # the same RNG state: the same samples
    assert torch.equal(a.reward, b.reward) and torch.equal(a.obs["state"], b.obs["state"])


def test_the_flag_count_follows_the_window_when_the_buffer_wraps():
    buf = ReplayBuffer(30, _space(), 1, 1, nstep=NSTEP, discount=GAMMA, seed=0)
    rng = np.random.default_rng(3)
    for t in range(200):
        if t % 7 == 0:
            buf.add_first({"state": np.zeros(1, np.float32)})
        buf.add(np.zeros(1, np.float32), 1.0, {"state": np.zeros(1, np.float32)}, False, t % 7 == 6,
                reward_invalid=bool(rng.random() < 0.3))
        a = buf._arrays
        assert buf.num_invalid_rewards == int((a["has_action"] & a["reward_invalid"])[:min(buf._head, 30)].sum())
    assert 0 < buf.num_invalid_rewards < buf._num_actions


def test_unflagged_runs_sample_what_they_sampled_before():
    """No flags: every transition's horizon is the full n-step one and trajectories carry no mask."""
    buf = _filled_buffer(flag_every=10**9)
    assert buf.num_invalid_rewards == 0 and buf.sample_trajectories(8, 3).reward_valid is None
    assert float(buf.sample(64).discount.min()) == pytest.approx(GAMMA**NSTEP)


def test_episode_streams_and_ray_episodes_keep_the_flag():
    from robotrl.episode_streams import EpisodeStreams
    from robotrl.workflows.ray_collector import EpisodeAssembler

    buf = ReplayBuffer(100, _space(), 1, 1, nstep=NSTEP, discount=GAMMA)
    streams = EpisodeStreams(buf, 2)
    streams.begin(0, {"state": np.zeros(1, np.float32)})
    for i in range(4):
        streams.add(0, np.zeros(1, np.float32), 1.0, {"state": np.full(1, i + 1, np.float32)}, False, i == 3,
                    reward_invalid=i == 1)
    assert buf.num_invalid_rewards == 1 and buf._arrays["reward_invalid"][:4].tolist() == [False, True, False,
                                                                                            False]
    asm = EpisodeAssembler()
    asm.start(0, 0, 7)
    chunk = {"actor": 0, "incarnation": 0, "episode": 7, "seq": 0, "obs": [{"state": np.zeros(1, np.float32)}] * 3,
             "action": [np.zeros(1, np.float32)] * 2, "reward": [0.0, 0.5], "terminated": [False, False],
             "truncated": [False, True], "success": [False, False],
             "infos": [{"reward_invalid": 1.0}, {"reward_invalid": 0.0}]}
    _, episode, _ = asm.add(chunk)
    assert episode.reward_invalid.tolist() == [True, False]
    buf.add_episode(episode)
    assert buf.num_invalid_rewards == 2


# ------------------------------------------------------------------------------------------ world models
def test_tdmpc2_learns_no_reward_or_value_target_from_a_flagged_step():
    """Two batches that differ only in the made-up rewards give bit-identical updates when they are masked (and
    different ones when they are not: the test can see a leak)."""
    from robotrl.agents.tdmpc2 import TDMPC2Agent

    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    agent = TDMPC2Agent(obs_space, act_space, "cpu", model_size=1, latent_dim=16, mlp_dim=32, enc_dim=32,
                        batch_size=8, num_samples=32, num_elites=4, num_pi_trajs=4, iterations=2, seed=0)
    g = torch.Generator().manual_seed(0)
    h, b = 3, 8
    obs = {"state": torch.randn(h + 1, b, 5, generator=g)}
    action, reward = torch.rand(h, b, 2, generator=g) * 2 - 1, torch.rand(h, b, 1, generator=g)
    valid = (torch.rand(h, b, 1, generator=g) > 0.3).float()
    made_up = torch.where(valid > 0, reward, torch.full_like(reward, SENTINEL))

    def params_after(traj: Trajectories) -> list[torch.Tensor]:
        torch.manual_seed(1)  # Q's dropout draws from the global RNG: the same draws in every update here
        learner = copy.deepcopy(agent)
        learner.update_from(traj)
        return [p.detach().clone() for p in learner.model.parameters()]

    masked_a = params_after(Trajectories(obs, action, reward, torch.zeros(h, b, 1), valid))
    masked_b = params_after(Trajectories(obs, action, made_up, torch.zeros(h, b, 1), valid))
    assert all(torch.equal(x, y) for x, y in zip(masked_a, masked_b, strict=True))
    unmasked = params_after(Trajectories(obs, action, made_up, torch.zeros(h, b, 1)))
    assert not all(torch.equal(x, y) for x, y in zip(masked_a, unmasked, strict=True))


def test_mixed_replay_masks_the_whole_batch_when_one_part_has_flags():
    from robotrl.mixed_replay import MixedReplay

    demos = _filled_buffer(flag_every=10**9)
    mixed = MixedReplay(_filled_buffer(), demos, ratio=0.5)
    traj = mixed.sample_trajectories(16, 4)
    assert traj.reward_valid.shape == traj.reward.shape
    assert bool((traj.reward_valid[:, :8] == 1).all())  # demos: all valid
    np.testing.assert_array_equal(traj.reward_valid.numpy() == 0.0, traj.reward.numpy() == SENTINEL)


# ------------------------------------------------------------------------------------------ the trainers
class FailsEveryThirdCall:
    """Reward 0.25, except every third call raises (never two failures in a row)."""

    def __init__(self, **_: object) -> None:
        self.calls = 0

    def __call__(self, frames, info=None):
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("injected failure")
        return np.full(len(frames), 0.25, np.float32)


def _train_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_collector_stores_the_flag_counts_it_and_never_learns_the_made_up_reward(compose_cfg, monkeypatch):
    """The trainer's one-env collector over a reward model failing every third call: each flagged step is stored
    with its flag and counted in its episode's stats, and no batch an update samples carries the made-up reward."""
    import robotrl.rewards.base as reward_base

    from tests.test_reward_faults import Actor, collect_episodes, trainer_env

    monkeypatch.setattr(reward_base, "INVALID_MODEL_REWARD", SENTINEL)  # a made-up reward that shows if learned
    env = trainer_env(compose_cfg, "reward=clip_tiny", "reward.timeout_s=null",
                      f"reward._target_={__name__}.FailsEveryThirdCall")
    replay = ReplayBuffer(500, env.observation_space, 1, 3, nstep=3, discount=0.99, seed=0)  # DrQ-v2's n-step
    learned = []

    def learn(replay):  # every batch the agent would learn from
        learned.append(float(replay.sample(64).reward.max()))
        return {}

    episodes = collect_episodes(env, Actor(1, learn), replay, episodes=2, seed_steps=20)
    steps = sum(s.length for s in episodes)
    flagged = sum(s.rewards["reward_invalid"] for s in episodes)
    assert steps == 40 and flagged == 13  # one call per step, every third one failed
    assert replay.num_invalid_rewards == 13
    stored = {k: v[:replay._head] for k, v in replay._arrays.items()}  # the written slots
    assert (stored["reward"][stored["reward_invalid"]] == SENTINEL).all()  # stored as it was, with its flag
    # a good step's reward is 0.25 (an n-step sum of 3 is < 1); a leaked made-up one, even discounted, is ~1000
    assert len(learned) == 20 and max(learned) < 1.0


@pytest.mark.slow  # a trainer run (~10 s); the collector test above holds what it asserts
def test_trainer_stores_the_flag_counts_it_and_never_learns_the_made_up_reward(compose_cfg, tmp_path,
                                                                                 monkeypatch):
    import robotrl.rewards.base as reward_base

    from robotrl.workflows.train import Trainer

    monkeypatch.setattr(reward_base, "INVALID_MODEL_REWARD", SENTINEL)  # a made-up reward that shows if learned
    cfg = compose_cfg("reward=clip_tiny", "frames=200", "seed_frames=100", "save_video=false", "tensorboard=false",
                      "eval_episodes=0", "reward.timeout_s=null", f"reward._target_={__name__}.FailsEveryThirdCall")
    trainer = Trainer(cfg, tmp_path)
    learned = []
    update = trainer.agent.update

    def spying_update(replay, step):  # every batch the agent learned from
        batch = replay.sample(64)
        learned.append(float(batch.reward.max()))
        return update(replay, step)

    trainer.agent.update = spying_update
    trainer.train()
    rows = _train_rows(tmp_path / "train.csv")
    steps = sum(int(r["episode_length"]) for r in rows)
    flagged = sum(float(r["reward_invalid"]) for r in rows)
    assert steps == 100 and flagged == 33  # one call per step, every third one failed
    assert trainer.replay.num_invalid_rewards == 33
    stored = {k: v[:trainer.replay._head] for k, v in trainer.replay._arrays.items()}  # the written slots
    assert (stored["reward"][stored["reward_invalid"]] == SENTINEL).all()  # stored as it was, with its flag
    assert learned and max(learned) < SENTINEL


def test_sb3_loop_keeps_flagged_steps_out_of_sacs_replay(compose_cfg, monkeypatch):
    """SB3's loop as the trainer runs it (the episode callback): flagged steps are counted and never reach SAC's
    replay buffer."""
    import robotrl.rewards.base as reward_base
    from robotrl.rewards import make_reward

    from tests.test_sb3 import sb3_episodes

    monkeypatch.setattr(reward_base, "INVALID_MODEL_REWARD", SENTINEL)
    cfg = compose_cfg("env=dmc/cartpole_balance", "env.obs_type=state", "env.max_episode_steps=40",
                      "frames=80", "seed_frames=1000", "replay.capacity=2000", "device=cpu", "agent=sb3_sac",
                      "agent.batch_size=32", "agent.policy_kwargs.net_arch=[16,16]", "reward=clip_tiny",
                      "reward.timeout_s=null", f"reward._target_={__name__}.FailsEveryThirdCall", tiny=False)
    parts, episodes, _ = sb3_episodes(cfg, 2, make_reward(cfg.reward))
    buffer = parts.agent.model.replay_buffer
    flagged = sum(s.rewards["reward_invalid"] for s in episodes)
    assert sum(s.length for s in episodes) == 40 and flagged == 13 and buffer.pos == 40 - 13
    assert float(buffer.rewards[:buffer.pos].max()) < SENTINEL


@pytest.mark.slow  # a trainer run (~10 s); test_sb3_loop_keeps_flagged_steps_out_of_sacs_replay holds it
def test_sac_replay_skips_flagged_steps(compose_cfg, tmp_path, monkeypatch):
    import robotrl.rewards.base as reward_base

    from robotrl.workflows.train import Trainer

    monkeypatch.setattr(reward_base, "INVALID_MODEL_REWARD", SENTINEL)
    cfg = compose_cfg("env=dmc/cartpole_balance", "env.obs_type=state", "env.max_episode_steps=100",
                      "frames=200", "seed_frames=100", "eval_episodes=0", "replay.capacity=2000", "torch_threads=1",
                      "device=cpu", "compare_baselines=false", "save_video=false", "tensorboard=false",
                      "agent=sb3_sac", "agent.batch_size=32", "agent.policy_kwargs.net_arch=[16,16]",
                      "reward=clip_tiny", "reward.timeout_s=null", f"reward._target_={__name__}.FailsEveryThirdCall",
                      tiny=False)
    trainer = Trainer(cfg, tmp_path)
    trainer.train()
    buffer = trainer.agent.model.replay_buffer
    flagged = sum(float(r["reward_invalid"]) for r in _train_rows(tmp_path / "train.csv"))
    assert flagged == 33 and buffer.pos == trainer.step - 33
    assert float(buffer.rewards[:buffer.pos].max()) < SENTINEL


def test_ppo_rollout_gives_a_flagged_reward_no_advantage():
    """GAE over a rollout whose flagged reward is 0 or SENTINEL: the same advantages and returns (the critic's
    estimate stands in for it), and different ones without the flag."""
    from agents.sb3_buffers import FlaggedDictRolloutBuffer

    space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (2,), np.float32)})
    act = gym.spaces.Box(-1, 1, (1,), np.float32)
    rng = np.random.default_rng(0)
    values, rewards = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)

    def advantages(flagged_reward: float, flag: bool) -> np.ndarray:
        buf = FlaggedDictRolloutBuffer(8, space, act, gamma=0.9, gae_lambda=0.95)
        for t in range(8):
            if flag and t == 4:
                buf.flag_next()
            buf.add({"state": np.zeros((1, 2), np.float32)}, np.zeros((1, 1), np.float32),
                    np.array([flagged_reward if t == 4 else rewards[t]]), np.array([t == 0]),
                    torch.tensor([values[t]]), torch.zeros(1))
        buf.compute_returns_and_advantage(torch.tensor([0.5]), np.array([False]))
        return buf.advantages.copy()

    np.testing.assert_array_equal(advantages(0.0, True), advantages(SENTINEL, True))
    assert not np.allclose(advantages(0.0, False), advantages(SENTINEL, False))


def test_a_replay_saved_before_flags_existed_loads_with_none(tmp_path):
    buf = _filled_buffer(flag_every=10**9)
    buf.save(tmp_path / "replay.npz")
    with np.load(tmp_path / "replay.npz") as data:  # the a489bdc layout: no reward_invalid array
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if k != "arrays/reward_invalid"})
    old = ReplayBuffer.load(tmp_path / "old.npz")
    assert old.num_invalid_rewards == 0 and len(old) == len(buf)
    assert not old._arrays["reward_invalid"][:old._head].any()
