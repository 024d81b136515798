"""Agents. ``make_agent`` builds one from its hydra config (``configs/agent/<name>.yaml``)."""

from __future__ import annotations

import fnmatch
from typing import Any

import gymnasium as gym
import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from robotrl.errors import ConfigError, RobotRLError
from robotrl.types import NO_CAPABILITIES, Agent, Capabilities, capabilities_of


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


def agent_class(agent_cfg: Any) -> type:
    """The class ``agent_cfg._target_`` names (imports its module only: SB3 for ``agent=sb3_*``, nothing else)."""
    target = agent_cfg.get("_target_") if isinstance(agent_cfg, dict | DictConfig) else None
    if not isinstance(target, str) or not target:
        raise ConfigError(f"agent config has _target_={target!r}, expected the agent class's dotted path "
                          f"(e.g. robotrl.agents.drqv2.DrQV2Agent)")
    try:
        return hydra.utils.get_class(target)
    except Exception as e:  # hydra's message spans several lines
        raise ConfigError(f"agent._target_={target!r} cannot be imported: {' '.join(str(e).split())}"[:300]) from None


def agent_capabilities(agent_cfg: Any) -> Capabilities:
    """What the agent of ``agent_cfg`` declares it can do (:class:`robotrl.types.Capabilities`), read from its class
    before anything is built: whether SB3 owns the loop, which demos to make, whether it can act on a batch."""
    return NO_CAPABILITIES if agent_cfg is None else capabilities_of(agent_class(agent_cfg))


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
