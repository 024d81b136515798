"""bench/mrq_replay_mask.py: the share of value-batch sampling on the starts facebookresearch/MRQ's buffer masks."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

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
