"""env.num_envs=N: vector envs give the transitions of N sequential envs; crashed/hung workers are restarted."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from robotrl.envs import make_env
from robotrl.envs.vector import RESTARTED, make_vector_env

from robotrl.errors import ConfigError, EnvWorkerError
from robotrl.workflows.rollout import run_episode, run_episodes_vector

SUITES = {  # small and short: 16 px pixels + state, a few agent steps per episode
    "dmc": {"name": "dmc/cartpole_swingup", "max_episode_steps": 12},
    "metaworld": {"name": "metaworld/reach", "max_episode_steps": 12},
    "gym": {"name": "gym/hopper", "max_episode_steps": 40},  # hopper terminates early under these actions
}


def small_cfg(name: str, **kw) -> dict:
    return {"image_size": 16, "frame_stack": 2, "action_repeat": 2, "obs_type": "pixels_state", "video_size": 16,
            **SUITES[name], **kw}


class ObsPolicy:
    """A deterministic policy of the observation: a different obs anywhere changes every later action."""

    def __init__(self, act_dim: int):
        self.act_dim = act_dim
        self.seen: list[tuple[int, np.ndarray, np.ndarray]] = []

    def one(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        x = float(obs["state"].sum()) + float(obs["pixels"][:, ::4, ::4].astype(np.float64).mean())
        return np.sin(x * (1.0 + np.arange(self.act_dim))).astype(np.float32)

    def batch(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([self.one({k: v[i] for k, v in obs.items()}) for i in range(len(obs["state"]))])


@pytest.mark.parametrize("suite", ["dmc", pytest.param("metaworld", marks=pytest.mark.slow),
                                   pytest.param("gym", marks=pytest.mark.slow)])  # ~25 s each here
def test_vector_env_matches_sequential_envs(suite):
    """Same seeds, same (obs-dependent) policy: every episode's return, length, success and every observation
    equal those of one env played sequentially, across episode resets inside the vector env."""
    cfg = small_cfg(suite)
    seeds = [11, 12, 13, 14, 15]  # 5 episodes on 2 workers: workers are reused, and dealt seeds out of order
    single = make_env(cfg, seed=0)
    policy = ObsPolicy(single.action_space.shape[0])
    expected, expected_obs = [], []
    for s in seeds:
        trace: list[np.ndarray] = []

        def pol(obs, trace=trace):
            trace.append(obs["pixels"].copy())
            return policy.one(obs)

        expected.append(run_episode(single, pol, s))
        expected_obs.append(trace)
    single.close()

    venv = make_vector_env({**cfg, "num_envs": 2}, seed=0)
    got_obs: dict[int, list[np.ndarray]] = {}
    current = {}

    def on_reset(i):
        current[i] = len(got_obs)
        got_obs[len(got_obs)] = []

    def batch(obs):
        for i, ep in current.items():
            got_obs[ep].append(obs["pixels"][i].copy())
        return policy.batch(obs)

    try:
        got = run_episodes_vector(venv, batch, seeds, on_reset=on_reset)
    finally:
        venv.close()
    assert got == expected
    if suite == "gym":
        assert len({r["length"] for r in got}) > 1, "hopper episodes should end at different steps"
    # every observation each episode's policy saw (episodes were dealt in start order)
    for k in range(len(seeds)):
        seen = got_obs[k][:len(expected_obs[k])]
        assert len(seen) == len(expected_obs[k])
        assert all(np.array_equal(a, b) for a, b in zip(seen, expected_obs[k], strict=True))


@pytest.mark.slow  # ~17 s here; the default suite kills a worker in the hang test below
def test_killed_worker_is_restarted_and_its_episode_replayed():
    """SIGKILL one worker mid-episode: the step reports it restarted (truncated, reward 0), the evaluation plays
    that episode again from its seed and every result equals the sequential one."""
    cfg = small_cfg("dmc")
    seeds = [21, 22, 23]
    single = make_env(cfg, seed=0)
    policy = ObsPolicy(single.action_space.shape[0])
    expected = [run_episode(single, policy.one, s) for s in seeds]
    single.close()
    venv = make_vector_env({**cfg, "num_envs": 2}, seed=0)
    calls = {"n": 0}
    restarted = []
    step = venv.step

    def spy_step(actions):
        out = step(actions)
        restarted.append(out[4][RESTARTED].copy())
        return out

    def batch(obs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(venv.processes[1].pid, signal.SIGKILL)
        return policy.batch(obs)

    venv.step = spy_step
    try:
        got = run_episodes_vector(venv, batch, seeds)
        assert venv.restarts == 1
    finally:
        venv.close()
    assert got == expected
    assert sum(r[1] for r in restarted) == 1 and not any(r[0] for r in restarted)


class HangingEnv:
    """Wraps a contract env; its step sleeps forever on a chosen call (a frozen camera / renderer)."""

    def __init__(self, env, hang_at: int):
        self.env, self.hang_at, self.calls = env, hang_at, 0
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.metadata, self.render_mode, self.spec = env.metadata, None, None
        self.np_random_seed = None

    def reset(self, **kw):
        return self.env.reset(**kw)

    def step(self, action):
        self.calls += 1
        if self.calls == self.hang_at:
            import time

            time.sleep(3600)
        return self.env.step(action)

    def close(self):
        self.env.close()

    def get_wrapper_attr(self, name):
        return getattr(self.env, name)


def _hanging(cfg, hang_at):
    return HangingEnv(make_env(cfg, 0), hang_at)


def test_hung_worker_is_killed_after_timeout_and_restarts_are_bounded():
    import functools

    from robotrl.envs.vector import ResilientVectorEnv

    cfg = small_cfg("dmc", obs_type="state")
    venv = ResilientVectorEnv([functools.partial(_hanging, cfg, 3), functools.partial(_hanging, cfg, 10**9)],
                              timeout_s=3.0, max_restarts=1)
    try:
        venv.reset(seed=[1, 2])
        flags = []
        for _ in range(3):
            _, reward, _, truncated, info = venv.step(np.zeros((2, 1), np.float32))
            flags.append(info[RESTARTED].copy())
        assert [f.tolist() for f in flags] == [[False, False], [False, False], [True, False]]
        assert venv.restarts == 1
        os.kill(venv.processes[0].pid, signal.SIGKILL)
        with pytest.raises(EnvWorkerError, match="MUJOCO_GL"):
            venv.step(np.zeros((2, 1), np.float32))
    finally:
        venv.close(terminate=True)


def test_num_envs_and_worker_settings_are_range_checked_before_any_worker_starts():
    # worker_timeout_s=0 used to become 120 s without a word, NaN to be accepted, max_worker_restarts=-1 to end the
    # run at the first restart
    for key, value, expected in (("num_envs", 0, "an integer >= 1"), ("worker_timeout_s", 0, "a finite number > 0"),
                                 ("worker_timeout_s", float("nan"), "a finite number > 0"),
                                 ("max_worker_restarts", -1, "an integer >= 0")):
        with pytest.raises(ConfigError, match=re.escape(f"env.{key}={value!r}, expected {expected}")):
            make_vector_env({**small_cfg("dmc"), "num_envs": 2, key: value}, seed=0)


def test_building_a_vector_env_leaves_the_callers_ctrl_c_alone_and_workers_ignore_it():
    """Workers ignore SIGINT (Ctrl-C reaches the process group; the trainer stops them itself), but the caller's
    process must not: gymnasium builds one env in the caller to read the spaces, and that build used to set the
    caller's SIGINT to SIG_IGN, so Ctrl-C was ignored after the training loop (final eval, baselines) and for good
    in a notebook."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    venv = None
    try:
        venv = make_vector_env(small_cfg("dmc"), seed=0, num_envs=2)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        venv.reset(seed=[1, 2])
        os.kill(venv.processes[0].pid, signal.SIGINT)
        _, _, _, _, infos = venv.step(np.zeros((2, *venv.single_action_space.shape), np.float32))
        assert not np.any(infos[RESTARTED]) and venv.restarts == 0  # the worker took no notice
    finally:
        if venv is not None:
            venv.close()
        signal.signal(signal.SIGINT, previous)
