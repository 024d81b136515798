"""Agents. ``make_agent`` builds one from its hydra config (``configs/agent/<name>.yaml``)."""

from __future__ import annotations

import fnmatch
from typing import Any

import gymnasium as gym
import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from robotrl.errors import ConfigError, RobotRLError
from robotrl.types import Agent


def agent_config(agent_cfg: DictConfig | dict, env_name: str | None = None) -> dict[str, Any]:
    """The agent's hyperparameters for ``env_name``: ``task_overrides`` applied, ``name`` kept.

    ``task_overrides`` maps env-name globs to hyperparameters (e.g. ``"dmc/humanoid_*": {lr: 8e-5}``), applied in
    file order, later matches winning. The trainer reads the replay settings (nstep, discount) from this too.
    """
    if isinstance(agent_cfg, DictConfig):
        cfg: dict[str, Any] = OmegaConf.to_container(agent_cfg, resolve=True)  # type: ignore[assignment]
    else:
        cfg = dict(agent_cfg)
    overrides = cfg.pop("task_overrides", None) or {}
    if env_name is not None:
        for pattern, values in overrides.items():
            if fnmatch.fnmatchcase(env_name, pattern):
                cfg.update(values)
    return cfg


SB3_TARGET = "robotrl.agents.sb3.SB3Agent"


def is_sb3_agent(agent_cfg: Any) -> bool:
    """True for a Stable-Baselines3 agent config (``agent=sb3_sac|sb3_ppo``): SB3 runs its own learning loop, so
    the trainer hands the run to ``robotrl.workflows.sb3_train.SB3Trainer`` (checked without importing SB3)."""
    if agent_cfg is None:
        return False
    target = agent_cfg.get("_target_") if isinstance(agent_cfg, dict | DictConfig) else None
    return target == SB3_TARGET


def make_agent(agent_cfg: DictConfig | dict, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box,
               device: str, env_name: str | None = None) -> Agent:
    """Instantiate ``agent_cfg._target_`` (after :func:`agent_config`) with the spaces and device."""
    cfg = agent_config(agent_cfg, env_name)
    name = cfg.pop("name", None)
    try:
        return hydra.utils.instantiate(cfg, observation_space=observation_space, action_space=action_space,
                                       device=device)
    except InstantiationException as e:
        # hydra wraps whatever the constructor raised; surface bad config values as robotrl's one-line errors
        cause = e.__cause__
        if isinstance(cause, RobotRLError):
            raise cause from None
        if isinstance(cause, ValueError) or (isinstance(cause, TypeError) and "keyword argument" in str(cause)):
            raise ConfigError(f"agent={name}: {cause}") from None
        raise
