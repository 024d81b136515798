"""Rewards without a simulator on the arm: the success classifier and KAGI's template tracker on RobotEnv frames
(robot=sim: Meta-World reach behind the Robot interface and the safety layer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robotrl.demos import FORMAT_VERSION, episode_file, load_demos, save_episode
from robotrl.errors import ConfigError
from robotrl.types import Episode
from robotrl.workflows.run_env import load_robot_config, make_robot_env

SIZE = 84  # the template tracker follows the gripper to ~1 px at 84 px (at 48 px it drifts by several)
ENV = {"name": "metaworld/reach", "image_size": SIZE, "frame_stack": 1, "action_repeat": 2,
       "obs_type": "pixels_proprio", "max_episode_steps": 80}
# 10 ms periods, a 2 s watchdog and 5 s driver timeout: the test machine is shared (see tests/test_robot_env.py);
# ee_max_acceleration 200 m/s^2: the scripted expert's full 1 cm steps from rest in one 10 ms period
FAST = {"control_hz": 100, "ee_max_velocity": 1.0, "ee_max_acceleration": 200.0, "watchdog_ms": 2000,
        "driver_timeout_ms": 5000, "overrun_factor": 50}


def robot_cfg() -> dict:
    robot = load_robot_config("sim", {})
    robot["limits"].update(FAST)
    return robot


def arm(obs_type: str = "pixels_proprio"):
    return make_robot_env(robot_cfg(), {**ENV, "obs_type": obs_type}, seed=0, home_noise_m=0.02)


def expert_episode(env, seed: int, expert) -> tuple[Episode, list[np.ndarray]]:
    """One episode of Meta-World's scripted expert driving ``env`` (it reads the simulator's state, as a
    teleoperator sees the scene), and the reward frames ``env.render()`` gave after reset and after each step."""
    obs, _ = env.reset(seed=seed)
    pixels, state, actions, success, renders = [obs.get("pixels")], [obs["state"]], [], [], [env.render().copy()]
    done = False
    while not done:
        action = expert(env.unwrapped.robot.inner.raw._get_obs())
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        pixels.append(obs.get("pixels"))
        state.append(obs["state"])
        actions.append(action)
        success.append(info["success"])
        renders.append(env.render().copy())
    n = len(actions)
    pix = np.stack(pixels) if pixels[0] is not None else None
    episode = Episode({"pixels": pix, "state": np.stack(state)}, np.stack(actions), np.zeros(n, np.float32),
                      np.zeros(n, bool), np.array(success))
    return episode, renders


def write_demo_dir(out: Path, episodes: list[Episode]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for i, ep in enumerate(episodes):
        save_episode(out / episode_file(i), ep)
    meta = {"format_version": FORMAT_VERSION, "name": "metaworld/reach", "num_episodes": len(episodes),
            "image_size": SIZE, "state_dim": 8, "action_dim": 4, "camera": "corner2", "cameras": ["corner2"],
            "frame_stack": 1, "action_repeat": 2, "source": "scripted expert on robot=sim through RobotEnv"}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """2 solved expert episodes recorded through RobotEnv (pixels + proprio, 84 px), and an image-space KAGI plan
    for reach on the arm's camera (``kagi_plan.yaml``: what a person would annotate on a first frame; here projected
    from the sim's scene at the first episode's start)."""
    import yaml
    from robotrl.envs.demos import expert_policy
    from robotrl.rewards.kagi import MetaWorldKeypoints, image_plan
    from robotrl.rewards.kagi_plan import load_plan

    env = arm()
    expert = expert_policy("reach")
    out = tmp_path_factory.mktemp("arm")
    try:
        episodes = []
        for seed in (11, 12):
            episodes.append(expert_episode(env, seed, expert)[0])
            if seed == 11:
                env.reset(seed=seed)
                plan = image_plan(load_plan("reach"), MetaWorldKeypoints(env.unwrapped.scene), SIZE, SIZE)
                (out / "kagi_plan.yaml").write_text(yaml.safe_dump(plan))
    finally:
        env.close()
    assert all(ep.success[-1] for ep in episodes)  # the expert solves reach on the arm
    return write_demo_dir(out / "demos", episodes)


def test_robot_env_keeps_camera_frames_for_rewards_with_proprio_observations():
    """A proprio-only agent's reward model still sees the arm's camera (was: a black frame on every step)."""
    env = arm("proprio")
    try:
        obs, _ = env.reset(seed=1)
        assert set(obs) == {"state"}
        first = env.render()
        assert first.shape == (SIZE, SIZE, 3) and first.std() > 10  # a rendered scene, not zeros
        env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
        assert np.abs(env.render().astype(int) - first).sum() > 0  # the newest frame: the hand moved
    finally:
        env.close()


def test_success_classifier_fires_on_a_solved_proprio_episode(recorded):
    """docs/results.md "Learning on the sim arm": the classifier trained on the demos' final frames gave 0 on every
    training frame of solved episodes. Cause: the agents saw proprioception only, and RobotEnv.render() (the reward
    frame) was black unless pixels were observed. Here an expert episode on a proprio-only arm, scored by the
    reward wrapper as training scores it, must fire at its end and not at its start."""
    from robotrl.envs.demos import expert_policy
    from robotrl.rewards import wrap_env
    from robotrl.rewards.success_classifier import SuccessClassifier

    model = SuccessClassifier(demos=str(recorded), image_size=32, steps=100, final_frames=5, initial_frames=10)
    env = wrap_env(arm("proprio"), {"_target_": "x", "name": "success_classifier", "render_size": None}, model)
    expert = expert_policy("reach")
    try:
        env.reset(seed=21)
        fired, solved = [], []
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(expert(env.unwrapped.robot.inner.raw._get_obs()))
            done = terminated or truncated
            fired.append(info["model_success"])
            solved.append(info["success"])
    finally:
        env.close()
    assert solved[-1], "the expert did not solve this episode"
    assert sum(fired[-5:]) >= 3, f"the classifier fired on {sum(fired[-5:])} of the last 5 solved frames"
    assert not any(fired[:5]), "the classifier fired at the episode's start"


def test_kagi_tracker_reward_rises_along_recorded_arm_episodes(recorded, tmp_path):
    """`robotrl reward-eval recordings=DIR reward=kagi reward.plan=PLAN reward.locator=tracker`: KAGI from the arm's
    camera frames alone (no simulator), the tracker restarted on each episode's first frame."""
    from robotrl.rewards.kagi import KAGIReward

    from robotrl.workflows.reward_eval.recorded import recorded_report

    plan = recorded.parent / "kagi_plan.yaml"
    model = KAGIReward(plan=str(plan), locator="tracker")
    report = recorded_report({"kagi": model}, [recorded], tmp_path)
    metrics = report["metrics"]["kagi"]
    assert model.sim is None and metrics["value_order"]["episodes"] == 2
    assert metrics["value_order"]["rho"] > 0.8, metrics["value_order"]
    for ep in load_demos(recorded):
        model.reset(ep.obs["pixels"][0, :3].transpose(1, 2, 0))
        r = model(np.ascontiguousarray(ep.obs["pixels"][1:, :3].transpose(0, 2, 3, 1)))
        assert r[-5:].mean() > r[:5].mean() + 0.2, r.round(2)
    # frames of another size than the plan's annotation: one line, not a silently wrong reward
    small = np.zeros((1, 48, 48, 3), np.uint8)
    with pytest.raises(ConfigError, match="annotated on 84x84 frames; the reward's frames are 48x48"):
        KAGIReward(plan=str(plan), locator="tracker")(small)


def test_train_on_the_sim_arm_with_the_kagi_reward(compose_cfg, tmp_path):
    """`robotrl train robot=sim reward=kagi`: the packaged world plan for reach, projected on each episode's first
    camera frame, then the template tracker; the agent is trained on that reward, never the simulator's."""
    import csv

    from robotrl.workflows.train import Trainer

    cfg = compose_cfg(
        "env=metaworld/reach", "robot=sim", "reward=kagi", "robot.limits.control_hz=100",
        "robot.limits.ee_max_velocity=1.0", "robot.limits.ee_max_acceleration=200",
        "robot.limits.overrun_factor=1000", "robot.limits.watchdog_ms=5000", "robot.limits.driver_timeout_ms=5000",
        "env.image_size=84", "env.max_episode_steps=40", "frames=80",
        "seed_frames=40", "eval_episodes=0", "checkpoint_every_frames=40", "torch_threads=1", "device=cpu",
        "compare_baselines=false", "save_video=false", "tensorboard=false", "agent.batch_size=8",
        "agent.hidden_dim=32", "agent.feature_dim=16", "replay.capacity=1000", tiny=False)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.train()
    model = trainer.reward_model
    assert model.on_arm and model._mode() == "tracker" and model.plan.space == "image"
    assert model.plan.static == ("goal", "home") and set(model.tracker.points) == {"gripper"}
    rows = list(csv.DictReader((tmp_path / "run" / "train.csv").open()))
    assert len(rows) == 2
    for row in rows:  # 20 agent steps, each rewarded in [0, 1] by KAGI; the episode return is that reward
        assert 0.0 < float(row["model_reward"]) < 20.0 and float(row["reward_invalid"]) == 0.0
        assert float(row["episode_return"]) == pytest.approx(float(row["model_reward"]))
        assert float(row["gt_reward"]) != pytest.approx(float(row["model_reward"]))


def test_kagi_on_a_real_arm_needs_an_image_plan(recorded):
    """A real arm has no simulator to project a world plan with: refused in one line at bind (before training);
    an image-space plan annotated on its camera is fine."""
    from types import SimpleNamespace

    from robotrl.rewards.kagi import KAGIReward

    real = SimpleNamespace(unwrapped=SimpleNamespace(scene=None, robotrl_info={"robot": "franka"}))
    for kwargs in ({}, {"locator": "sim"}, {"locator": "tracker"}):
        with pytest.raises(ConfigError, match="kagi on robot 'franka': no simulator gives keypoints"):
            KAGIReward(plan="reach", **kwargs).bind(real)
    model = KAGIReward(plan=str(recorded.parent / "kagi_plan.yaml")).bind(real)
    assert model._mode() == "tracker"
