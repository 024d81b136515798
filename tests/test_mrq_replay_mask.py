"""bench/mrq_replay_mask.py (the share of value-batch sampling on the starts facebookresearch/MRQ's buffer masks) and
bench/mrq_hybrid_run.py's glue (the reference's buffer served in robotrl's replay layout)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from robotrl.replay import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]
SPACE = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)})


@pytest.fixture
def mask_mod(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import mrq_replay_mask
    return mrq_replay_mask


def _replay(lengths: tuple[int, ...]) -> ReplayBuffer:
    replay = ReplayBuffer(100, SPACE, 2, 1, nstep=3)
    for length in lengths:
        replay.add_first({"state": np.zeros(3, np.float32)})
        for t in range(length):
            replay.add(np.zeros(2, np.float32), 1.0, {"state": np.full(3, t + 1, np.float32)}, terminated=False,
                       truncated=t == length - 1)
    return replay


def test_uniform_shares_count_the_last_five_and_the_last_two_steps_of_each_episode(mask_mod):
    shares = mask_mod.mask_shares(_replay((10, 20)))
    assert shares["episodes"] == 2
    assert shares["masked"] == pytest.approx(10 / 30)  # 5 of each episode
    assert shares["shortened"] == pytest.approx(4 / 30)  # 2 of each episode
    assert shares["scale_ratio"] == pytest.approx(32 / 30)  # |r| = 1 over 30 steps vs over 30 + 2 final slots


def test_priorities_weigh_the_shares(mask_mod):
    replay = _replay((10,))
    replay.enable_priority(alpha=1.0, min_priority=1.0)
    replay._sample_starts(1, horizon=1)
    replay._last_starts = np.array([9])  # the episode's last step
    replay.update_priority(np.array([91.0]))
    shares = mask_mod.mask_shares(replay)
    assert shares["masked"] == pytest.approx((4 + 91) / (9 + 91))
    assert shares["shortened"] == pytest.approx((1 + 91) / (9 + 91))
    assert shares["max_priority"] == 91.0


class _FakeReferenceBuffer:
    """The reference buffer's sampling signature: batch-major (B, H, ...) tensors, not_done 1.0 where alive."""

    def __init__(self, batch: int = 4, dim: int = 3, actions: int = 2):
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randn(batch, 6, dim, generator=g)
        self.action = torch.rand(batch, 5, actions, generator=g) * 2 - 1
        self.reward = torch.randn(batch, 5, 1, generator=g)
        self.not_done = torch.ones(batch, 5, 1)
        self.not_done[0, 1] = 0.0
        self.env_terminates, self.priorities = True, None

    def sample(self, horizon: int, include_intermediate: bool = False):
        if include_intermediate:
            return (self.frames[:, :horizon], self.action[:, :horizon], self.frames[:, 1:horizon + 1],
                    self.reward[:, :horizon], self.not_done[:, :horizon])
        return (self.frames[:, 0], self.action[:, 0], self.frames[:, horizon], self.reward[:, :horizon],
                self.not_done[:, :horizon])

    def reward_scale(self) -> float:
        return 0.5

    def update_priority(self, priority: torch.Tensor) -> None:
        self.priorities = priority


class _FakeReferenceModule:
    @staticmethod
    def multi_step_reward(reward, not_done, gammas):  # the reference's formula (MRQ.py)
        return (reward * not_done * gammas).sum(1), not_done.prod(1)


def test_hybrid_glue_serves_the_reference_buffer_in_robotrls_layout(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import mrq_hybrid_run

    buffer = _FakeReferenceBuffer()
    replay = mrq_hybrid_run.ReferenceReplay(buffer, _FakeReferenceModule, alpha=0.5, min_priority=1.0, q_horizon=3,
                                            discount=0.9)
    traj = replay.sample_trajectories(4, 5)
    assert traj.obs["state"].shape == (6, 4, 3) and traj.action.shape == (5, 4, 2)  # time-major, H+1 observations
    torch.testing.assert_close(traj.obs["state"][:, 2], buffer.frames[2])
    assert traj.terminated[1, 0, 0] == 1.0 and traj.terminated.sum() == 1.0
    batch = replay.sample(4)
    torch.testing.assert_close(batch.reward[1], buffer.reward[1, 0] + 0.9 * buffer.reward[1, 1]
                               + 0.81 * buffer.reward[1, 2])
    assert batch.discount[0, 0] == 0.0 and batch.discount[1, 0] == pytest.approx(0.729)
    torch.testing.assert_close(batch.next_obs["state"], buffer.frames[:, 3])
    replay.update_priority(torch.tensor([0.25, 4.0, 9.0, 1.0]))
    torch.testing.assert_close(buffer.priorities, torch.tensor([1.0, 2.0, 3.0, 1.0]))
    assert replay.mean_abs_reward() == 0.5 and replay.has_terminations()
