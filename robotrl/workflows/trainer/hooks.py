"""What a run on an arm and a torchrun job add to training, kept out of the loop.

:class:`RobotHooks`: the operator's take-overs kept as demos, updates at episode ends, evaluations without the
operator, the arm's intervention counts. :class:`DistHooks`: each rank's config and data, rank 0 alone writing
what lasts, the agent's weights broadcast from rank 0.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from robotrl.distributed import DistContext, broadcast_module, destroy_process_group
from robotrl.envs import fixed_length_episodes
from robotrl.errors import ConfigError
from robotrl.types import Episode, Obs, capabilities_of
from robotrl.workflows.interventions import InterventionRecorder
from robotrl.workflows.run_env import uses_robot


def update_at(cfg: DictConfig, on_robot: bool) -> str:
    """``update_at``: ``step`` (an update before every env step) or ``episode_end`` (the same updates after the
    episode: an arm cannot wait mid-motion for a gradient step, its control rate and watchdog would stop it);
    ``auto`` picks ``episode_end`` on a robot."""
    value = str(OmegaConf.select(cfg, "update_at", default="auto"))
    if value not in ("auto", "step", "episode_end"):
        raise ConfigError(f"update_at={value!r}, expected auto, step or episode_end")
    return ("episode_end" if on_robot else "step") if value == "auto" else value


class RobotHooks:
    """One arm driven from this process (``robot=<arm>``): the eval env is the training env, an operator's
    segments become demos (``interventions``), evaluations and baselines run without the operator."""

    def __init__(self, eval_env: Any, interventions: InterventionRecorder) -> None:
        self.eval_env, self.interventions = eval_env, interventions

    def begin(self, obs: Obs) -> None:
        self.interventions.begin(obs)

    def step(self, action: Any, reward: float, obs: Obs, terminated: bool, info: dict[str, Any]) -> None:
        self.interventions.step(action, reward, obs, terminated, info)

    def finish(self, episode: int) -> list[Episode]:
        """The finished episode's operator segments (saved), for the agent's demos."""
        return self.interventions.finish(episode)

    def resumed(self, episode: int) -> list[Episode]:
        """The operator segments the agent had as demos at the checkpoint a resumed run starts from."""
        return self.interventions.load(episode)

    def intervention_total(self) -> int:
        """Safety-layer interventions on the arm so far."""
        return self.eval_env.intervention_total()

    @contextlib.contextmanager
    def policy_only(self) -> Iterator[None]:
        """Evaluations and baselines measure the policy alone: no operator takes over meanwhile."""
        operator = getattr(self.eval_env, "operator", None)
        if operator is not None:
            self.eval_env.operator = None
        try:
            yield
        finally:
            if operator is not None:
                self.eval_env.operator = operator


def rank_config(cfg: DictConfig, ctx: DistContext) -> DictConfig:
    """The config of rank ``ctx.rank`` of a torchrun job: its own data (seed + rank: env, replay sampling and
    exploration), and on ranks > 0 no evaluation, video, TensorBoard or baselines. Unchanged in one process."""
    if not ctx.enabled:
        return cfg
    if uses_robot(cfg):  # every rank would drive the same arm
        raise ConfigError(f"robot={cfg.robot.name}: data-parallel training (torchrun) would drive one arm from "
                          f"every rank; run one process on an arm")
    if not fixed_length_episodes(cfg.env):  # every rank must update the same number of times (one all-reduce each)
        raise ConfigError(f"env={cfg.env.name}: data-parallel training needs episodes of one fixed length on every "
                          f"rank (dmc, metaworld); gym MuJoCo episodes end early when the robot falls")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.seed = int(cfg.seed) + ctx.rank
        if not ctx.is_main:
            cfg.eval_episodes, cfg.eval_at_start, cfg.save_video = 0, False, False
            cfg.tensorboard, cfg.compare_baselines, cfg.checkpoint_replay = False, False, False
    return cfg


class DistHooks:
    """A torchrun rank (rank 0 of 1 without torchrun): ranks > 0 write into a scratch dir removed at the end."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self._scratch: tempfile.TemporaryDirectory | None = None

    def run_dir(self, run_dir: Path) -> Path:
        """Where this rank writes: the run dir on rank 0, a scratch dir elsewhere (nothing there lasts)."""
        if self.ctx.is_main:
            return run_dir
        self._scratch = tempfile.TemporaryDirectory(prefix=f"robotrl-rank{self.ctx.rank}-")
        return Path(self._scratch.name)

    def join(self, agent: Any, agent_name: str) -> None:
        """Under torchrun: an agent that averages its gradients over ranks, starting from rank 0's weights."""
        if not self.ctx.enabled:
            return
        if not capabilities_of(agent).distributed:
            raise ConfigError(f"agent={agent_name} has no data-parallel learner (Capabilities.distributed); "
                              f"under torchrun use agent=tdmpc2, modem or modem_v2, or run without torchrun")
        for module in vars(agent).values():
            if isinstance(module, torch.nn.Module):
                broadcast_module(module)

    def summary(self) -> dict[str, Any]:
        return {"world_size": self.ctx.world_size} if self.ctx.enabled else {}

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
        destroy_process_group()
