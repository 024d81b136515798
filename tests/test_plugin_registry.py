"""Plug-ins chosen by name register one way (robotrl.registry.Registry: name -> "module:Class", imported on use),
declare what workflows ask about them (robots: renders_env_scene / gives_reward; env suites: robotrl.envs.SUITES),
and importing the plug-in packages has no side effects."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import robotrl.hardware as hardware
from robotrl.envs import SUITES, EnvSpec, fixed_length_episodes, suite_info
from robotrl.hardware.cameras import CAMERAS
from robotrl.hardware.cameras.config import CAMERA_TYPES
from robotrl.hardware.teleop import TELEOPS

from robotrl.errors import ConfigError
from robotrl.registry import Registry, load_entry
from robotrl.workflows.run_env import robot_config


def test_name_picked_plugins_register_in_one_style():
    for registry in (hardware.ROBOTS, TELEOPS, CAMERAS):
        assert isinstance(registry, Registry)
        assert all(entry.count(":") == 1 for entry in registry.entries.values())
    assert CAMERAS.names() == sorted(CAMERA_TYPES)  # every type the config parser accepts can be built
    with pytest.raises(ConfigError, match=r"unknown robot 'ur5'; valid robots: \['franka', 'mock', 'sim', 'so101'\]"):
        hardware.ROBOTS.load("ur5")
    for name, suite in SUITES.items():  # each suite module exposes its builder (and, if listed, its tasks)
        assert callable(load_entry(f"{suite.module}:build")), name
        assert not suite.listed or callable(load_entry(f"{suite.module}:task_names")), name


def test_a_simulator_under_another_name_still_gets_the_envs_scene(monkeypatch):
    """``robot == "sim"`` sniffed the name: the same simulator registered as another arm lost the env's task and
    cameras. The robot class declares it instead."""
    entries = {**hardware.ROBOTS.entries, "sim_b": "robotrl.hardware.sim:SimRobot"}
    monkeypatch.setattr(hardware, "ROBOTS", Registry("robot", "robots", entries))
    spec = EnvSpec(suite="metaworld", task="push", image_size=48)
    robot = robot_config({"name": "sim_b"}, spec)
    assert (robot["task"], robot["cameras"], robot["image_size"]) == ("push", ["corner2"], 48)
    assert robot_config({"name": "mock"}, spec) == {"name": "mock"}
    assert hardware.robot_class("sim_b").gives_reward and not hardware.robot_class("mock").gives_reward


def test_suites_declare_episode_length_and_default_camera():
    assert not fixed_length_episodes({"name": "gym/hopper"}) and fixed_length_episodes({"name": "dmc/cartpole_balance"})
    assert suite_info("metaworld").default_camera == "corner2" and suite_info("libero").proprio_only
    with pytest.raises(ConfigError, match="unknown env suite 'atari'"):
        suite_info("atari")


def test_importing_the_plugin_packages_changes_nothing():
    """envs/__init__ used to import triton at import time (now inside ensure_gl, before the first GL context)."""
    code = ("import os, sys; import robotrl.envs, robotrl.hardware, robotrl.agents, robotrl.rewards; "
            "print('triton' in sys.modules, os.environ.get('MUJOCO_GL'))")
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None"]


def test_composing_registers_the_resolvers_it_needs():
    """run_tag was registered only as a side effect of importing robotrl.config; the composers register it now."""
    from omegaconf import OmegaConf

    from robotrl.config import register_hydra
    from robotrl.overrides import compose_config

    OmegaConf.clear_resolver("run_tag")
    try:
        assert compose_config(["reward=clip"]).run_dir.endswith("/drqv2-clip/seed1")
    finally:
        register_hydra()
