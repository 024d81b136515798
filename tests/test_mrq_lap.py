"""LAP prioritised sampling in the replay (robotrl/priority.py): distribution, updates, exact save/restore."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from robotrl.errors import CheckpointError
from robotrl.priority import LapPriority
from robotrl.replay import ReplayBuffer

SPACE = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)})


def _replay(episodes: int = 2, steps: int = 20, capacity: int = 100, seed: int = 0) -> ReplayBuffer:
    replay = ReplayBuffer(capacity, SPACE, 2, 1, nstep=1, seed=seed)
    for e in range(episodes):
        replay.add_first({"state": np.full(3, 1000 * e, np.float32)})
        for t in range(steps):
            obs = {"state": np.full(3, 1000 * e + t + 1, np.float32)}
            replay.add(np.zeros(2, np.float32), float(t), obs, terminated=False, truncated=t == steps - 1)
    return replay


def test_priority_of_clamps_at_min_priority_then_powers_by_alpha():
    lap = LapPriority(4, alpha=0.4, min_priority=1.0)
    got = lap.priority_of(np.array([0.0, 0.5, 2.0, -3.0]))
    np.testing.assert_allclose(got, [1.0, 1.0, 2.0**0.4, 3.0**0.4])


def test_sum_tree_samples_in_proportion_to_priority():
    lap = LapPriority(5, alpha=1.0, min_priority=0.1)
    lap.set(np.arange(5), np.array([1.0, 0.0, 2.0, 3.0, 4.0]))
    draws = lap.sample(200_000, np.random.default_rng(0))
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.2, 0.3, 0.4], atol=0.005)
    assert lap.total == pytest.approx(10.0)


def test_update_sets_priorities_and_raises_max_priority():
    lap = LapPriority(8, alpha=0.5, min_priority=1.0)
    lap.set_new(np.arange(8))
    assert lap.max_priority == 1.0
    lap.update(np.array([2, 5]), np.array([9.0, 0.25]))
    np.testing.assert_allclose(lap.get(np.array([2, 5, 0])), [3.0, 1.0, 1.0])
    assert lap.max_priority == 3.0
    lap.set_new(np.array([7]))  # a new transition enters at the largest priority seen
    assert lap.get(np.array([7]))[0] == 3.0
    assert lap.total == pytest.approx(7 * 1.0 + 3.0 + 3.0 - 1.0)
    with pytest.raises(ValueError, match="2 losses for 1 sampled"):
        lap.update(np.array([1]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        lap.update(np.array([1]), np.array([np.nan]))


@pytest.mark.parametrize("kwargs, match", [({"alpha": 1.5}, "alpha=1.5"), ({"min_priority": 0.0}, "min_priority=0")])
def test_bad_lap_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LapPriority(10, **kwargs)


def test_replay_samples_high_priority_transitions_more_often():
    replay = _replay()
    replay.enable_priority(alpha=1.0, min_priority=1.0)
    batch = replay.sample(64)
    starts = replay._last_starts.copy()
    # give one sampled start a loss of 99: priority 99 against ~1 for the other ~39 valid starts
    loss = np.zeros(64)
    hot = starts[0]
    loss[starts == hot] = 99.0
    replay.update_priority(torch.as_tensor(loss))
    counts = 0
    for _ in range(50):
        replay.sample(64)
        counts += int((replay._last_starts == hot).sum())
    share = counts / (50 * 64)
    assert 0.6 < share < 0.8, share  # 99 / (99 + 39) = 0.72; uniform would be 1/40
    assert batch.obs["state"].shape == (64, 3)


def test_encoder_sub_trajectories_are_drawn_by_priority_too():
    # the reference's buffer draws the encoder's enc_horizon segments through the same LAP priorities as the value's
    replay = _replay()  # 2 episodes of 20 steps: 17 valid 4-step starts each
    replay.enable_priority(alpha=1.0, min_priority=1.0)
    replay._priority.update(np.array([2]), np.array([99.0]))  # slot 2: episode 0, step 2
    hot = 0
    for _ in range(50):
        traj = replay.sample_trajectories(64, horizon=4)
        hot += int((traj.obs["state"][0, :, 0] == 2.0).sum())
    share = hot / (50 * 64)
    assert 0.68 < share < 0.82, share  # 99 / (99 + 33) = 0.75; uniform would be 1/34


def test_priority_sampling_never_returns_an_invalid_start():
    replay = _replay(episodes=3, steps=6)
    replay.enable_priority()
    for _ in range(20):
        traj = replay.sample_trajectories(32, horizon=4)
        # every sub-trajectory stays in one episode: states increase by 1 per step
        diffs = np.diff(traj.obs["state"][:, :, 0].numpy(), axis=0)
        assert np.all(diffs == 1.0)


def test_reward_scale_and_termination_summaries():
    replay = _replay(episodes=2, steps=4)  # rewards 0, 1, 2, 3 per episode
    assert replay.mean_abs_reward() == pytest.approx(1.5)
    assert not replay.has_terminations()
    replay.add_first({"state": np.zeros(3, np.float32)})
    replay.add(np.zeros(2, np.float32), -6.0, {"state": np.ones(3, np.float32)}, terminated=True, truncated=False)
    assert replay.has_terminations()
    assert replay.mean_abs_reward() == pytest.approx((12 + 6) / 9)


def test_priorities_restore_exactly_through_save_and_load(tmp_path):
    replay = _replay()
    replay.enable_priority(alpha=0.4, min_priority=1.0)
    replay.sample(32)
    replay.update_priority(np.linspace(0, 10, 32))
    replay.save(tmp_path / "r.npz")
    loaded = ReplayBuffer.load(tmp_path / "r.npz")
    assert loaded.prioritized and loaded._priority.max_priority == replay._priority.max_priority
    np.testing.assert_array_equal(loaded._priority._tree, replay._priority._tree)
    for _ in range(3):
        np.testing.assert_array_equal(loaded.sample(16).obs["state"], replay.sample(16).obs["state"])
    # state_dict round trip, and loading a state without priorities switches them off again
    fresh = _replay()
    fresh.load_state_dict(replay.state_dict())
    np.testing.assert_array_equal(fresh.sample(16).obs["state"], replay.sample(16).obs["state"])
    fresh.load_state_dict(_replay().state_dict())
    assert not fresh.prioritized


def test_corrupt_priorities_are_refused():
    replay = _replay()
    replay.enable_priority()
    state = replay.state_dict()
    state["priority"]["leaves"] = torch.full((5,), -1.0, dtype=torch.float64)
    with pytest.raises(CheckpointError, match="priorities"):
        _replay().load_state_dict(state)


def test_enable_priority_twice_with_other_settings_is_an_error():
    replay = _replay()
    replay.enable_priority(0.4, 1.0)
    replay.enable_priority(0.4, 1.0)  # same settings: no-op (resume path)
    with pytest.raises(ValueError, match="already on"):
        replay.enable_priority(0.6, 1.0)
    with pytest.raises(ValueError, match="needs enable_priority"):
        _replay().update_priority(np.ones(3))


def test_overwritten_slots_lose_their_priority():
    replay = _replay(episodes=1, steps=20, capacity=30)
    replay.enable_priority(alpha=1.0, min_priority=1.0)
    replay.sample(8)
    replay.update_priority(np.full(8, 50.0))
    for _ in range(3):  # wrap the buffer several times
        replay.add_first({"state": np.zeros(3, np.float32)})
        for t in range(9):
            replay.add(np.zeros(2, np.float32), 0.0, {"state": np.full(3, t + 1, np.float32)}, False, t == 8)
    leaves = replay._priority.get(np.arange(30))
    has_action = replay._arrays["has_action"]
    assert np.all(leaves[~has_action] == 0.0)  # episode-final slots (no action) are never drawn
    assert replay._priority.total == pytest.approx(leaves.sum())


def test_whole_episodes_enter_at_the_largest_priority():
    """Vector envs add whole episodes (add_episode): their steps must be sampleable at max_priority like add()'s."""
    from robotrl.types import Episode

    replay = _replay(episodes=1, steps=5)
    replay.enable_priority(alpha=1.0, min_priority=1.0)
    replay.sample(4)
    replay.update_priority(np.full(4, 7.0))
    states = np.arange(4, dtype=np.float32)[:, None].repeat(3, 1)
    replay.add_episode(Episode(obs={"state": states}, action=np.zeros((3, 2), np.float32),
                               reward=np.zeros(3, np.float32), terminated=np.zeros(3, bool), success=np.zeros(3, bool)))
    np.testing.assert_array_equal(replay._priority.get(np.arange(6, 10)), [7.0, 7.0, 7.0, 0.0])
