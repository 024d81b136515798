"""Trivial-policy baselines: a saturated or constant policy is never reported as learning."""

from __future__ import annotations

import numpy as np
import pytest
from robotrl.envs import make_env

from robotrl.config import resolve_threads, validate_config
from robotrl.errors import ConfigError
from robotrl.workflows.baselines import beats, compare, constant_policy, trivial_baselines
from robotrl.workflows.rollout import run_episodes, summarize


def _summary(mean: float, std: float, episodes: int = 5, success: float | None = None) -> dict:
    return {"return_mean": mean, "return_std": std, "episodes": episodes, "success_rate": success}


def test_beats_needs_a_margin_of_two_standard_errors():
    base = _summary(100.0, 10.0)
    assert not beats(_summary(100.0, 10.0), base)  # the same policy
    assert not beats(_summary(110.0, 10.0), base)  # 10 above, 2 SE = 2*sqrt(2*100/5) = 12.6
    assert beats(_summary(115.0, 10.0), base)
    assert not beats(_summary(200.0, 1.0, success=0.2), _summary(100.0, 1.0, success=0.4))  # lower success


def test_compare_names_what_is_not_beaten():
    verdict = compare(_summary(75.3, 0.6), {"random": _summary(25.0, 6.4), "constant": _summary(75.3, 0.6)})
    assert verdict == {"beats": {"random": True, "constant": False}, "beats_all": False, "not_beaten": ["constant"]}


def test_saturated_policy_on_cartpole_swingup_is_caught(compose_cfg):
    """The issue's case: an actor stuck at +1 scores far above random on cartpole_swingup -- and equals constant +1."""
    cfg = compose_cfg("env=dmc/cartpole_swingup", "env.obs_type=state", "env.max_episode_steps=200")
    env = make_env(cfg.env, seed=1)
    seeds = [1_000_000, 1_000_001, 1_000_002]
    saturated = summarize(run_episodes(env, lambda obs: np.ones(1, np.float32), seeds))
    baselines = trivial_baselines(env, seeds, seed=1)
    env.close()
    assert set(baselines["constant_grid"]) == {"-1.0", "-0.5", "0.0", "0.5", "1.0"}
    assert beats(saturated, baselines["random"])  # what the old summary showed: "learning"
    verdict = compare(saturated, {k: baselines[k] for k in ("random", "constant")})
    assert verdict["not_beaten"] == ["constant"], (saturated, baselines)


def test_constant_policy_is_constant():
    import gymnasium as gym

    policy = constant_policy(gym.spaces.Box(-1, 1, (3,), np.float32), -0.5)
    assert np.array_equal(policy({}), np.full(3, -0.5, np.float32)) and policy({}).dtype == np.float32


@pytest.mark.parametrize("final_return", [1000.0, 0.0])
def test_run_summary_has_baselines_and_a_verdict(compose_cfg, capsys, final_return):
    """The run's final comparison (a part of the trainer: no training run needed): the trivial policies on the
    eval seeds, the first eval as a baseline, the table and a warning when the final eval beats none of them."""
    from types import SimpleNamespace

    from rich.console import Console

    from robotrl.workflows.trainer.evaluation import compare_with_baselines

    cfg = compose_cfg("compare_baselines=true", "eval_episodes=2")
    final = {"frame": 400, "episodes": 2, "return_mean": final_return, "return_std": 1.0, "success_rate": None}
    first = {**final, "frame": 0, "return_mean": 0.0}
    run = SimpleNamespace(cfg=cfg, state=SimpleNamespace(first_eval=first, last_eval=final), robot=None, frame=400,
                          console=Console(soft_wrap=True))
    summary = compare_with_baselines(run)
    assert {"random", "constant", "constant_grid"} <= set(summary["baselines"])
    assert summary["baselines"]["random"]["episodes"] == 2
    verdict = summary["vs_baselines"]
    assert set(verdict["beats"]) == {"random", "constant", "first_eval"}
    assert verdict["beats_all"] == (final_return == 1000.0)  # cartpole_balance: at most 1 per step, 50 steps
    out = capsys.readouterr().out
    assert "constant" in out and "first eval" in out and "trained agent" in out
    assert ("WARNING" in out) == (not verdict["beats_all"])


def test_threads_auto_uses_the_free_cores(monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert resolve_threads("auto")[0] == cores
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 3.0, 0.0, 0.0))
    threads, why = resolve_threads("auto")
    assert threads == 1 and "busy" in why
    assert resolve_threads(3) == (3, "set by torch_threads")


def test_bad_thread_setting_is_a_config_error(compose_cfg):
    with pytest.raises(ConfigError, match="torch_threads"):
        validate_config(compose_cfg("torch_threads=many"))


def test_quickstart_composes_as_the_readme_describes(compose_cfg):
    """The embedded default run: DrQ-v2 on cheetah_run from 48x48 pixels, bf16 encoder, free-core threads."""
    cfg = compose_cfg("experiment=quickstart", tiny=False)
    validate_config(cfg)
    assert cfg.env.name == "dmc/cheetah_run" and cfg.env.image_size == 48 and cfg.agent.name == "drqv2"
    assert cfg.agent.bf16 is True and cfg.torch_threads == "auto" and cfg.compare_baselines is True


@pytest.mark.parametrize("env_name", ["dmc/cartpole_balance", "metaworld/reach"])
def test_state_env_plays_the_same_episodes_as_the_pixel_env(compose_cfg, env_name):
    """The baselines run on an obs_type=state copy of the env (no rendering): same seeds -> same returns."""
    cfg = compose_cfg(f"env={env_name}", "env.max_episode_steps=40")
    seeds = [1_000_000, 1_000_001]
    pixel_env = make_env(cfg.env, seed=1)
    on_pixels = trivial_baselines(pixel_env, seeds, seed=1, grid=(0.5,))
    pixel_env.close()
    from robotrl.workflows.baselines import trivial_baselines_for

    on_state = trivial_baselines_for(cfg.env, seeds, seed=1)
    assert on_state["random"] == on_pixels["random"]
    assert on_state["constant_grid"]["0.5"] == on_pixels["constant_grid"]["0.5"]
