"""Reward models. ``reward=env`` (the default) uses the environment's own reward; ``reward=clip`` is VLM-RM.

``make_reward(cfg)`` builds the model named by the ``reward:`` config group (hydra ``_target_``) or returns None
for the env reward; ``wrap_env(env, cfg)`` puts it on an env with :class:`~robotrl.rewards.base.RewardWrapper`.
The keys ``name``, ``mode``, ``weight``, ``render_size``, and ``terminate_on_success`` configure the
wrapper; every other key goes to the model's constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch
from robotrl.rewards.base import (
    EmbeddingCache,
    RewardModel,
    RewardVectorWrapper,
    RewardWrapper,
    check_frames,
    check_wrapper_values,
    render_rgb,
)
from robotrl.rewards.capabilities import RewardCapabilities, reward_capabilities, success_enabled

from robotrl.errors import ConfigError

WRAPPER_KEYS = ("name", "mode", "weight", "render_size", "terminate_on_success", "timeout_s",
                "max_consecutive_failures")


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if cfg is None:
        return {"name": "env"}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"reward config must be a mapping, got {type(cfg).__name__}")


def is_env_reward(cfg: Any) -> bool:
    cfg = _plain(cfg)
    return "_target_" not in cfg and cfg.get("name", "env") == "env"


def make_reward(cfg: Any) -> RewardModel | None:
    """The reward model for ``cfg`` (the ``reward:`` group), or None for ``reward=env``.

    Built under ``torch.random.fork_rng`` so creating (randomly initialised) weights does not shift the global
    RNG: a run's agent initialisation and replay samples are the same whichever reward it uses.
    """
    cfg = _plain(cfg)
    if is_env_reward(cfg):
        return None
    if "_target_" not in cfg:
        raise ConfigError(f"reward config {cfg.get('name')!r} has no _target_ (the reward model class to build)")
    from hydra.utils import get_class

    try:
        cls = get_class(str(cfg["_target_"]))
    except Exception as e:  # hydra's message spans several lines
        raise ConfigError(f"reward._target_={cfg['_target_']!r} cannot be imported: {e!r}"[:300]) from e
    reward_capabilities(cls)  # a declaration that does not match the class's methods fails here, before building
    check_wrapper_values(**{k: cfg[k] for k in ("mode", "weight", "render_size", "timeout_s",
                                                "max_consecutive_failures") if k in cfg})
    kwargs = {k: v for k, v in cfg.items() if k not in WRAPPER_KEYS and k != "_target_"}
    with torch.random.fork_rng(devices=[]):  # direct call (not hydra.instantiate): our one-line errors stay as is
        return cls(**kwargs)


def wrap_env(env: gym.Env, cfg: Any, model: RewardModel | None = None) -> gym.Env:
    """``env`` with its reward replaced/blended per ``cfg`` (unchanged for ``reward=env``); ``model`` reuses a built
    one (the trainer builds it first so a missing-weights error comes before any env is made)."""
    cfg = _plain(cfg)
    if is_env_reward(cfg):
        return env
    model = model if model is not None else make_reward(cfg)
    return RewardWrapper(env, model, mode=cfg.get("mode", "replace"), weight=float(cfg.get("weight", 1.0)),
                         render_size=cfg.get("render_size", 224),
                         terminate_on_success=bool(cfg.get("terminate_on_success", False)),
                         name=str(cfg.get("name", "model")), timeout_s=cfg.get("timeout_s"),
                         max_consecutive_failures=cfg.get("max_consecutive_failures", 10))


def wrap_vector_env(env: gym.vector.VectorEnv, cfg: Any, model: RewardModel | None = None) -> gym.vector.VectorEnv:
    """:func:`wrap_env` for a vector env of contract envs: a :class:`RewardVectorWrapper` (one batched model call
    per vector step); unchanged for ``reward=env``."""
    cfg = _plain(cfg)
    if is_env_reward(cfg):
        return env
    if bool(cfg.get("terminate_on_success", False)):
        raise ConfigError("reward.terminate_on_success=true is not supported with env.num_envs > 1 "
                          "(RewardVectorWrapper never ends episodes); use env.num_envs=1")
    model = model if model is not None else make_reward(cfg)
    return RewardVectorWrapper(env, model, mode=cfg.get("mode", "replace"), weight=float(cfg.get("weight", 1.0)),
                               render_size=cfg.get("render_size", 224), name=str(cfg.get("name", "model")),
                               timeout_s=cfg.get("timeout_s"),
                               max_consecutive_failures=cfg.get("max_consecutive_failures", 10))


__all__ = ["EmbeddingCache", "RewardCapabilities", "RewardModel", "RewardVectorWrapper", "RewardWrapper",
           "check_frames", "is_env_reward", "make_reward", "render_rgb", "reward_capabilities", "success_enabled",
           "wrap_env", "wrap_vector_env"]
