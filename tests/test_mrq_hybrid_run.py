"""bench/mrq_hybrid_run.py's glue: the reference's buffer served in robotrl's replay layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


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
    gammas = torch.tensor([1.0, 0.9, 0.81]).reshape(1, 3, 1)
    replay = mrq_hybrid_run.ReferenceReplay(buffer, _FakeReferenceModule.multi_step_reward, gammas, 0.9**3,
                                            alpha=0.5, min_priority=1.0)
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
