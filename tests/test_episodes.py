"""robotrl.episodes: the one episode loop's chunked policies, reset options and early stop, and the former copies
(World-Env's sim rollout, fidelity's WorldEnv episode) that now play through it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from robotrl.episodes import EpisodeBuilder, chunked, record_episode


class CountEnv:
    """obs["state"] = step count (float64, as a simulator's), pixels (3, 2, 2) filled with it; success at step 3,
    terminated at ``end_on`` (None: never), truncated at ``limit``."""

    def __init__(self, limit: int = 7, end_on: int | None = None):
        self.limit, self.end_on, self.t, self.resets = limit, end_on, 0, []

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": np.full((3, 2, 2), self.t, np.uint8), "state": np.array([self.t, -self.t], np.float64)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.t = 0
        self.resets.append((seed, options))
        return self._obs(), {}

    def step(self, action: np.ndarray):
        self.t += 1
        terminated = self.end_on is not None and self.t >= self.end_on
        return self._obs(), 0.5 * self.t, terminated, self.t >= self.limit and not terminated, {"success": self.t == 3}


def test_chunked_asks_for_a_chunk_only_when_the_last_is_used_up_with_the_current_obs():
    asked = []

    def act_chunk(obs):
        asked.append(int(obs["state"][0]))
        return np.full((3, 1), len(asked), np.float32)

    env = CountEnv(limit=7)
    played = record_episode(env, chunked(act_chunk), 5, builder=EpisodeBuilder(3, ("pixels", "state"), flags=False))
    assert asked == [0, 3, 6]  # the rest of the third chunk is dropped at the time limit
    assert played.episode.action[:, 0].tolist() == [1, 1, 1, 2, 2, 2, 3]
    assert played.length == 7 and not played.stopped and env.resets == [(5, None)]


def test_stop_ends_the_episode_after_a_step_that_did_not_end_it():
    seen = []

    def stop(obs):
        seen.append(int(obs["state"][0]))
        return obs["state"][0] >= 4

    played = record_episode(CountEnv(limit=7), lambda obs: np.zeros(1), 0, stop=stop)
    assert (played.length, played.stopped, played.terminated, seen) == (4, True, False, [1, 2, 3, 4])
    ended = record_episode(CountEnv(limit=7, end_on=2), lambda obs: np.zeros(1), 0, stop=stop)
    assert (ended.length, ended.stopped, ended.terminated) == (2, False, True)
    assert seen[-1] == 1  # not asked after the step the env ended


def test_reset_options_go_to_the_env():
    env = CountEnv()
    record_episode(env, lambda obs: np.zeros(1), None, options={"index": 2})
    assert env.resets == [(None, {"index": 2})]


def test_sim_rollout_stores_newest_frames_float32_state_and_its_stop():
    from robotrl.workflows.worldenv.data import sim_rollout

    ep, stopped = sim_rollout(CountEnv(limit=9), lambda obs: np.ones((2, 1)), 1,
                              stop=lambda frame: frame.shape == (2, 2, 3) and frame[0, 0, 0] == 5)
    assert stopped and len(ep.action) == 5 and ep.reward_invalid is None
    assert ep.obs["state"].dtype == np.float32 and ep.obs["state"][:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert ep.obs["pixels"].shape == (6, 3, 2, 2) and ep.success.tolist() == [False, False, True, False, False]
    assert ep.reward.dtype == np.float32 and ep.action.dtype == np.float32


@pytest.mark.parametrize(("end_on", "want"), [(4, True), (None, False)])
def test_fidelity_world_episode_is_a_success_only_when_the_env_terminated(end_on, want):
    from robotrl.workflows.worldenv.fidelity import _world_episode

    env, proprios = CountEnv(limit=6, end_on=end_on), []

    def actor(obs, proprio):
        proprios.append(int(proprio[0]))
        return np.zeros((4, 1))

    assert _world_episode(env, actor, 3) is want
    assert env.resets == [(None, {"index": 3})] and proprios == [0, 4][: 1 + (end_on is None)]


def test_intervention_segments_saved_and_reloaded_keep_their_numbers(tmp_path):
    import gymnasium as gym

    from robotrl.workflows.interventions import InterventionRecorder

    space = gym.spaces.Dict({"state": gym.spaces.Box(-5, 5, (2,), np.float32)})
    rec = InterventionRecorder(tmp_path / "iv", space, 1, "toy")
    rec.begin({"state": np.zeros(2, np.float32)})
    for t, took_over in enumerate([False, True, True, False, True], 1):
        rec.step(np.full(1, t / 10, np.float32), 0.25 * t, {"state": np.full(2, t, np.float32)}, t == 5,
                 {"intervention": took_over, "success": t == 5})
    segments = rec.finish(train_episode=7)
    assert [len(s.action) for s in segments] == [2, 1]
    loaded = InterventionRecorder(tmp_path / "iv", space, 1, "toy").load(before_episode=8)
    assert len(loaded) == 2
    for got, want in zip(loaded, segments, strict=True):
        assert list(got.obs) == ["state"] and np.array_equal(got.obs["state"], want.obs["state"])
        for field in ("action", "reward", "terminated", "success"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), field
        assert got.reward_invalid is None
    assert loaded[1].success.tolist() == [True] and loaded[0].obs["state"][:, 0].tolist() == [1, 2, 3]
