"""Agents. ``make_agent`` builds one from its hydra config (``configs/agent/<name>.yaml``)."""

from __future__ import annotations

import fnmatch
from typing import Any

import gymnasium as gym
import hydra.utils
from omegaconf import DictConfig, OmegaConf

from robotrl.types import Agent


def make_agent(agent_cfg: DictConfig | dict, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box,
               device: str, env_name: str | None = None) -> Agent:
    """Instantiate ``agent_cfg._target_`` with the spaces and device.

    ``name`` is dropped and ``task_overrides`` (env-name glob -> hyperparameters, e.g. ``"dmc/humanoid_*":
    {lr: 8e-5}``) is applied for ``env_name``, in file order, later matches winning.
    """
    if isinstance(agent_cfg, DictConfig):
        cfg: dict[str, Any] = OmegaConf.to_container(agent_cfg, resolve=True)  # type: ignore[assignment]
    else:
        cfg = dict(agent_cfg)
    cfg.pop("name", None)
    overrides = cfg.pop("task_overrides", None) or {}
    if env_name is not None:
        for pattern, values in overrides.items():
            if fnmatch.fnmatchcase(env_name, pattern):
                cfg.update(values)
    return hydra.utils.instantiate(cfg, observation_space=observation_space, action_space=action_space,
                                   device=device)
