"""``make_trainer(cfg, run_dir)``: every check of which trainer a config asks for, then the run built from parts
in explicit steps (seeding, clearing a stale start's outputs and writing run.json are steps here, not side effects
of constructing a part)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from robotrl.agents import agent_capabilities, agent_config, make_agent
from robotrl.atomic import atomic_write_text
from robotrl.checkpoint import resolve_checkpoint
from robotrl.config import register_hydra, resolve_device, resolve_threads, validate_config
from robotrl.distributed import init_distributed
from robotrl.envs.vector import num_envs_of
from robotrl.errors import CheckpointError, ConfigError
from robotrl.logger import Logger
from robotrl.malloc import reuse_freed_memory
from robotrl.replay import ReplayBuffer
from robotrl.rewards import make_reward, wrap_env
from robotrl.workflows import ray_collector, vector_train
from robotrl.workflows.demos import ensure_demos, pretrain_on_demos
from robotrl.workflows.interventions import InterventionRecorder
from robotrl.workflows.run_env import make_run_env, uses_robot, with_live_rewards
from robotrl.workflows.trainer.console import versions
from robotrl.workflows.trainer.evaluation import one_env_player
from robotrl.workflows.trainer.hooks import DistHooks, RobotHooks, rank_config, update_at
from robotrl.workflows.trainer.local import LocalCollector
from robotrl.workflows.trainer.loop import TrainLoop
from robotrl.workflows.trainer.run import Run, closed_on_error, own_envs
from robotrl.workflows.trainer.schedule import Schedule
from robotrl.workflows.trainer.state import Discards, RunState

log = logging.getLogger(__name__)
KINDS = ("local", "vector", "ray", "sb3")
STALE_OUTPUTS = ("train.csv", "eval.csv", "tb", "videos", "curve.png", "summary.json", "checkpoints", "interventions")


def trainer_kind(cfg: DictConfig) -> str:
    """``local`` (one env here), ``vector`` (``env.num_envs>1``), ``ray`` (``collector=ray``) or ``sb3``
    (``agent=sb3_*``: SB3's own loop); a combination that cannot run is a ConfigError naming it."""
    num_envs = num_envs_of(OmegaConf.select(cfg, "env") or {})
    collector = OmegaConf.select(cfg, "collector")
    if uses_robot(cfg) and (num_envs > 1 or collector == "ray"):
        raise ConfigError(f"robot={OmegaConf.select(cfg, 'robot.name')} drives one arm from this process; use "
                          f"env.num_envs=1 collector=local with it (got env.num_envs={num_envs}, "
                          f"collector={collector})")
    if agent_capabilities(OmegaConf.select(cfg, "agent")).owns_loop:  # SB3: its own learning loop
        if num_envs > 1:
            raise ConfigError(f"env.num_envs={num_envs}: Stable-Baselines3 agents run SB3's own loop on one "
                              f"env here; use env.num_envs=1 with agent={OmegaConf.select(cfg, 'agent.name')}")
        return "sb3"
    if collector == "ray":
        if num_envs > 1:
            raise ConfigError(f"env.num_envs={num_envs} with collector=ray: each Ray actor runs one env; "
                              f"scale with ray.num_actors instead")
        return "ray"
    return "vector" if num_envs > 1 else "local"


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint ``resume`` asks for, None for a fresh start; a start over checkpoints is refused."""
    ckpt_root = run_dir / "checkpoints"
    has_ckpt = ckpt_root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in ckpt_root.iterdir())
    if cfg.resume == "auto" and not has_ckpt:  # resume=auto: continue a run that has a checkpoint, else start
        return None
    if not cfg.resume:
        if has_ckpt:
            raise ConfigError(f"run dir {run_dir} already holds checkpoints; pass resume=true to continue "
                              f"it or run_dir=<new dir> to start a new run (nothing was overwritten)")
        return None
    if not has_ckpt:
        raise CheckpointError(f"resume=true but {ckpt_root} holds no checkpoint (expected a previous run here)")
    return resolve_checkpoint(run_dir)


def clear_stale_outputs(run_dir: Path) -> None:
    """A start with no checkpoint to resume begins its logs clean: an earlier start in this dir that was stopped
    before its first checkpoint left rows, events and videos that this run would otherwise append to (its
    ``checkpoints/`` can only hold an interrupted save's temp dir here)."""
    for name in STALE_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def seed_globals(seed: int) -> None:
    """The global RNGs every part built after this draws from (a resume then restores the checkpoint's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_one_env(cfg: DictConfig, reward_model: Any, run_dir: Path) -> dict[str, Any]:
    """The training env (reward layer on), the eval env (env reward; on an arm the same env) and the robot hooks."""
    base_env = make_run_env(cfg, seed=cfg.seed)
    with closed_on_error(base_env):
        env = with_live_rewards(wrap_env(base_env, cfg.reward, reward_model), base_env)
        robot = None
        if uses_robot(cfg):  # one arm: evaluation runs on the same RobotEnv between training episodes
            robot = RobotHooks(base_env, InterventionRecorder(run_dir / "interventions", base_env.observation_space,
                                                              int(cfg.env.frame_stack), str(cfg.env.name)))
        eval_env = base_env if robot is not None else make_run_env(cfg, seed=cfg.seed)
    return {"env": env, "eval_env": eval_env, "env_info": dict(getattr(env, "robotrl_info", {})), "robot": robot}


def build_agent(cfg: DictConfig, observation_space: Any, action_space: Any, device: torch.device) -> tuple[Any, Any]:
    """The agent and its replay. Agents that learn from demos (MoDem) read the demos generated here."""
    demo_dir = ensure_demos(cfg.agent, cfg.env)
    if demo_dir is not None and cfg.agent.get("demos") is not None and str(demo_dir) != str(cfg.agent.demos):
        with open_dict(cfg):  # a LeRobotDataset, imported into the demo format: the agent reads the import
            cfg.agent.demos = str(demo_dir)
    agent = make_agent(cfg.agent, observation_space, action_space, str(device), cfg.env.name)
    hparams = agent_config(cfg.agent, cfg.env.name)  # per-task overrides may change nstep
    replay = ReplayBuffer(
        capacity=int(cfg.replay.capacity), observation_space=observation_space,
        action_dim=action_space.shape[0], frame_stack=int(cfg.env.frame_stack),
        nstep=int(hparams["nstep"]), discount=float(hparams["discount"]), seed=int(cfg.seed),
        storage_dir=cfg.replay.storage_dir, device=str(device))
    return agent, replay


def single_spaces(env: Any) -> tuple[Any, Any]:
    """One env's observation and action spaces (a vector env's ``single_*`` ones)."""
    return (getattr(env, "single_observation_space", env.observation_space),
            getattr(env, "single_action_space", env.action_space))


def write_run_info(run: Run) -> None:
    # "agent": the hyperparameters the agent was built with, i.e. config.agent after its per-task overrides
    cfg = run.cfg
    info = {"config": OmegaConf.to_container(cfg, resolve=True),
            "agent": agent_config(cfg.agent, cfg.env.name), "versions": versions(),
            "env_info": run.env_info, "device": str(run.device),
            "distributed": {"world_size": run.dist.ctx.world_size, "backend": run.dist.ctx.backend}}
    run.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.run_dir / "run.json", json.dumps(info, indent=1, default=str))


def replay_loader(run: Run) -> Any:
    """Loads a checkpoint's replay buffer into ``run.replay`` (a warning and an empty one when it has none)."""

    def load(path: Path) -> None:
        if (path / "replay").exists():
            run.replay = ReplayBuffer.load(path / "replay", storage_dir=run.cfg.replay.storage_dir,
                                           device=str(run.device))
        else:
            log.warning("checkpoint %s has no replay buffer: resuming with an empty buffer (not exact)", path)

    return load


def make_trainer(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> Any:
    """The trainer of ``cfg`` (a :class:`TrainLoop`, or ``SB3Trainer`` for ``agent=sb3_*``), resumed from
    ``run_dir``'s checkpoint when ``resume`` asks for it; ``.train()`` runs it."""
    register_hydra()  # run.json and the checkpoints hold the resolved config (run_dir uses run_tag)
    kind = trainer_kind(cfg)
    validate_config(cfg)
    dist = DistHooks(init_distributed(str(resolve_device(cfg.device))))  # rank 0 of 1 unless under torchrun
    cfg = rank_config(cfg, dist.ctx)
    console = console or Console(soft_wrap=True)  # piped output: paths are never hard-wrapped mid-path
    if not dist.ctx.is_main:
        console = Console(quiet=True)  # rank 0 alone prints, logs, evaluates and checkpoints
    threads, why = resolve_threads(cfg.torch_threads)
    if threads is not None:
        torch.set_num_threads(threads)
    console.print(f"torch threads: {torch.get_num_threads()} ({why})", highlight=False)
    console.print(f"malloc: {reuse_freed_memory(cfg.reuse_freed_memory)}", highlight=False)
    device = resolve_device(cfg.device)
    if dist.ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.ctx.local_rank)
    ckpt = checkpoint_to_resume(cfg, Path(run_dir))  # every rank resumes from the run's (rank 0's) checkpoint
    run_dir = dist.run_dir(Path(run_dir))  # other ranks write their logs and checkpoints nowhere that lasts
    seed_globals(int(cfg.seed))
    # reward=<model>: built before any env (a missing-weights error comes first); only the training env gets it,
    # so evaluation returns stay ground-truth returns
    reward_model = make_reward(cfg.reward)
    updates_at = update_at(cfg, uses_robot(cfg))
    trainer, run = _assemble(kind, cfg, run_dir, console, device, dist, reward_model, updates_at)
    with closed_on_error(run):
        if ckpt is not None:
            run.restore(ckpt, trainer.load_replay if kind == "sb3" else replay_loader(run))
        else:
            clear_stale_outputs(run.run_dir)
        pretrain_on_demos(run.agent)  # MoDem's BC phase, once (a resumed run only hands its demos back)
        run.logger = Logger(run.run_dir, use_tb=cfg.tensorboard, resume_frame=run.frame if ckpt else None)
        write_run_info(run)
    return trainer


def _assemble(kind: str, cfg: DictConfig, run_dir: Path, console: Console, device: torch.device, dist: DistHooks,
              reward_model: Any, updates_at: str) -> tuple[Any, Run]:
    """Envs, agent, replay, state and collector of a ``kind`` of trainer."""
    if kind == "vector":
        envs = vector_train.build_vector_envs(cfg, reward_model)
    else:  # Ray's learner keeps one env for the spaces and the evaluation
        envs = build_one_env(cfg, reward_model, run_dir)
    with closed_on_error(*own_envs(envs["env"], envs["eval_env"])):
        settings = ray_collector.ray_settings(cfg) if kind == "ray" else None
        action_repeat = int(cfg.env.action_repeat)
        state = RunState(Schedule.from_config(cfg, action_repeat), action_repeat,
                         discards=Discards() if kind in ("vector", "ray") else None)
        sb3 = None
        if kind == "sb3":
            from robotrl.workflows import sb3_train  # imports Stable-Baselines3: only for agent=sb3_*

            sb3 = sb3_train.SB3Parts.build(cfg, envs["env"], device, action_repeat)
            agent, replay = sb3.agent, sb3.replay
        else:
            agent, replay = build_agent(cfg, *single_spaces(envs["env"]), device)
        if kind == "vector":
            vector_train.check_batch_agent(agent, cfg.agent.name)
        dist.join(agent, cfg.agent.name)
        vector_env = envs.pop("vector_env", None)
        player = envs.pop("player", one_env_player)
        run = Run(cfg=cfg, run_dir=run_dir, console=console, device=device, dist=dist, reward_model=reward_model,
                  agent=agent, replay=replay, state=state, play_eval=player(envs["eval_env"], agent), **envs)
        if sb3 is not None:
            return sb3_train.SB3Trainer(run, sb3), run
        seed_steps = int(cfg.seed_frames) // action_repeat
        if kind == "vector":
            collector: Any = vector_train.VectorCollector(vector_env, seed_steps)
        elif kind == "ray":
            collector = ray_collector.RayCollector(cfg, settings, seed_steps)
        else:
            collector = LocalCollector(seed_steps, updates_at)
        return TrainLoop(run, collector), run
