"""Environment factory: every suite behind one observation/action contract (see ``robotrl.contract``).

``make_env(cfg, seed)`` builds a suite's base env and wraps it (``robotrl.envs.wrappers``) so that
observations are ``{"pixels": uint8 (3*views*frame_stack, S, S), "state": float32 (D,)}`` (per ``obs_type``;
``env.camera`` may list several cameras, and ``*_proprio`` types put the robot's proprioception in "state"),
actions are float32 in [-1, 1], rewards are summed over ``action_repeat`` and time limits are ``truncated``.
``max_episode_steps`` counts simulator steps (as the suites do); the agent sees ceil(max / action_repeat).

Suites register in the ``SUITES`` table: each :class:`Suite` names its module (imported only when that suite is
used, so building a dm-control env never imports Meta-World and vice versa; the module's ``build(spec, seed)``
makes the base env and ``task_names()`` lists its tasks) and declares what workflows ask about it (proprioception,
fixed-length episodes, its default camera). Importing this package does nothing else: ``MUJOCO_GL`` defaults to
``egl`` and triton is loaded before any GL driver inside ``ensure_gl`` (``make_env``, task lists), before mujoco
or dm_control are imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robotrl.config import config_dict
from robotrl.contract import OBS_TYPES, PROPRIO_OBS_TYPES
from robotrl.errors import ConfigError
from robotrl.params import require
from robotrl.registry import load_entry


@dataclass(frozen=True)
class Suite:
    """An env suite's registration: ``module`` (``build(spec, seed) -> (base env, info)``, ``task_names()``) and
    what it declares: ``listed`` (its tasks are in :func:`list_envs`: the package is always installed; LIBERO is an
    extra whose tasks are ``<benchmark>/<task>``), ``proprio`` (the base env defines ``proprio_index``),
    ``proprio_only`` (its state is the robot's proprioception only), ``fixed_length`` (every episode runs to the
    time limit: data-parallel ranks update in step), ``default_camera`` (``env.camera=null``; None: per task)."""

    module: str
    listed: bool = True
    proprio: bool = False
    proprio_only: bool = False
    fixed_length: bool = True
    default_camera: str | None = None


SUITES: dict[str, Suite] = {
    "dmc": Suite("robotrl.envs.dmc"),
    "metaworld": Suite("robotrl.envs.metaworld", proprio=True, default_camera="corner2"),
    "gym": Suite("robotrl.envs.gym_mujoco", fixed_length=False),  # MuJoCo robots fall: episodes end early
    "libero": Suite("robotrl.envs.libero", listed=False, proprio=True, proprio_only=True,
                    default_camera="agentview"),
}
SUITE_NAMES = tuple(name for name, s in SUITES.items() if s.listed)  # the suites of list_envs()
OPTIONAL_SUITES = tuple(name for name, s in SUITES.items() if not s.listed)  # `pip install 'robotrl[libero]'`
PROPRIO_SUITES = tuple(name for name, s in SUITES.items() if s.proprio)
PROPRIO_ONLY_SUITES = tuple(name for name, s in SUITES.items() if s.proprio_only)


def suite_info(name: str) -> Suite:
    """What suite ``name`` declares (see :class:`Suite`); ConfigError for an unknown suite."""
    if name not in SUITES:
        raise ConfigError(f"unknown env suite {name!r}; valid suites: {list(SUITES)}")
    return SUITES[name]


def fixed_length_episodes(env_cfg: Any) -> bool:
    """Whether every episode of the env ``env_cfg`` names runs to its time limit (``Suite.fixed_length``)."""
    return suite_info(parse_env_cfg(env_cfg).suite).fixed_length

# DrQ-v2 (cfgs/task/{easy,medium,hard}.yaml and the per-task files); every other dm-control task is medium.
_DRQV2_EASY = frozenset(
    {
        "cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup", "ball_in_cup_catch",
        "finger_spin", "hopper_stand", "pendulum_swingup", "walker_stand", "walker_walk",
    }
)  # fmt: skip
_DRQV2_HARD = frozenset({"humanoid_run", "humanoid_stand", "humanoid_walk"})
_BUDGETS = {
    "easy": (1_100_000, "linear(1.0,0.1,100000)"),
    "medium": (3_100_000, "linear(1.0,0.1,500000)"),
    "hard": (30_100_000, "linear(1.0,0.1,2000000)"),
    "drm_metaworld": (2_100_000, "linear(1.0,0.1,500000)"),  # DrM cfgs/task/metaworld.yaml
}


@dataclass(frozen=True)
class EnvSpec:
    """A validated env config (the generic keys with their defaults filled in)."""

    suite: str
    task: str
    image_size: int = 84
    frame_stack: int = 3
    action_repeat: int = 2
    obs_type: str = "pixels"
    camera: Any = None
    max_episode_steps: int | None = None
    video_size: int = 128
    fast_render: bool = True
    reward_function_version: str = "v2"

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.task}"

    @property
    def num_views(self) -> int:
        """Camera views per pixel frame (``camera`` may be a list)."""
        return len(self.camera) if isinstance(self.camera, tuple) else 1


# ---------------------------------------------------------------------------------------------- task lists
def _task_list(suite: str) -> list[str]:
    """Valid tasks of a listed ``suite``; sets up GL first because listing imports dm_control/mujoco."""
    from robotrl.envs.rendering import ensure_gl

    ensure_gl()
    return load_entry(f"{SUITES[suite].module}:task_names")()


def list_envs() -> list[str]:
    """Every valid env name: ``dmc/<domain>_<task>``, ``metaworld/<task>``, ``gym/<snake_case>``."""
    return [f"{suite}/{task}" for suite in SUITE_NAMES for task in _task_list(suite)]


# ------------------------------------------------------------------------------------------- config parsing
def _libero_task(cfg: dict[str, Any], task: Any) -> str:
    """``<benchmark>/<task>`` from ``env.benchmark`` + ``env.task`` (index or name), or a task already in that form;
    the benchmark is checked here, the task when the env is built (its list needs the libero package)."""
    from robotrl.envs.libero import split_task

    benchmark = cfg.get("benchmark")
    if benchmark is not None and task is not None and "/" not in str(task):
        task = f"{benchmark}/{task}"
    return "/".join(split_task(str(task)))


def _suite_and_task(cfg: dict[str, Any]) -> tuple[str, str]:
    name = cfg.get("name")
    suite, task = cfg.get("suite"), cfg.get("task")
    if suite == "libero" or (suite is None and str(name).startswith("libero/")):
        task = _libero_task(cfg, task if task is not None else str(name).partition("/")[2])
        if name is not None and str(name) != f"libero/{task}":
            raise ConfigError(f"env name {name!r} disagrees with benchmark/task {task!r} (expected 'libero/{task}')")
        return "libero", task
    if name is not None and (suite is None or task is None):
        if "/" not in str(name):
            raise ConfigError(f"env name {name!r} must look like '<suite>/<task>', suites: "
                              f"{list(SUITE_NAMES + OPTIONAL_SUITES)}")
        suite, task = str(name).split("/", 1) if suite is None else (suite, str(name).split("/", 1)[1])
    if suite not in SUITE_NAMES:
        raise ConfigError(f"unknown env suite {suite!r}; valid suites: {list(SUITE_NAMES + OPTIONAL_SUITES)}")
    task = str(task).removesuffix("-v3") if suite == "metaworld" else str(task)
    valid = _task_list(suite)
    if task not in valid:
        raise ConfigError(f"unknown {suite} task {task!r}; valid {suite} tasks: {valid}")
    if name is not None and str(name) != f"{suite}/{task}":
        raise ConfigError(f"env name {name!r} disagrees with suite/task {suite!r}/{task!r}")
    return suite, task


def _positive_int(cfg: dict[str, Any], key: str, default: int) -> int:
    value = cfg.get(key)
    value = default if value is None else value
    require("env", positive_int={key: value})
    return int(value)


def _camera(value: Any) -> Any:
    """One camera (name, id or None for the suite's default) or a non-empty list of them (a tuple: hashable)."""
    if value is None or isinstance(value, (str, int)) and not isinstance(value, bool):
        return value
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes, Mapping)):
        cams = tuple(value)
        if cams and all(c is None or isinstance(c, (str, int)) and not isinstance(c, bool) for c in cams):
            return cams[0] if len(cams) == 1 else cams
    raise ConfigError(f"env.camera={value!r}, expected a camera name/id or a non-empty list of them")


def parse_env_cfg(cfg: Any) -> EnvSpec:
    """Validate ``cfg`` (dict or DictConfig) and fill in defaults; raise ConfigError on a bad value."""
    cfg = config_dict(cfg, "env config")
    suite, task = _suite_and_task(cfg)
    obs_type = cfg.get("obs_type") or "pixels"
    if obs_type not in OBS_TYPES:
        raise ConfigError(f"unknown env.obs_type {obs_type!r}; valid: {list(OBS_TYPES)}")
    if obs_type in PROPRIO_OBS_TYPES and suite not in PROPRIO_SUITES:
        raise ConfigError(f"env.obs_type={obs_type!r}: proprioception is defined for suites {list(PROPRIO_SUITES)}, "
                          f"not {suite!r}; use obs_type state or pixels_state")
    if suite in PROPRIO_ONLY_SUITES and obs_type not in ("pixels", *PROPRIO_OBS_TYPES):
        raise ConfigError(f"env.obs_type={obs_type!r}: {suite}'s state is the robot's proprioception only; use "
                          f"obs_type pixels, proprio or pixels_proprio")
    max_steps = cfg.get("max_episode_steps")
    if max_steps is not None:
        max_steps = _positive_int(cfg, "max_episode_steps", 1)
    return EnvSpec(
        suite=suite,
        task=task,
        image_size=_positive_int(cfg, "image_size", 84),
        frame_stack=_positive_int(cfg, "frame_stack", 3),
        action_repeat=_positive_int(cfg, "action_repeat", 2),
        obs_type=obs_type,
        camera=_camera(cfg.get("camera")),
        max_episode_steps=max_steps,
        video_size=_positive_int(cfg, "video_size", 128),
        fast_render=bool(cfg.get("fast_render", True)),
        reward_function_version=str(cfg.get("reward_function_version") or "v2"),
    )


# ------------------------------------------------------------------------------------------- the env
def make_env(cfg: Any, seed: int) -> gym.Env:
    """Build the contract env for ``cfg`` (see module docstring); ``seed`` fixes the first episode onwards.

    Raises ConfigError for an unknown suite/task/obs_type and RenderError if the GL backend cannot start.
    """
    from robotrl.envs.rendering import ensure_gl
    from robotrl.envs.wrappers import ActionRepeat, DictObservation, FrameStack, RobotRLInfo, ValidateAction

    backend = ensure_gl()  # before mujoco/dm_control are imported: both fix the backend at import
    spec = parse_env_cfg(cfg)
    base, extra = load_entry(f"{SUITES[spec.suite].module}:build")(spec, seed)
    max_env_steps = spec.max_episode_steps or base.default_max_steps
    max_agent_steps = math.ceil(max_env_steps / spec.action_repeat)
    unit = np.ones(base.action_space.shape, np.float32)
    env: gym.Env = gym.wrappers.RescaleAction(base, -unit, unit)
    env = ActionRepeat(env, spec.action_repeat)
    env = gym.wrappers.TimeLimit(env, max_agent_steps)
    env = DictObservation(env, spec.obs_type, spec.image_size)
    env = FrameStack(env, spec.frame_stack)
    env = ValidateAction(env)
    info = {
        "name": spec.name,
        "suite": spec.suite,
        "task": spec.task,
        "seed": seed,
        "obs_type": spec.obs_type,
        "image_size": spec.image_size,
        "frame_stack": spec.frame_stack,
        "action_repeat": spec.action_repeat,
        "camera": base.camera,
        "cameras": list(base.cameras),
        "max_episode_steps": max_env_steps,
        "max_agent_steps": max_agent_steps,
        "video_size": spec.video_size,
        "mujoco_gl": backend,
        **extra,
    }
    return RobotRLInfo(env, info)


# ------------------------------------------------------------------------------------- per-task yaml files
def env_config(name: str) -> dict[str, Any]:
    """The task-specific config for ``name`` (what ``configs/env/<name>.yaml`` holds)."""
    suite, task = name.split("/", 1)
    if suite == "dmc":
        level = "hard" if task in _DRQV2_HARD else "easy" if task in _DRQV2_EASY else "medium"
    else:
        level = "drm_metaworld" if suite == "metaworld" else "medium"
    frames, schedule = _BUDGETS[level]
    out: dict[str, Any] = {"name": name, "suite": suite, "task": task, "frames": frames}
    out["stddev_schedule"] = schedule
    out["difficulty"] = level
    return out


def write_env_configs(root: str | Path) -> list[Path]:
    """(Re)generate ``<root>/<suite>/<task>.yaml`` for every name in :func:`list_envs`."""
    import yaml

    paths = []
    for name in list_envs():
        path = Path(root) / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(env_config(name), sort_keys=False))
        paths.append(path)
    return paths


__all__ = ["SUITES", "EnvSpec", "Suite", "env_config", "fixed_length_episodes", "list_envs", "make_env",
           "parse_env_cfg", "suite_info", "write_env_configs"]
