"""One control loop on an arm: `robotrl deploy`, record, replay and training all act through RobotEnv (issue 24 item 0).

Each test here shows a place where deploy's own copy of the loop behaved differently from RobotEnv's, or a piece the
copies did not share (the dry run, the safety event kinds, the deterministic policy from a checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# a 2 s watchdog: the test machine is shared (see tests/deploy_helpers.py SLOW_CPU)
MOCK_LIMITS = {"limits.watchdog_ms": 2000, "limits.driver_timeout_ms": 5000, "limits.max_consecutive_overruns": 1000}


@pytest.fixture(scope="module")
def reach_cfg():
    from hydra import compose, initialize_config_module

    from robotrl.config import register_hydra

    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        return compose("config", overrides=["env=metaworld/reach", "env.obs_type=pixels_proprio",
                                            "env.image_size=32", "env.frame_stack=2"])


@pytest.fixture
def constant_policy(monkeypatch, reach_cfg, tmp_path):
    """deploy's local policy replaced by a constant one (no training): the checkpoint is never read."""
    from robotrl.workflows import deploy as deploy_module

    def load(checkpoint: Any, device: str) -> Any:
        return (reach_cfg, 4, lambda obs: np.array([0.2, 0.0, 0.0, -1.0], np.float32), None,
                Path(checkpoint) / "checkpoints" / "fake.pt", [])

    monkeypatch.setattr(deploy_module, "_local_policy", load)
    return str(tmp_path / "run")


def test_deploy_on_sim_puts_the_scene_back_every_episode_as_training_does(constant_policy, tmp_path, monkeypatch):
    """robot=sim in training (RobotEnv) resets the objects at every home (`reset_scene`); deploy built its own robot
    config without it, so a second deploy episode started with the objects where the first left them."""
    from robotrl.hardware.sim import SimRobot

    homes: list[bool] = []
    original = SimRobot._home
    monkeypatch.setattr(SimRobot, "_home", lambda self: (homes.append(self.reset_scene), original(self))[1])
    from robotrl.workflows.deploy import deploy

    summary = deploy(constant_policy, robot="sim", hz=50, episodes=2, steps=2, out=str(tmp_path / "out"),
                     robot_overrides=MOCK_LIMITS)
    assert summary["episodes"] == 2 and summary["error"] is None
    assert homes == [True, True], homes


def test_robot_env_dry_run_reaches_no_driver(monkeypatch):
    """dry_run is an option of the one loop (RobotEnv), not a branch of deploy's copy: observations are read, actions
    checked and paced, but no homing, hold, resume or command reaches the driver."""
    from robotrl.hardware import make_robot
    from robotrl.hardware.mock import MockRobot
    from robotrl.hardware.robot_env import RobotEnv

    from robotrl.workflows.run_env import load_robot_config

    calls: list[str] = []
    for hook in ("_send", "_home", "_hold"):
        original = getattr(MockRobot, hook)
        monkeypatch.setattr(MockRobot, hook, lambda self, *a, _h=hook, _o=original: (calls.append(_h), _o(self, *a))[1])
    layer = make_robot(load_robot_config("mock", {**MOCK_LIMITS, "image_size": 32}))
    env = RobotEnv(layer, obs_type="pixels_proprio", image_size=32, frame_stack=2, action_repeat=2, max_agent_steps=3,
                   dry_run=True)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["pixels"].shape == (6, 32, 32) and obs["state"].shape == (8,)
        for step in range(3):
            obs, _, _, truncated, info = env.step(np.array([0.5, 0.0, 0.0, 1.0], np.float32))
            assert "sent_action" not in info and info["sent_actions"] == [] and len(env.send_times) == 2
            assert truncated == (step == 2) and "safety_stop" not in info
        assert calls == [], calls
    finally:
        env.close()


def test_every_safety_event_kind_is_a_safety_event_member():
    """The kinds the safety layer emits are one enum (string values unchanged: logs and summaries read the same)."""
    from robotrl.hardware import make_robot
    from robotrl.hardware.robot import Action, ActionMode

    from robotrl.safety_events import INTERVENTIONS, SafetyEvent
    from robotrl.workflows.run_env import load_robot_config

    layer = make_robot(load_robot_config("mock", {"limits.watchdog_ms": 2000}))
    with layer:
        layer.send_action(Action(ActionMode.EE_DELTA, np.array([0.5, 0.0, 0.0]), 1.0))  # clipped: ee_step
        layer.hold()
        layer.estop("test")
    kinds = [e["kind"] for e in layer.events]
    assert {"connect", "ee_step", "hold", "estop", "disconnect"} <= set(kinds), kinds
    assert all(isinstance(k, SafetyEvent) for k in kinds), kinds
    assert json.loads(json.dumps(layer.events[0], default=str))["kind"] == "connect"
    assert json.loads(json.dumps(dict(layer.counts)))["ee_step"] >= 1
    assert SafetyEvent.WATCHDOG in INTERVENTIONS and "watchdog" in INTERVENTIONS and "connect" not in INTERVENTIONS


# ------------------------------------------------------------------------------------------------ the loaded policy
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.deploy_helpers import train_reach_policy

    return train_reach_policy(tmp_path_factory.mktemp("reach"))


def test_eval_deploy_and_the_server_act_with_the_one_loaded_policy(run_dir, tmp_path, monkeypatch):
    """`load_policy` is the one deterministic policy: eval, deploy and the policy server act at the same step in
    eval mode (on 6f7d38a eval/deploy/serve used int64's maximum and sim2real 2**62, each with its own loader)."""
    from robotrl.envs import make_env

    from robotrl.workflows.deploy import deploy
    from robotrl.workflows.evaluate import evaluate_checkpoint
    from robotrl.workflows.policy import DETERMINISTIC_STEP, load_policy
    from robotrl.workflows.policy_server import served_checkpoint

    policy = load_policy(run_dir, "cpu")
    calls: list[tuple[int, bool]] = []
    agent_class = type(policy.agent)
    original = agent_class.act
    monkeypatch.setattr(agent_class, "act", lambda self, o, step, eval_mode: (
        calls.append((step, eval_mode)), original(self, o, step, eval_mode))[1])
    env = make_env(policy.cfg.env, seed=0)
    obs, _ = env.reset(seed=0)
    env.close()
    np.testing.assert_array_equal(policy(obs), policy(obs))  # deterministic
    assert policy.action_dim == 4 and policy.checkpoint.name.startswith("frame_")
    policy.reset()
    served_checkpoint(run_dir).act(obs, True)
    evaluate_checkpoint(str(run_dir), 1, 0, -1.0, -1e9, False, str(tmp_path / "eval"), "cpu", baselines=False)
    deploy(str(run_dir), robot="sim", hz=50, steps=2, dry_run=True, out=str(tmp_path / "deploy"),
           robot_overrides=MOCK_LIMITS)
    assert len(calls) > 5 and set(calls) == {(DETERMINISTIC_STEP, True)}, set(calls)
