"""RobotEnv (training on an arm) with a camera attached by config and ``robot_env.live_view``: pixels from a video
file, a frozen camera ends the episode (the arm holds, the step is flagged, the camera named) instead of feeding the
learner a stale frame, and the .rrd holds the frames, policy vs executed actions, safety events and rewards."""

from __future__ import annotations

import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf
from robotrl.hardware.cameras.opencv import OpenCVCamera
from robotrl.hardware.robot import RobotState

from tests.camera_helpers import write_video

pytest.importorskip("cv2", reason="file-fed cameras need opencv-python-headless (the cameras extra, in dev)")
pytest.importorskip("rerun", reason="the live view needs rerun-sdk (the live extra, in dev)")

from robotrl.live_view import read_rrd  # noqa: E402

ENV = {"name": "metaworld/reach", "obs_type": "pixels", "image_size": 32, "frame_stack": 2, "action_repeat": 2,
       "max_episode_steps": 40}


def mock_with_camera(video) -> dict:
    from robotrl.workflows.run_env import load_robot_config

    cam = {"type": "opencv", "path": str(video), "fps": 30, "loop": True, "crop": [0, 8, 48, 48], "resize": 32,
           "max_frame_age_ms": 300}
    cfg = load_robot_config("mock", {}, {"cameras": {"front": cam}})
    cfg["limits"].update(watchdog_ms=5000, driver_timeout_ms=5000, max_consecutive_overruns=1000)
    return cfg


def test_frozen_camera_ends_the_episode_and_the_live_view_shows_it(tmp_path, monkeypatch):
    from robotrl.workflows.run_env import make_robot_env

    freeze = threading.Event()
    grab = OpenCVCamera._grab
    monkeypatch.setattr(OpenCVCamera, "_grab", lambda self: (time.sleep(0.02), None)[1] if freeze.is_set()
                        else grab(self))
    rrd = tmp_path / "train.rrd"
    env = make_robot_env(mock_with_camera(write_video(tmp_path / "v.avi", 60)), ENV, seed=0, live_view=str(rrd))
    try:
        obs, _ = env.reset(seed=0)
        assert obs["pixels"].shape == (6, 32, 32) and obs["pixels"][0, 2, 2] > 200  # the video's red patch
        action = np.array([0.5, 0.0, 0.0, -1.0], np.float32)
        for _ in range(3):
            obs, _, _, truncated, info = env.step(action)
            assert not truncated and "safety_stop" not in info
        freeze.set()
        time.sleep(1.5)  # 5x max_frame_age_ms: the next observation has no valid frame
        before = obs
        obs, _, terminated, truncated, info = env.step(action)
        assert truncated and not terminated and info["stale_observation"] is True
        assert "camera 'front' stale" in info["safety_stop"] and env.robot.state is RobotState.HOLD
        np.testing.assert_array_equal(obs["pixels"][3:], before["pixels"][3:])  # no new frame was made up
    finally:
        env.close()
    data = read_rrd(rrd)
    assert [r["step"] for r in data["camera/front"]] == [0, 1, 2]  # the stale step logs no frame
    assert [r["step"] for r in data["action/policy"]] == [0, 1, 2, 3]
    executed = np.array([r["Scalars:scalars"] for r in data["action/executed"]])
    assert executed.shape == (4, 4) and np.allclose(executed[:3, 0], 0.5, atol=1e-6)  # within the mock's limits
    texts = [(t, lvl) for r in data["safety"] for t, lvl in zip(r["TextLog:text"], r["TextLog:level"], strict=True)]
    assert any(t.startswith("camera_error") and "camera=front" in t and lvl == "WARN" for t, lvl in texts), texts


class HalfReward(gym.Wrapper):
    """A stand-in reward layer (as ``reward=`` wraps a RobotEnv): reward 0.5 and a success label on step 2."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        self.n = getattr(self, "n", 0) + 1
        return obs, 0.5, terminated, truncated, {**info, "model_success": self.n == 2}


def test_training_env_config_path_logs_rewards(tmp_path):
    from robotrl.workflows.run_env import make_run_env, with_live_rewards

    rrd = tmp_path / "run.rrd"
    cfg = OmegaConf.create({"robot": mock_with_camera(write_video(tmp_path / "v.avi", 60)), "env": ENV,
                            "reward": {"name": "success_classifier"},
                            "robot_env": {"home_noise_m": 0.0, "operator": None, "live_view": str(rrd)}})
    base = make_run_env(cfg, seed=0)
    env = with_live_rewards(HalfReward(base), base)
    try:
        env.reset(seed=0)
        for _ in range(2):
            env.step(np.zeros(4, np.float32))
    finally:
        env.close()
    data = read_rrd(rrd)
    assert [r["Scalars:scalars"] for r in data["reward"]] == [[0.5], [0.5]]
    assert [(r["step"], r["Scalars:scalars"]) for r in data["success"]] == [(0, [0.0]), (1, [1.0])]
    assert [r["step"] for r in data["camera/front"]] == [0, 1]


def test_train_on_the_sim_arm_writes_the_live_view(tmp_path):
    """`robotrl train robot=sim robot_env.live_view=FILE.rrd` (the trainer's own env path): every agent step of the
    run is in the .rrd with its camera frame, the policy's vs the executed action, and the simulator's reward."""
    from hydra import compose, initialize_config_module

    from robotrl.config import register_hydra
    from robotrl.workflows.train import Trainer
    from tests.deploy_helpers import REACH_OVERRIDES

    rrd = tmp_path / "train.rrd"
    overrides = [*REACH_OVERRIDES, "robot=sim", "robot.limits.overrun_factor=1000", "robot.limits.watchdog_ms=5000",
                 "robot.limits.driver_timeout_ms=5000", "env.max_episode_steps=20", "frames=40", "seed_frames=20",
                 "eval_episodes=0", "checkpoint_every_frames=1000", f"robot_env.live_view={rrd}"]
    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    Trainer(cfg, tmp_path / "run").train()
    data = read_rrd(rrd)
    steps = list(range(20))  # 40 frames at action_repeat 2, two episodes of 10 agent steps
    assert [r["step"] for r in data["camera/corner2"]] == steps
    assert np.asarray(data["camera/corner2"][0]["Image:buffer"][0]).size == 32 * 32 * 3
    assert [r["step"] for r in data["action/policy"]] == steps == [r["step"] for r in data["action/executed"]]
    assert [r["step"] for r in data["reward"]] == steps and all(r["Scalars:scalars"][0] >= 0 for r in data["reward"])
