"""The env a run acts in: ``make_env`` for a simulator, :class:`~robotrl.hardware.robot_env.RobotEnv` for ``robot=``.

This choice lives in a workflow because it needs both plug-in kinds (``robotrl.envs`` for the task's settings and
``robotrl.hardware`` for the arm) and plug-ins may not import each other (``docs/architecture.md``, "Layers";
``robot=sim`` already builds its scene through ``make_env``, so ``envs -> hardware`` would be a cycle).

On a robot the ``env`` config still names the task (``env=metaworld/reach``: its demos, per-task agent settings and
run directory) and gives the observation pipeline (``image_size``, ``frame_stack``, ``action_repeat``,
``obs_type``, ``camera``, ``max_episode_steps`` in env steps, default Meta-World's 500); ``robot=sim`` renders that
task's scene with that camera. ``robot_env.home_noise_m`` is the randomised start, ``robot_env.operator``
(``module:function`` returning an Operator) a person who may take over, ``robot_env.live_view`` (FILE.rrd or
HOST:PORT) a rerun view of every step: camera frames, policy vs executed actions, safety events, rewards.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from omegaconf import OmegaConf

from robotrl.config import config_dict
from robotrl.errors import ConfigError


class Operator(Protocol):
    """A human-intervention hook: called every agent step with the observation the policy sees.

    Return None to let the policy drive, or an action in the policy's units ([-1, 1]^A) to take over for this
    step; the first non-None after None is a take-over, the first None after that a hand-back.
    """

    def __call__(self, step: int, obs: dict[str, np.ndarray]) -> np.ndarray | None: ...


@dataclass
class ScriptedOperator:
    """Takes over during the agent steps ``[start, end)`` of each ``(start, end, action)`` segment (tests, demos)."""

    segments: list[tuple[int, int, Any]]

    def __call__(self, step: int, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        for start, end, action in self.segments:
            if start <= step < end:
                return np.asarray(action, dtype=np.float32)
        return None


def load_operator(spec: str) -> Operator:
    """``module:attr``: a callable returning an :class:`Operator` (e.g. a keyboard or spacemouse reader)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"operator={spec!r}, expected 'module:function' returning an Operator")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"operator={spec!r} cannot be imported ({type(exc).__name__}: {exc})") from None
    return factory()


DEFAULT_MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length (env steps)


def uses_robot(cfg: Any) -> bool:
    """True when the run's ``robot=`` names an arm (not ``none``)."""
    name = OmegaConf.select(cfg, "robot.name") if OmegaConf.is_config(cfg) else (cfg.get("robot") or {}).get("name")
    return name not in (None, "none")


def compose_robot(robot: str, overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None,
                  robot_env: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{"robot": ..., "robot_env": ...}`` of ``robot=<robot>`` composed by hydra as a training run composes it (the
    group's yaml and the structured defaults it pulls), then ``base``, then the command line's ``robot.KEY=VALUE``
    ``overrides`` (which win); ``robot_env`` sets ``robot_env.KEY`` as ``robot_env.KEY=VALUE`` would.

    A string value is parsed by hydra's override parser, so ``robot.realtime=off`` is the same value here as in
    ``robotrl train``; any other value (from code) is taken as it is. ``cameras`` is replaced, not merged: a list of
    names (mock, sim) may become a mapping of devices."""
    from robotrl.hardware import robot_names
    from robotrl.overrides import compose_config, group_options

    if robot not in robot_names() or robot not in group_options("robot"):
        raise ConfigError(f"unknown robot {robot!r}; valid robots: {', '.join(robot_names())}")
    env_words = [f"robot_env.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in (robot_env or {}).items()]
    composed = compose_config([f"robot={robot}", *env_words])
    cfg = OmegaConf.create(OmegaConf.to_container(composed.robot))  # not in struct mode: make_robot names bad keys
    overrides, base = overrides or {}, base or {}
    if "cameras" in overrides or "cameras" in base:
        cfg.pop("cameras", None)
    cfg.merge_with(base)
    _apply_overrides(cfg, "robot", overrides)
    return {"robot": OmegaConf.to_container(cfg, resolve=True),  # type: ignore[dict-item]
            "robot_env": OmegaConf.to_container(composed.robot_env, resolve=True)}  # type: ignore[dict-item]


def _apply_overrides(cfg: Any, group: str, overrides: dict[str, Any]) -> None:
    """``group.KEY=VALUE`` command-line ``overrides`` onto ``cfg`` (the group's composed settings), each value read
    by :func:`_parsed`; a value the settings cannot take is one ConfigError line."""
    for key, value in overrides.items():
        parsed = _parsed(f"{group}.{key}", value)  # a sweep is its own one-line error
        try:
            OmegaConf.update(cfg, key, parsed, merge=True)
        except Exception as exc:
            raise ConfigError(f"bad {group} override {key}={value!r}: {' '.join(str(exc).split())}") from None


def _parsed(key: str, value: Any) -> Any:
    """``value`` as hydra reads ``key=value`` on a command line (a string), or as it is (a value from code). A string
    hydra's grammar cannot read at all stays that string (``~/calibration.json``: hydra wants it quoted), or the JSON
    mapping or list it spells (hydra wants bare keys), as these commands always took them."""
    if not isinstance(value, str):
        return value
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(f"{key}={value}")
    except HydraException:  # OverrideParseException, or the lexer's token error
        return _json_or_string(value)
    if override.is_sweep_override():
        raise ConfigError(f"{key}={value!r} is a sweep; a command outside hydra takes one value")
    return override.value()


def compose_teleop(teleop: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``teleop:`` settings of ``teleop=<teleop>`` composed by hydra as a training run composes them, then the
    command line's ``teleop.KEY=VALUE`` ``overrides`` parsed as hydra parses them (``record`` builds its device so)."""
    from robotrl.overrides import compose_config, group_options

    if teleop not in group_options("teleop"):
        raise ConfigError(f"unknown teleop {teleop!r}; valid: {sorted(group_options('teleop'))}")
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config([f"teleop={teleop}"]).teleop))
    _apply_overrides(cfg, "teleop", overrides or {})
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _json_or_string(value: str) -> Any:
    """A JSON mapping or list (``robot.cameras='{"front": {...}}'``, which hydra's grammar cannot read: it wants bare
    keys) as data; anything else as the string it is."""
    if value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def load_robot_config(robot: str, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``robot:`` settings of :func:`compose_robot`: what the commands outside hydra (deploy, check-frame, record,
    replay, sim2real) build robots with, the same as a training run's ``robot=<robot> robot.KEY=VALUE``."""
    return compose_robot(robot, overrides, base)["robot"]


def sim_scene(env_spec: Any) -> dict[str, Any]:
    """What an env's settings fix on ``robot=sim``: it shows the env's task through its camera(s) at its image size
    and puts the scene back at every home (``reset_scene``), as the training env's reset does."""
    from robotrl.envs import suite_info
    from robotrl.envs.rendering import camera_tuple

    if env_spec.suite != "metaworld":
        raise ConfigError(f"robot=sim is a Meta-World scene; env={env_spec.name} is not (use env=metaworld/<task>)")
    cameras = camera_tuple(env_spec.camera, suite_info(env_spec.suite).default_camera)
    return {"task": env_spec.task, "cameras": list(cameras), "image_size": env_spec.image_size, "reset_scene": True}


def robot_config(robot: str | Any, env_spec: Any, hz: float | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one way a robot config is built for an env (training on an arm, deploy, record, replay).

    ``robot`` is a name (``configs/robot/<robot>.yaml``; the env's :func:`sim_scene` on ``robot=sim``; then the
    command line's ``robot.KEY=VALUE`` ``overrides``, which win) or a config hydra already composed with its
    overrides (a training run; the env's scene is set on it). ``hz`` sets ``limits.control_hz``."""
    name = robot if isinstance(robot, str) else config_dict(robot, "robot config").get("name")
    from robotrl.hardware import robot_class

    scene = sim_scene(env_spec) if robot_class(name).renders_env_scene else None  # robot=sim: the env's own scene
    if isinstance(robot, str):
        cfg = load_robot_config(robot, overrides or {}, scene)
    else:
        cfg = {**config_dict(robot, "robot config"), **(scene or {})}
    if hz is not None:
        cfg.setdefault("limits", {})["control_hz"] = hz
    return cfg


def make_robot_env(robot_cfg: Any, env_cfg: Any, seed: int, home_noise_m: float = 0.0, operator: Any = None,
                   live_view: str | None = None, robot_overrides: dict[str, Any] | None = None,
                   joint: bool = False) -> Any:
    """A connected :class:`RobotEnv` over the arm ``robot_cfg`` names or holds (:func:`robot_config`, behind its
    safety layer); with ``live_view`` (FILE.rrd or HOST:PORT) each step is shown in rerun
    (:class:`robotrl.live_view.ArmLog`); ``joint``: its joint-space variant
    (:class:`~robotrl.hardware.robot_env_joint.JointRobotEnv`)."""
    from robotrl.envs import parse_env_cfg
    from robotrl.hardware import make_robot
    from robotrl.hardware.robot_env import RobotEnv
    from robotrl.hardware.robot_env_joint import JointRobotEnv
    from robotrl.live_view import open_live_view

    spec = parse_env_cfg(env_cfg)
    robot = make_robot(robot_config(robot_cfg, spec, overrides=robot_overrides))
    max_env_steps = spec.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS
    info = {"name": spec.name, "suite": "robot", "task": spec.task, "seed": seed, "image_size": spec.image_size,
            "frame_stack": spec.frame_stack, "action_repeat": spec.action_repeat, "max_episode_steps": max_env_steps}
    env_cls = JointRobotEnv if joint else RobotEnv
    env = env_cls(robot, obs_type=spec.obs_type, image_size=spec.image_size, frame_stack=spec.frame_stack,
                   action_repeat=spec.action_repeat, max_agent_steps=math.ceil(max_env_steps / spec.action_repeat),
                   home_noise_m=float(home_noise_m), info=info, operator=operator,
                   live=open_live_view(live_view, robot, f"robotrl {spec.name}"))
    try:
        robot.connect()
    except BaseException:
        env.close()  # the live view's file is closed too
        raise
    return env


class LiveRewards(gym.Wrapper):
    """Adds the reward a reward model gives (outside the RobotEnv: ``reward=`` wraps it) to the RobotEnv's live view,
    at the step the RobotEnv just logged: ``reward`` (what the learner gets) and ``model_reward``, ``success``."""

    def __init__(self, env: gym.Env, live: Any) -> None:
        super().__init__(env)
        self.live = live

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        extra = {"success": bool(info["model_success"])} if "model_success" in info else {}
        self.live.view.step(self.live.step - 1, reward=float(reward), **extra)
        return obs, reward, terminated, truncated, info


def with_live_rewards(env: gym.Env, base_env: Any) -> gym.Env:
    """``env`` (the reward layer over ``base_env``) logging its rewards to ``base_env``'s live view, if it has one."""
    live = getattr(base_env, "live", None)
    return env if live is None or env is base_env else LiveRewards(env, live)


def check_robot_reward(cfg: Any) -> None:
    """``reward=env`` on an arm whose driver gives no ground truth (every real arm) would train on a reward of 0:
    refuse it in one line, before anything connects."""
    from robotrl.hardware import robot_class
    from robotrl.rewards import is_env_reward

    name = OmegaConf.select(cfg, "robot.name")
    if is_env_reward(cfg.get("reward")) and not robot_class(name).gives_reward:
        raise ConfigError(f"robot={name} gives no reward (only robot=sim's simulator does); choose a reward model, "
                          f"e.g. reward=success_classifier reward.demos=DIR or reward=kagi")


def make_run_env(cfg: Any, seed: int) -> gym.Env:
    """The training/eval env of a run config: a robot's when ``robot=`` names one, else the simulator's."""
    if uses_robot(cfg):
        check_robot_reward(cfg)
        noise = OmegaConf.select(cfg, "robot_env.home_noise_m", default=0.0)
        spec = OmegaConf.select(cfg, "robot_env.operator", default=None)
        operator = None
        if spec:  # e.g. a spacemouse or keyboard reader (the Operator protocol above, shared with deploy)
            operator = load_operator(str(spec))
        live_view = OmegaConf.select(cfg, "robot_env.live_view", default=None)
        env = make_robot_env(cfg.robot, cfg.env, seed, home_noise_m=noise, operator=operator, live_view=live_view)
        # a run is a command-line process: rearm() is not something its user can call
        env.robot.rearm_hint = ("check the arm and its surroundings, then run the command again (a new process "
                                "starts with the e-stop released)")
        return env
    from robotrl.envs import make_env

    return make_env(cfg.env, seed=seed)
