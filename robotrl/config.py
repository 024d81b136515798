"""Early validation of the composed config: fail before building anything, with the bad key and value named."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from robotrl.contract import OBS_TYPES
from robotrl.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: env worker processes import this module and never need it
    import torch


def run_tag(agent: str, reward: str) -> str:
    """The ``<agent>`` part of a run dir name, ``<agent>-<reward>`` when the reward is not the env's own, so that
    ``reward=kagi`` runs do not land in (and collide with) the env-reward run's directory."""
    return agent if reward in ("env", None) else f"{agent}-{reward}"


def register_hydra() -> None:
    """Register what composing or resolving ``configs/`` needs; idempotent. Whatever composes or resolves a training
    config calls it first (importing robotrl registers nothing): the ``run_tag`` resolver (run dirs are
    ``runs/<env>/${run_tag:...}/seed<N>``) and the structured configs ``base/*`` (``robotrl.config_schema``)."""
    from robotrl.config_schema import register_configs

    if not OmegaConf.has_resolver("run_tag"):
        OmegaConf.register_new_resolver("run_tag", run_tag)
    register_configs()


def _require(cfg: DictConfig, key: str, kind: type | tuple[type, ...], low: float | None = None,
             allow_none: bool = False) -> Any:
    value = cfg
    for part in key.split("."):
        if part not in value:
            raise ConfigError(f"config key {key!r} is missing")
        value = value[part]
    if value is None and allow_none:
        return value
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"config {key}={value!r} has type {type(value).__name__}, expected {names}")
    if low is not None and value < low:
        raise ConfigError(f"config {key}={value!r} is out of range, expected >= {low}")
    return value


# config section -> its shared-defaults schema (robotrl.config_schema), whose fields declare their ranges
SCHEMA_SECTIONS = {"env": "env", "ray": "ray", "robot_env": "robot_env", "reward": "reward_wrapper"}


def check_section_ranges(section: Mapping[str, Any] | None, where: str) -> None:
    """Every key of ``section`` (the ``where:`` part of a config) that its schema gives a range is in it (null values
    are not checked: they mean a default chosen later)."""
    from robotrl.config_schema import SCHEMAS, ranges_of
    from robotrl.params import require

    for key, kind in ranges_of(SCHEMAS[SCHEMA_SECTIONS[where]][0]).items():
        value = None if section is None else section.get(key)
        if value is not None:
            require(where, **{kind: {key: value}})


def validate_config(cfg: DictConfig) -> None:
    """Check the training config's types and ranges; raise ConfigError naming the first bad key."""
    for where in SCHEMA_SECTIONS:
        check_section_ranges(cfg.get(where), where)
    _require(cfg, "seed", int, 0)
    _require(cfg, "frames", int, 1)
    _require(cfg, "seed_frames", int, 0)
    _require(cfg, "eval_every_frames", int, 1)
    _require(cfg, "eval_episodes", int, 0)
    _require(cfg, "checkpoint_every_frames", int, 1)
    _require(cfg, "checkpoint_keep", int, 1)
    if cfg.get("torch_threads") != "auto":
        _require(cfg, "torch_threads", int, 1, allow_none=True)
    _require(cfg, "replay.capacity", int, 1)
    _require(cfg, "env.image_size", int, 16)
    _require(cfg, "env.frame_stack", int, 1)
    _require(cfg, "env.action_repeat", int, 1)
    _require(cfg, "env.name", str)
    _require(cfg, "agent.name", str)
    if cfg.get("resume") != "auto":
        _require(cfg, "resume", bool)
    for flag in ("save_video", "tensorboard", "checkpoint_replay", "compare_baselines", "eval_at_start",
                 "reuse_freed_memory"):
        _require(cfg, flag, bool)
    if cfg.env.obs_type not in OBS_TYPES:
        raise ConfigError(f"config env.obs_type={cfg.env.obs_type!r} is not one of {', '.join(OBS_TYPES)}")
    views = cfg.agent.get("pixel_views")
    if views is not None:
        camera = cfg.env.get("camera")
        num_cameras = len(camera) if isinstance(camera, (list, tuple, ListConfig)) else 1
        if views != num_cameras:
            raise ConfigError(f"config agent.pixel_views={views} but env.camera={camera} gives {num_cameras} "
                              f"view(s); set agent.pixel_views={num_cameras} or null")
    collector = cfg.get("collector", "local")
    if collector not in ("local", "ray"):
        raise ConfigError(f"config collector={collector!r}, expected local or ray")
    device = _require(cfg, "device", str)
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"config device={device!r}, expected auto, cpu, cuda or cuda:N")


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` -> cuda if available else cpu; a cuda device without CUDA is a ConfigError naming ``key``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's own message spans lines and lists every backend
        raise ConfigError(f"{key}={name!r}, expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r} but CUDA is not available; use {key}=cpu or {key}=auto")
    return device


def resolve_threads(setting: int | str | None) -> tuple[int | None, str]:
    """(torch thread count, how it was chosen). ``auto``: the cores this process may run on minus the busy ones.

    Busy cores are read from the 1-minute load average. Why not always use every core: torch at 2 threads next to
    another busy process ran small models 10-35x slower than at 1 thread on a 2-core machine (spinning threads
    waiting on a core someone else holds), so a run started beside others takes only the cores that are free.
    ``None`` keeps torch's own default; an int is used as given.
    """
    if setting is None:
        import torch

        return None, f"torch default ({torch.get_num_threads()})"
    if setting != "auto":
        return int(setting), "set by torch_threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = max(1, min(cores, round(cores - busy)))
    return threads, f"auto: {cores} cores, {busy:.1f} busy (1-min load average)"


def config_dict(cfg: Any, what: str) -> dict[str, Any]:
    """A plug-in's config (a dict or an OmegaConf DictConfig) as a plain dict; anything else is a ConfigError naming
    ``what`` (e.g. "env config")."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "items"):  # OmegaConf DictConfig
        return dict(cfg.items())
    raise ConfigError(f"{what} must be a mapping, got {type(cfg).__name__}")
