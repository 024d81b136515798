"""Reward quality report: metric definitions on hand-built data, near-miss rollouts, the end-to-end report, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from robotrl.rewards import RewardCapabilities

from robotrl import cli
from robotrl.errors import ConfigError
from robotrl.workflows import reward_eval as re

GAMMA = 0.9


# ------------------------------------------------------------------------------------------------ EPIC
def _transitions(n: int = 300, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, dim))
    a = rng.uniform(-1, 1, size=(n, 2))
    s_next = s + 0.3 * rng.normal(size=(n, dim))
    return s, a, s_next


def _reward(s: np.ndarray, a: np.ndarray, s_next: np.ndarray) -> np.ndarray:
    """Depends on s, a and s' (not a shaped reward of s' alone), so canonicalisation has work to do."""
    return s_next[:, 0] - 0.5 * s_next[:, 1] ** 2 + a[:, 0] * s[:, 2] + 0.3 * a[:, 1]


def _phi(x: np.ndarray) -> np.ndarray:
    return 2.0 * np.sin(x[:, 0]) + x[:, 1] * x[:, 3] + 1.5


def _shaped(s: np.ndarray, a: np.ndarray, s_next: np.ndarray) -> np.ndarray:
    return _reward(s, a, s_next) + GAMMA * _phi(s_next) - _phi(s)


def test_epic_identical_scaled_and_shaped_rewards_are_at_distance_zero():
    s, a, sn = _transitions()
    assert re.epic_distance(_reward, _reward, s, a, sn, GAMMA) == pytest.approx(0.0, abs=1e-6)
    assert re.epic_distance(_reward, lambda *x: 7.0 * _reward(*x), s, a, sn, GAMMA) == pytest.approx(0.0, abs=1e-6)
    assert re.epic_distance(_reward, _shaped, s, a, sn, GAMMA) == pytest.approx(0.0, abs=1e-6)
    assert re.epic_distance(_reward, lambda *x: 0.1 * _shaped(*x) - 4.0, s, a, sn, GAMMA) == pytest.approx(0, abs=1e-6)
    # the shaping is far from negligible: without canonicalisation the two rewards look quite different
    assert re.pearson_distance(_reward(s, a, sn), _shaped(s, a, sn)) > 0.2


def test_epic_separates_different_and_opposite_rewards():
    s, a, sn = _transitions()
    other = lambda s, a, sn: sn[:, 1] + a[:, 0]  # noqa: E731
    assert 0.2 < re.epic_distance(_reward, other, s, a, sn, GAMMA) < 0.95
    assert re.epic_distance(_reward, lambda *x: -_reward(*x), s, a, sn, GAMMA) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(re.epic_distance(_reward, lambda s, a, sn: np.ones(len(s)), s, a, sn, GAMMA))


def test_epic_of_next_state_rewards_is_their_pearson_distance():
    s, a, sn = _transitions(seed=1)
    ra = lambda s, a, sn: np.tanh(sn[:, 0]) + sn[:, 1]  # noqa: E731
    rb = lambda s, a, sn: sn[:, 0] - 0.2 * sn[:, 2] ** 3  # noqa: E731
    expected = re.pearson_distance(ra(s, a, sn), rb(s, a, sn))
    assert 0.05 < expected < 0.9
    for gamma, samples in ((0.99, 16), (0.5, 64)):
        assert re.epic_distance(ra, rb, s, a, sn, gamma, n_samples=samples) == pytest.approx(expected, abs=1e-9)


def test_canonicalize_removes_the_expectations_it_should():
    """C(R) for R = s'-only is R minus the sample mean of R over the state samples (a constant)."""
    s, a, sn = _transitions(n=50)
    samples = sn[:10]
    c = re.canonicalize(lambda s, a, sn: sn[:, 0], s, a, sn, samples, a[:5], GAMMA)
    np.testing.assert_allclose(c, sn[:, 0] - samples[:, 0].mean(), atol=1e-12)


# ------------------------------------------------------------------------------------------------ rank metrics, F1
def test_value_order_correlation_uses_successful_episodes_up_to_first_success():
    rising = np.array([0.0, 1.0, 2.0, 3.0, 0.0, -5.0])  # drops after success: ignored
    falling = np.array([3.0, 2.0, 1.0, 0.0])
    success_at_3 = np.array([False, False, False, True, True, True])
    out = re.value_order_correlation([rising, falling, falling], [success_at_3, np.zeros(4, bool),
                                                                  np.array([False, False, True, False])])
    assert out["episodes"] == 2  # the failed episode is not counted
    assert out["rho"] == pytest.approx((1.0 - 1.0) / 2)
    only_rising = re.value_order_correlation([rising], [success_at_3])
    assert only_rising == {"rho": pytest.approx(1.0), "episodes": 1}
    assert re.value_order_correlation([falling], [np.zeros(4, bool)]) == {"rho": None, "episodes": 0}


def test_episode_kendall_tau():
    gt = [1.0, 2.0, 3.0, 4.0]
    assert re.episode_kendall_tau([10, 20, 30, 40], gt) == pytest.approx(1.0)
    assert re.episode_kendall_tau([4, 3, 2, 1], gt) == pytest.approx(-1.0)
    assert re.episode_kendall_tau([1, 3, 2, 4], gt) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert math.isnan(re.episode_kendall_tau([1, 1, 1, 1], gt))


def test_f1_and_threshold():
    pred = np.array([1, 1, 1, 0, 0, 0], bool)
    label = np.array([1, 1, 0, 1, 0, 0], bool)
    assert re.f1_score(pred, label) == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert math.isnan(re.f1_score(np.zeros(3, bool), np.zeros(3, bool))["f1"])
    rewards = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.95])
    labels = rewards > 0.5
    assert re.best_threshold(rewards, labels) == pytest.approx(0.8)
    assert re.best_threshold(rewards, np.zeros(6, bool)) == math.inf


def test_near_miss_gap():
    out = re.near_miss_gap({0: 1.0, 1: 0.8, 2: 0.9}, {0: 0.5, 1: 0.9}, scale=0.5)
    assert out["expert_final"] == pytest.approx(0.9) and out["near_miss_final"] == pytest.approx(0.7)
    assert out["gap"] == pytest.approx(0.4) and out["pair_accuracy"] == pytest.approx(0.5) and out["pairs"] == 2


def _fake_rollouts() -> list[re.Rollout]:
    """Hand-built episodes with known ground truth (no simulator)."""
    eps = []
    for k, (policy, seed, slope, ok_at) in enumerate([("expert", 0, 1.0, 5), ("near_miss", 0, 0.9, None),
                                                      ("random", 0, 0.1, None), ("expert", 1, 1.2, 4),
                                                      ("near_miss", 1, 1.0, None), ("random", 1, -0.1, None)]):
        gt = slope * np.arange(8, dtype=float) + 0.01 * k
        ok = np.zeros(8, bool)
        if ok_at is not None:
            ok[ok_at:] = True
        eps.append(re.Rollout(policy=policy, seed=seed, actions=np.zeros((8, 4), np.float32), gt_reward=gt,
                              success=ok, infos=[{"success": bool(x)} for x in ok]))
    return eps


def test_reward_metrics_of_the_ground_truth_are_perfect_and_of_its_negation_worst():
    eps = _fake_rollouts()
    settings = re.Settings(episodes=2)
    gt = re.reward_metrics([ep.gt_reward for ep in eps], eps, settings)
    assert gt["epic"] == pytest.approx(0.0, abs=1e-9) and gt["kendall_tau"] == pytest.approx(1.0)
    assert gt["value_order"] == {"rho": pytest.approx(1.0), "episodes": 2}
    assert gt["near_miss"]["pair_accuracy"] == 1.0 and gt["near_miss"]["gap"] > 0
    neg = re.reward_metrics([-ep.gt_reward for ep in eps], eps, settings)
    assert neg["epic"] == pytest.approx(1.0) and neg["kendall_tau"] == pytest.approx(-1.0)
    assert neg["value_order"]["rho"] == pytest.approx(-1.0) and neg["near_miss"]["pair_accuracy"] == 0.0
    assert neg["success_f1_source"].startswith("reward >= threshold")
    pred = re.reward_metrics([ep.gt_reward for ep in eps], eps, settings, [ep.success for ep in eps])
    assert pred["success_f1"] == 1.0 and pred["success_f1_source"].startswith("predict_success")
    eps[3].success[-1] = False  # the seed-1 expert succeeded but lost it again: not a success to compare with
    assert re.reward_metrics([ep.gt_reward for ep in eps], eps, settings)["near_miss"]["pairs"] == 1


# ------------------------------------------------------------------------------------------------ Meta-World
def _env_cfg(compose_cfg, task: str = "reach", max_steps: int = 80):
    return compose_cfg(f"env=metaworld/{task}", f"env.max_episode_steps={max_steps}", "env.obs_type=state",
                       "device=cpu", tiny=False)


def test_near_miss_episodes_stop_short_of_success(compose_cfg):
    from robotrl.envs import make_env

    env = make_env(_env_cfg(compose_cfg).env, 0)
    try:
        expert = re.expert_policy("reach")
        for seed in (0, 1):
            ep = re.rollout(env, expert, seed, "expert", None)
            assert ep.success.any()
            first = int(np.argmax(ep.success))
            near = re.near_miss_rollout(env, expert, seed, first, (1, 2, 4, 8, 16), 32)
            assert near is not None and not near.success.any()
            assert 0 < near.stop_step <= first and near.frames.shape == (near.length, 32, 32, 3)
            np.testing.assert_array_equal(near.actions[:near.stop_step], ep.actions[:near.stop_step])
            assert np.all(near.actions[near.stop_step:, :3] == 0)
            # the near-miss ends close to the goal: far more simulator reward than a random policy would get
            assert near.gt_reward[-1] > 0.5 * ep.gt_reward[-1]
    finally:
        env.close()


@pytest.mark.parametrize("task", ["push", "button-press-topdown"])
def test_near_miss_on_contact_tasks(compose_cfg, task):
    """Pushing and pressing: the stopped expert leaves the puck short of the goal / the button not fully pressed."""
    from robotrl.envs import make_env

    env = make_env(_env_cfg(compose_cfg, task, max_steps=100).env, 0)
    try:
        expert = re.expert_policy(task)
        ep = re.rollout(env, expert, 0, "expert", None)
        first = int(np.argmax(ep.success))
        assert ep.success.any() and ep.success[-1]
        near = re.near_miss_rollout(env, expert, 0, first, tuple(range(1, 21)), None)
        assert near is not None and not near.success.any() and first - 20 < near.stop_step <= first
        np.testing.assert_array_equal(near.actions[:near.stop_step], ep.actions[:near.stop_step])
    finally:
        env.close()


class SimDistance:
    """A KAGI-like model: reads the bound simulator (hand-to-goal distance), predicts success within 5 cm."""

    capabilities = RewardCapabilities(predicts_success=True, binds_env=True)
    batch_size = 1

    def __init__(self):
        self.env = None
        self.calls = 0

    def bind(self, env) -> None:
        self.env = env

    def _dist(self) -> float:
        raw = self.env.unwrapped.raw
        return float(np.linalg.norm(raw.tcp_center - raw._target_pos))

    def __call__(self, frames, info=None):
        assert frames.shape[0] == 1 and info is not None and "success" in info[0]
        self.calls += 1
        return np.array([-self._dist()], np.float32)

    def predict_success(self, frames, info=None):
        return np.array([self._dist() <= 0.05])


class InfoCounter:
    """An offline model reading the per-step info; records its batch sizes."""

    batch_size = 7

    def __init__(self):
        self.sizes: list[int] = []

    def __call__(self, frames, info=None):
        assert frames.dtype == np.uint8 and frames.shape[1:] == (32, 32, 3) and len(info) == len(frames)
        self.sizes.append(len(frames))
        return -np.array([i["obj_to_target"] for i in info], np.float32)


def test_report_end_to_end_on_reach(compose_cfg, tmp_path):
    from robotrl.rewards import make_reward

    cfg = _env_cfg(compose_cfg)
    clip = make_reward(compose_cfg("reward=clip_tiny", "env=metaworld/reach", "device=cpu", tiny=False).reward)
    sim, counter = SimDistance(), InfoCounter()
    settings = re.Settings(episodes=2, seed=3, max_steps=80, noise=(0.3,), render_size=32)
    report = re.run_report(cfg.env, {"clip_tiny": clip, "sim_dist": sim, "info": counter}, settings, tmp_path)
    steps = sum(ep.length for ep in report["_rollouts"])
    assert sim.env is not None and sim.calls == steps  # bound: scored online, once per step
    assert sum(counter.sizes) == steps and max(counter.sizes) == 7

    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["metrics"]) == {"env", "clip_tiny", "sim_dist", "info"}
    assert set(saved["policies"]) == {"expert", "noisy_0.3", "near_miss", "random"}
    assert saved["policies"]["expert"]["success_rate"] == 1.0 and saved["policies"]["near_miss"]["success_rate"] == 0
    assert saved["policies"]["near_miss"]["episodes"] == 2 and saved["rollout_notes"]["near_miss_dropped_seeds"] == []
    assert saved["versions"]["metaworld"] and saved["env_info"]["metaworld_version"] == saved["versions"]["metaworld"]
    assert saved["settings"]["seed"] == 3 and saved["policies"]["random"]["seeds"] == [3, 4]
    env_row = saved["metrics"]["env"]
    assert env_row["epic"] == pytest.approx(0.0, abs=1e-9) and env_row["kendall_tau"] == pytest.approx(1.0)
    assert env_row["value_order"]["rho"] > 0.8
    dist = saved["metrics"]["sim_dist"]
    assert dist["scored"] == "online (bind)" and dist["success_f1_source"].startswith("predict_success")
    tiny = saved["metrics"]["clip_tiny"]
    assert dist["success_f1"] > 0.9 and dist["kendall_tau"] > 0.5 and dist["epic"] < tiny["epic"]
    assert tiny["scored"] == "offline (batched)"
    for key in ("epic", "kendall_tau", "pearson_distance"):
        assert tiny[key] is None or -1.0 <= tiny[key] <= 1.0
    assert set(tiny["near_miss"]) == {"expert_final", "near_miss_final", "gap", "pair_accuracy", "pairs"}
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temp files


def test_cli_with_the_env_reward_only(tmp_path, capsys):
    assert cli.run("reward-eval", ["env=metaworld/reach", "episodes=1", "max_steps=60", "noise=0.2",
                            f"out={tmp_path}", "env.action_repeat=2"]) == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert list(saved["metrics"]) == ["env"] and saved["command"][:2] == ["robotrl", "reward-eval"]
    assert saved["env_info"]["max_episode_steps"] == 60 and "env" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["env=metaworld/reach", "reward=clip_tinyy"], "unknown reward 'clip_tinyy'; did you mean clip_tiny"),
    (["env=dmc/cartpole_swingup"], "needs a Meta-World env .*'dmc/cartpole_swingup'"),
    (["reward=clip_tiny"], "needs env=metaworld/<task>"),
    (["env=metaworld/reach", "noise=0.1,abc"], "noise='0.1,abc', expected comma-separated numbers"),
    (["env=metaworld/reach", "noise=0"], r"noise=\[0.0\], expected positive"),
    (["env=metaworld/reach", "episodes=0"], "episodes=0, expected an integer >= 1"),
    (["env=metaworld/reach", "epsiodes=3"], "unexpected argument 'epsiodes=3'"),
    (["env=metaworld/reach", "reward=clip_tiny", "reward.alpah=0.5"], "reward.alpah=0.5: no such key"),
    (["env=metaworld/reach", "env.imagesize=64"], "cannot compose the config .*Could not override .env.imagesize."),
])
def test_bad_input_is_one_config_error_line(args, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as err:
        cli.run("reward-eval", [*args, f"out={tmp_path}"])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "report.json").exists()


def test_run_report_refuses_a_suite_without_scripted_expert(compose_cfg):
    cfg = compose_cfg("env=gym/hopper", tiny=False)
    with pytest.raises(ConfigError, match="needs a Meta-World env .*'gym/hopper'"):
        re.run_report(cfg.env, {}, re.Settings())
