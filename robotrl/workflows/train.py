"""The training loop: act, update, step, store; evaluate, log and checkpoint at episode boundaries.

Checkpoints are only taken between episodes and every episode starts from ``env.reset(seed=...)`` with a seed
derived from (run seed, episode index), so a resumed run replays exactly what the uninterrupted run would have
done: same episodes, same replay samples, same gradient steps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import platform
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robotrl import preemption
from robotrl.agents import agent_capabilities, agent_config, make_agent
from robotrl.atomic import atomic_write_text
from robotrl.checkpoint import load_state, resolve_checkpoint, save_checkpoint
from robotrl.config import resolve_device, resolve_threads, validate_config
from robotrl.distributed import DistContext, broadcast_module, destroy_process_group, init_distributed
from robotrl.envs import fixed_length_episodes
from robotrl.envs.vector import num_envs_of
from robotrl.errors import CheckpointError, ConfigError, DivergenceError
from robotrl.heartbeat import Heartbeat
from robotrl.logger import Logger
from robotrl.replay import ReplayBuffer
from robotrl.rewards import is_env_reward, make_reward, wrap_env
from robotrl.workflows.baselines import compare, comparison_table, trivial_baselines, trivial_baselines_for
from robotrl.workflows.demos import ensure_demos, pretrain_on_demos
from robotrl.workflows.interventions import InterventionRecorder
from robotrl.workflows.rollout import run_episodes, summarize
from robotrl.workflows.run_env import make_run_env, uses_robot, with_live_rewards

log = logging.getLogger(__name__)
REWARD_INFO_KEYS = ("model_reward", "gt_reward", "reward_invalid")  # from RewardWrapper; flagged steps are counted
ROBOT_INFO_KEYS = ("interventions",)  # from RobotEnv: safety-layer interventions per step, summed per episode
EVAL_SEED_BASE = 1_000_000  # eval episodes use seeds EVAL_SEED_BASE + i, the same set at every evaluation


@dataclass
class EpisodeStats:
    """What one training episode accumulates for its train.csv row."""

    ret: float = 0.0
    length: int = 0
    success: bool | None = None  # None: the task defines no success
    updates: list[dict[str, float]] = field(default_factory=list)  # the agent's update metrics
    rewards: dict[str, float] = field(default_factory=dict)  # reward=<model>: model vs ground truth, summed
    robot: dict[str, float] = field(default_factory=dict)  # robot=<arm>: interventions, overruns, safety stop
    steps: list[tuple[Any, int]] = field(default_factory=list)  # (action, step) kept for updates at the episode end

    def add_step(self, reward: float, info: dict[str, Any]) -> None:
        self.ret += float(reward)
        self.length += 1
        if "success" in info:
            self.success = bool(self.success) or bool(info["success"])
        for key in REWARD_INFO_KEYS:
            if key in info:
                self.rewards[key] = self.rewards.get(key, 0.0) + float(info[key])
        for key in ROBOT_INFO_KEYS:
            if key in info:
                self.robot[key] = self.robot.get(key, 0.0) + float(info[key])
        if info.get("intervention"):
            self.robot["operator_steps"] = self.robot.get("operator_steps", 0.0) + 1.0
        if "overrun_ms" in info:
            self.robot["overruns"] = self.robot.get("overruns", 0.0) + 1.0
        if "safety_stop" in info:
            self.robot["safety_stop"] = 1.0


def _update_at(cfg: DictConfig, on_robot: bool) -> str:
    """``update_at``: ``step`` (an update before every env step) or ``episode_end`` (the same updates after the
    episode: an arm cannot wait mid-motion for a gradient step, its control rate and watchdog would stop it);
    ``auto`` picks ``episode_end`` on a robot."""
    value = str(OmegaConf.select(cfg, "update_at", default="auto"))
    if value not in ("auto", "step", "episode_end"):
        raise ConfigError(f"update_at={value!r}, expected auto, step or episode_end")
    return ("episode_end" if on_robot else "step") if value == "auto" else value


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


def episode_seed(run_seed: int, episode: int) -> int:
    """A reset seed for training episode ``episode``: deterministic, and above the eval seeds' range."""
    low = 2 * EVAL_SEED_BASE  # eval seeds are EVAL_SEED_BASE + i, i < EVAL_SEED_BASE
    return low + int(np.random.SeedSequence([run_seed, episode]).generate_state(1)[0]) % (2**31 - 1 - low)


class GracefulInterrupt:
    """Ctrl-C (SIGINT) during training, delivered at a safe point.

    The first Ctrl-C only sets a flag; :meth:`check`, called between env steps, raises KeyboardInterrupt there. So
    the interrupt never lands inside a library's internals (a tensorboard writer's lock, the GL context, a
    checkpoint being written), which can hang the process at exit or leave state half-written. A second Ctrl-C
    interrupts immediately. Outside the main thread (no signal handlers there) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def get_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain types, loadable with torch.load(weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("robotrl", "torch", "mujoco", "dm-control", "metaworld", "gymnasium"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def make_progress(console: Console, total_steps: int, completed: int = 0) -> tuple[Progress, Any]:
    """The live training bar (agent steps done/total, frames per second, last episode return, elapsed, ETA). It fits
    80 columns at a 1.1M-frame run's counts and 10+ hour times; the env name is printed once before it."""
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(bar_width=10), MofNCompleteColumn(),  # agent steps
        TextColumn("{task.fields[fps]:>5.0f} fps ret {task.fields[ret]:<7.1f}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(compact=True),
        console=console, refresh_per_second=2)
    task = progress.add_task("train", total=total_steps, completed=completed, fps=0.0, ret=float("nan"))
    return progress, task


class Trainer:
    """Builds env, agent, replay and logger from a config and runs (or resumes) one training run."""

    def __new__(cls, cfg: DictConfig, *args: Any, **kwargs: Any) -> Trainer:
        """``agent=sb3_*`` gets :class:`robotrl.workflows.sb3_train.SB3Trainer`: Stable-Baselines3 runs its own
        learning loop inside this trainer's envs, reward layer, logging, evaluation and checkpoints."""
        num_envs = num_envs_of(OmegaConf.select(cfg, "env") or {})
        if cls is Trainer and uses_robot(cfg) and (num_envs > 1 or OmegaConf.select(cfg, "collector") == "ray"):
            raise ConfigError(f"robot={OmegaConf.select(cfg, 'robot.name')} drives one arm from this process; use "
                              f"env.num_envs=1 collector=local with it (got env.num_envs={num_envs}, "
                              f"collector={OmegaConf.select(cfg, 'collector')})")
        if cls is Trainer and agent_capabilities(OmegaConf.select(cfg, "agent")).owns_loop:
            if num_envs > 1:
                raise ConfigError(f"env.num_envs={num_envs}: Stable-Baselines3 agents run SB3's own loop on one "
                                  f"env here; use env.num_envs=1 with agent={OmegaConf.select(cfg, 'agent.name')}")
            from robotrl.workflows.sb3_train import SB3Trainer

            cls = SB3Trainer
        elif cls is Trainer and OmegaConf.select(cfg, "collector") == "ray":
            if num_envs > 1:
                raise ConfigError(f"env.num_envs={num_envs} with collector=ray: each Ray actor runs one env; "
                                  f"scale with ray.num_actors instead")
            from robotrl.workflows.ray_collector import RayTrainer

            cls = RayTrainer
        elif cls is Trainer and num_envs > 1:
            from robotrl.workflows.vector_train import VectorTrainer

            cls = VectorTrainer
        return super().__new__(cls)

    def __init__(self, cfg: DictConfig, run_dir: Path, console: Console | None = None):
        validate_config(cfg)
        self.dist = init_distributed(str(resolve_device(cfg.device)))  # rank 0 of 1 unless started by torchrun
        cfg = rank_config(cfg, self.dist)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console = console or Console(soft_wrap=True)  # piped output: paths are never hard-wrapped mid-path
        if not self.dist.is_main:
            self.console = Console(quiet=True)  # rank 0 alone prints, logs, evaluates and checkpoints
        threads, why = resolve_threads(cfg.torch_threads)
        if threads is not None:
            torch.set_num_threads(threads)
        self.console.print(f"torch threads: {torch.get_num_threads()} ({why})", highlight=False)
        self.device = resolve_device(cfg.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        ckpt = self._checkpoint_to_resume()  # every rank resumes from the run's (rank 0's) checkpoint
        if not self.dist.is_main:  # other ranks write their logs and checkpoints nowhere that lasts
            self._scratch = tempfile.TemporaryDirectory(prefix=f"robotrl-rank{self.dist.rank}-")
            self.run_dir = Path(self._scratch.name)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # reward=<model>: built before any env (a missing-weights error comes first) under a forked RNG; only the
        # training env gets it, so evaluation returns stay ground-truth returns
        self.reward_model = make_reward(cfg.reward)
        self.on_robot = uses_robot(cfg)
        self.update_at = _update_at(cfg, self.on_robot)
        self.interventions: InterventionRecorder | None = None
        self._build_envs()
        self.action_repeat = int(cfg.env.action_repeat)
        self._build_agent()
        if self.dist.enabled:
            self._join_data_parallel()
        self.step = self.episode = 0
        self.elapsed_before = 0.0
        self.next_eval_frame = 0 if cfg.eval_at_start else int(cfg.eval_every_frames)
        self.next_ckpt_frame = int(cfg.checkpoint_every_frames)
        self.last_eval: dict[str, Any] | None = None
        self.first_eval: dict[str, Any] | None = None  # a trivial baseline too: the untrained policy
        if ckpt is not None:
            self._restore(ckpt)
        else:
            self._clear_stale_outputs()
        pretrain_on_demos(self.agent)  # MoDem's BC phase, once (a resumed run only hands its demos back)
        self.logger = Logger(self.run_dir, use_tb=cfg.tensorboard, resume_frame=self.frame if ckpt else None)
        self._write_run_info()

    def _build_envs(self) -> None:
        """``self.env`` (with the reward layer), ``self.eval_env`` and ``self.env_info`` (the vector trainer
        overrides this: ``env.num_envs`` envs in worker processes)."""
        cfg = self.cfg
        base_env = make_run_env(cfg, seed=cfg.seed)
        self.env = with_live_rewards(wrap_env(base_env, cfg.reward, self.reward_model), base_env)
        # One arm: evaluation runs on the same RobotEnv between training episodes (without the reward model)
        self.eval_env = base_env if self.on_robot else make_run_env(cfg, seed=cfg.seed)
        if self.on_robot:
            self.interventions = InterventionRecorder(self.run_dir / "interventions", base_env.observation_space,
                                                      int(cfg.env.frame_stack), str(cfg.env.name))
        self.env_info: dict[str, Any] = dict(getattr(self.env, "robotrl_info", {}))

    @property
    def observation_space(self) -> Any:
        """One env's observation space (a vector env's ``single_observation_space``)."""
        return getattr(self.env, "single_observation_space", self.env.observation_space)

    @property
    def action_space(self) -> Any:
        return getattr(self.env, "single_action_space", self.env.action_space)

    def _build_agent(self) -> None:
        """``self.agent`` and its ``self.replay`` (the SB3 runner overrides this: SB3 brings its own buffers)."""
        cfg = self.cfg
        demo_dir = ensure_demos(cfg.agent, cfg.env)  # agents that learn from demos (MoDem) read them; made here
        if demo_dir is not None and cfg.agent.get("demos") is not None and str(demo_dir) != str(cfg.agent.demos):
            with open_dict(cfg):  # a LeRobotDataset, imported into the demo format: the agent reads the import
                cfg.agent.demos = str(demo_dir)
        self.agent = make_agent(cfg.agent, self.observation_space, self.action_space, str(self.device),
                                cfg.env.name)
        agent_hparams = agent_config(cfg.agent, cfg.env.name)  # per-task overrides may change nstep
        self.replay = ReplayBuffer(
            capacity=int(cfg.replay.capacity), observation_space=self.observation_space,
            action_dim=self.action_space.shape[0], frame_stack=int(cfg.env.frame_stack),
            nstep=int(agent_hparams["nstep"]), discount=float(agent_hparams["discount"]), seed=int(cfg.seed),
            storage_dir=cfg.replay.storage_dir, device=str(self.device))

    def _join_data_parallel(self) -> None:
        """Under torchrun: an agent that averages its gradients over ranks, starting from rank 0's weights."""
        if not agent_capabilities(self.cfg.agent).distributed:
            raise ConfigError(f"agent={self.cfg.agent.name} has no data-parallel learner (Capabilities.distributed); "
                              f"under torchrun use agent=tdmpc2, modem or modem_v2, or run without torchrun")
        for module in vars(self.agent).values():
            if isinstance(module, torch.nn.Module):
                broadcast_module(module)

    @property
    def frame(self) -> int:
        return self.step * self.action_repeat

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_to_resume(self) -> Path | None:
        ckpt_root = self.run_dir / "checkpoints"
        has_ckpt = ckpt_root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in ckpt_root.iterdir())
        if self.cfg.resume == "auto" and not has_ckpt:  # resume=auto: continue a run that has a checkpoint, else start
            return None
        if not self.cfg.resume:
            if has_ckpt:
                raise ConfigError(f"run dir {self.run_dir} already holds checkpoints; pass resume=true to continue "
                                  f"it or run_dir=<new dir> to start a new run (nothing was overwritten)")
            return None
        if not has_ckpt:
            raise CheckpointError(f"resume=true but {ckpt_root} holds no checkpoint (expected a previous run here)")
        return resolve_checkpoint(self.run_dir)

    STALE_OUTPUTS = ("train.csv", "eval.csv", "tb", "videos", "curve.png", "summary.json", "checkpoints",
                     "interventions")

    def _clear_stale_outputs(self) -> None:
        """A start with no checkpoint to resume begins its logs clean: an earlier start in this dir that was stopped
        before its first checkpoint left rows, events and videos that this run would otherwise append to (its
        ``checkpoints/`` can only hold an interrupted save's temp dir here)."""
        for name in self.STALE_OUTPUTS:
            path = self.run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None  # rank 0's checkpoint holds the (identical) model; a resume starts every rank from it
        state = {
            "agent_name": self.cfg.agent.name,
            "agent": self.agent.state_dict(),
            "counters": {"step": self.step, "episode": self.episode, "next_eval_frame": self.next_eval_frame,
                         "next_ckpt_frame": self.next_ckpt_frame, "elapsed": self._elapsed(),
                         "first_eval": json.dumps(self.first_eval), **self._extra_counters()},
            "rng": get_rng_state(),
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "env_info": json.dumps(self.env_info),
        }
        if hasattr(self.reward_model, "state_dict"):  # reward models that learn online (LfVoid's discriminators)
            state["reward_model"] = self.reward_model.state_dict()
        replay = self.replay if self.cfg.checkpoint_replay else None
        path = save_checkpoint(self.run_dir / "checkpoints", f"frame_{self.frame:012d}", state, replay,
                               keep=int(self.cfg.checkpoint_keep))
        self.console.print(f"[dim]checkpoint {path}[/dim]")
        return path

    def _restore(self, path: Path) -> None:
        state = load_state(path)
        if state["agent_name"] != self.cfg.agent.name:
            raise CheckpointError(f"checkpoint {path} was written by agent {state['agent_name']!r}, "
                                  f"expected {self.cfg.agent.name!r}")
        self.agent.load_state_dict(state["agent"])
        if "reward_model" in state:
            if not hasattr(self.reward_model, "load_state_dict"):
                raise CheckpointError(f"checkpoint {path} holds a learned reward model's state, but reward="
                                      f"{self.cfg.reward.get('name')!r} has none to load it into")
            self.reward_model.load_state_dict(state["reward_model"])
        self._restore_replay(path)
        counters = state["counters"]
        self.step, self.episode = int(counters["step"]), int(counters["episode"])
        self.next_eval_frame, self.next_ckpt_frame = int(counters["next_eval_frame"]), int(counters["next_ckpt_frame"])
        self.elapsed_before = float(counters["elapsed"])
        self.first_eval = json.loads(counters.get("first_eval", "null"))
        self._restore_extra_counters(counters)
        set_rng_state(state["rng"])
        if self.interventions is not None:  # the operator segments the agent had as demos at this checkpoint
            self._add_demos(self.interventions.load(self.episode))
        self.console.print(f"resumed from {path} at frame {self.frame}")

    def _extra_counters(self) -> dict[str, Any]:
        """More counters for the checkpoint (plain types; the vector trainer's discarded-episode counts)."""
        return {}

    def _restore_extra_counters(self, counters: dict[str, Any]) -> None:
        """Read back what :meth:`_extra_counters` saved."""

    def _restore_replay(self, path: Path) -> None:
        """Load the checkpoint's replay buffer (SB3's runner overrides this: SB3 has its own buffer format)."""
        if (path / "replay").exists():
            self.replay = ReplayBuffer.load(path / "replay", storage_dir=self.cfg.replay.storage_dir,
                                            device=str(self.device))
        else:
            log.warning("checkpoint %s has no replay buffer: resuming with an empty buffer (not exact)", path)

    def _write_run_info(self) -> None:
        # "agent": the hyperparameters the agent was built with, i.e. config.agent after its per-task overrides
        info = {"config": OmegaConf.to_container(self.cfg, resolve=True),
                "agent": agent_config(self.cfg.agent, self.cfg.env.name), "versions": versions(),
                "env_info": self.env_info, "device": str(self.device),
                "distributed": {"world_size": self.dist.world_size, "backend": self.dist.backend}}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "run.json", json.dumps(info, indent=1, default=str))

    # ---------------------------------------------------------------- loop
    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t0

    def _begin_episode(self) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=episode_seed(int(self.cfg.seed), self.episode))
        self.agent.reset()
        self.replay.add_first(obs)
        if self.interventions is not None:
            self.interventions.begin(obs)
        return obs

    def _add_demos(self, episodes: list[Any]) -> None:
        """Operator segments as demos, for agents that keep demos (MoDem); others learn from them in the replay."""
        if episodes and agent_capabilities(self.cfg.agent).learns_from_demos:
            self.agent.add_demos(episodes)

    def train(self) -> dict[str, Any]:
        """Train until ``cfg.frames`` (finishing the current episode); return the final summary. A preemption signal
        meanwhile (:mod:`robotrl.preemption`) checkpoints at the next episode end and hands over to the launcher."""
        with preemption.cooperative():
            return self._train()

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        total_steps = int(cfg.frames) // self.action_repeat
        seed_steps = int(cfg.seed_frames) // self.action_repeat
        if self.frame >= self.next_eval_frame and cfg.eval_episodes > 0:
            self.evaluate()
        obs = self._begin_episode() if self.step < total_steps else None
        stats = EpisodeStats()
        progress, task = self._make_progress(total_steps)
        with progress, GracefulInterrupt() as interrupt:
            while obs is not None:
                interrupt.check()
                action = self.agent.act(obs, self.step, eval_mode=False)
                if self.step >= seed_steps:
                    if self.update_at == "step":
                        stats.updates.append(self.agent.update(self.replay, self.step))
                    else:  # on an arm: the same updates, after the episode, while the arm holds
                        stats.steps.append(self.step)
                obs, reward, terminated, truncated, info = self.env.step(action)
                action = info.get("executed_action", action)  # a person took over: store what the arm did
                self.replay.add(action, reward, obs, terminated, truncated,
                                reward_invalid=bool(info.get("reward_invalid", False)))  # kept out of targets
                if self.interventions is not None:
                    self.interventions.step(action, reward, obs, terminated, info)
                self.step += 1
                stats.add_step(reward, info)
                if not (terminated or truncated):
                    if self.step % 100 == 0:
                        progress.update(task, completed=min(self.step, total_steps))
                    continue
                done = self._end_episode(stats, total_steps)
                stats = EpisodeStats()
                obs = None if done else self._begin_episode()
        return self.finish()

    def _end_episode(self, stats: EpisodeStats, total_steps: int) -> bool:
        """Count and log the finished episode, evaluate and checkpoint when due; True when training is done."""
        cfg = self.cfg
        if self.interventions is not None:  # before the episode's updates (episode_end): they may use them
            self._add_demos(self.interventions.finish(self.episode))
        for step in stats.steps:  # update_at=episode_end: one update per agent step of the episode, in order
            stats.updates.append(self.agent.update(self.replay, step))
        self.episode += 1
        self._log_train_episode(stats)
        progress, task = self._progress_task
        progress.update(task, completed=min(self.step, total_steps), ret=stats.ret)
        done = self.step >= total_steps
        final_eval_missing = done and (self.last_eval is None or self.last_eval["frame"] != self.frame)
        if (self.frame >= self.next_eval_frame or final_eval_missing) and cfg.eval_episodes > 0:
            self.evaluate()  # always at the end too: the final eval is of the final policy, not an earlier one
        if self.frame >= self.next_ckpt_frame or done:
            while self.next_ckpt_frame <= self.frame:
                self.next_ckpt_frame += int(cfg.checkpoint_every_frames)
            self.save()
        if not done and preemption.requested():
            self._checkpoint_and_hand_off()
        return done

    def _checkpoint_and_hand_off(self) -> None:
        """A preemption/time-limit signal arrived: checkpoint here, between episodes (an exact-resume point), and
        hand over to the launcher, which requeues the job with ``resume=auto`` (submitit exits this process)."""
        if not (self.run_dir / "checkpoints" / f"frame_{self.frame:012d}").is_dir():
            self.save()
        self.console.print(f"preemption signal: checkpoint at frame {self.frame} written; the launcher requeues this "
                           f"job and it resumes from there", highlight=False)
        preemption.hand_off()

    def _make_progress(self, total_steps: int) -> tuple[Progress, Any]:
        """A console progress bar with fps, last episode return and ETA."""
        self.console.print(f"training {self.cfg.env.name} for {self.cfg.frames} frames ({total_steps} agent steps)")
        progress, task = make_progress(self.console, total_steps, self.step)
        self._fps_mark = (time.perf_counter(), self.frame)
        self._progress_task = (progress, task)
        return progress, task

    def _fps(self) -> float:
        now, frame = time.perf_counter(), self.frame
        t0, f0 = self._fps_mark
        self._fps_mark = (now, frame)
        return (frame - f0) / max(now - t0, 1e-9)

    def _log_train_episode(self, stats: EpisodeStats) -> None:
        fps = self._fps()
        progress, task = self._progress_task
        progress.update(task, fps=fps)
        if not self.console.is_terminal:  # logs and pipes get one plain line per episode instead of a live bar
            left = max(int(self.cfg.frames) - self.frame, 0)
            self.console.print(f"frame {self.frame}/{self.cfg.frames} | episode {self.episode} | return "
                               f"{stats.ret:.1f} | {fps:.0f} fps | ETA {left / max(fps, 1e-9) / 60:.1f} min")
        row: dict[str, Any] = {"step": self.step, "episode": self.episode, "episode_return": stats.ret,
                               "episode_length": stats.length, "fps": fps, "elapsed": self._elapsed()}
        if stats.success is not None:
            row["success"] = float(stats.success)
        row.update(stats.rewards)  # model_reward / gt_reward sums (episode_return is what the agent was given)
        if self.on_robot:
            row.update({"interventions": 0.0, "overruns": 0.0, "safety_stop": 0.0, "operator_steps": 0.0,
                        **stats.robot})
        for key in {k for m in stats.updates for k in m}:  # agents may return {} on steps they skip
            row[key] = float(np.mean([m[key] for m in stats.updates if key in m]))
            if not np.isfinite(row[key]):
                raise DivergenceError(f"{key} became {row[key]} during episode {self.episode} (frame {self.frame}); "
                                      f"the last checkpoint in {self.run_dir / 'checkpoints'} is intact")
        self.logger.log("train", self.frame, row)

    def evaluate(self) -> dict[str, Any]:
        """Run ``cfg.eval_episodes`` deterministic-policy episodes on fixed seeds; log, record a video, plot."""
        cfg = self.cfg
        seeds = [EVAL_SEED_BASE + i for i in range(int(cfg.eval_episodes))]
        video = self.run_dir / "videos" / f"eval_{self.frame:012d}.mp4" if cfg.save_video else None
        beat = Heartbeat(f"eval @ {self.frame} frames", write=self.console.print)  # 10 episodes can take minutes
        where = {"episode": 0, "step": 0}

        def on_reset() -> None:
            where["episode"], where["step"] = where["episode"] + 1, 0
            self.agent.reset()

        def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            where["step"] += 1
            beat.tick(lambda: f"episode {where['episode']}/{len(seeds)}, step {where['step']}")
            return self.agent.act(obs, self.step, eval_mode=True)

        robot_events = self._robot_interventions()
        with self._policy_only():
            results = self._run_eval_episodes(seeds, video, policy, on_reset)
        summary = summarize(results)
        if self.on_robot:
            summary["interventions_per_episode"] = (self._robot_interventions() - robot_events) / max(len(seeds), 1)
        row = {"step": self.step, "episode": self.episode, "episode_return": summary["return_mean"],
               "episode_return_std": summary["return_std"], "episode_length": summary["length_mean"],
               "elapsed": self._elapsed()}
        if summary["success_rate"] is not None:
            row["success"] = summary["success_rate"]
        if self.on_robot:
            row["interventions_per_episode"] = summary["interventions_per_episode"]
        row.update({k: v for k, v in self.env_info.items() if k.endswith("version")})
        self.logger.log("eval", self.frame, row)
        while self.next_eval_frame <= self.frame:
            self.next_eval_frame += int(cfg.eval_every_frames)
        self.last_eval = {"frame": self.frame, **summary}
        if self.first_eval is None:
            self.first_eval = self.last_eval
        success = "" if summary["success_rate"] is None else f", success {summary['success_rate']:.0%}"
        gt = "" if is_env_reward(cfg.reward) else "ground-truth "  # eval env has the env's own reward
        self.console.print(f"eval @ {self.frame} frames: {gt}return {summary['return_mean']:.1f} "
                           f"± {summary['return_std']:.1f}{success}")
        self._plot()
        return summary

    def _run_eval_episodes(self, seeds: list[int], video: Path | None, policy: Any, on_reset: Any) -> list[dict]:
        """One result per eval seed (the vector trainer plays them in parallel)."""
        return run_episodes(self.eval_env, policy, seeds, video, on_reset=on_reset)

    @contextlib.contextmanager
    def _policy_only(self) -> Any:
        """Evaluations and baselines measure the policy alone: no operator takes over meanwhile."""
        operator = getattr(self.eval_env, "operator", None)
        if operator is not None:
            self.eval_env.operator = None
        try:
            yield
        finally:
            if operator is not None:
                self.eval_env.operator = operator

    def _robot_interventions(self) -> int:
        """Safety-layer interventions on the run's arm so far (0 without one)."""
        if not self.on_robot:
            return 0
        return self.eval_env.intervention_total()

    def _plot(self) -> None:
        from robotrl.workflows.plot import plot_runs

        try:
            plot_runs([self.run_dir], self.run_dir / "curve.png", reps=0)
        except ValueError as e:  # e.g. no eval rows yet
            log.debug("no curve: %s", e)

    def finish(self) -> dict[str, Any]:
        """Compare the final evaluation with trivial policies on the same eval seeds; write summary.json."""
        cfg = self.cfg
        self.logger.close()
        summary: dict[str, Any] = {"env": cfg.env.name, "agent": cfg.agent.name, "seed": int(cfg.seed),
                                   "frames": self.frame, "elapsed_s": self._elapsed(), "final_eval": self.last_eval,
                                   "first_eval": self.first_eval,
                                   **{k: v for k, v in self.env_info.items() if k.endswith("version")}}
        if cfg.compare_baselines and cfg.eval_episodes > 0:
            summary.update(self._compare_with_baselines())
        summary.update(self._extra_counters())  # beside frames: steps discarded by restarted workers/actors
        if self.dist.enabled:
            summary["world_size"] = self.dist.world_size
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))
        self.env.close()
        if self.eval_env is not self.env.unwrapped:
            self.eval_env.close()
        if not self.dist.is_main:
            self._scratch.cleanup()
        destroy_process_group()
        return summary

    def _compare_with_baselines(self) -> dict[str, Any]:
        """Random, best-constant and first-eval baselines beside the final eval; warn when it beats none of them."""
        cfg = self.cfg
        seeds = [EVAL_SEED_BASE + i for i in range(int(cfg.eval_episodes))]
        self.console.print(f"evaluating trivial policies on the same {len(seeds)} eval seeds "
                           f"(random, constant actions)...")
        if self.on_robot:  # the same arm and seeds (no simulator copy of a robot to play them on)
            with self._policy_only():
                baselines = trivial_baselines(self.eval_env, seeds, int(cfg.seed))
        else:
            baselines = trivial_baselines_for(cfg.env, seeds, int(cfg.seed))
        out: dict[str, Any] = {"baselines": baselines}
        if self.last_eval is None:
            return out
        against = {"random": baselines["random"], "constant": baselines["constant"]}
        if self.first_eval is not None and self.first_eval["frame"] != self.last_eval["frame"]:
            against["first_eval"] = self.first_eval
        verdict = compare(self.last_eval, against)
        out["vs_baselines"] = verdict
        self.console.print(f"[bold]final eval on {cfg.env.name} at {self.frame} frames, {len(seeds)} episodes each, "
                           f"same seeds:[/bold]", soft_wrap=True)
        self.console.print(comparison_table(self.last_eval, against, label="trained agent"), soft_wrap=True,
                           highlight=False)
        if verdict["beats_all"]:
            self.console.print("the trained agent beats every trivial policy (by > 2 standard errors)")
        else:
            message = (f"the final eval is not clearly above {', '.join(verdict['not_beaten'])}: the policy may be "
                       f"saturated or stuck, not learning")
            log.warning(message)
            self.console.print(f"[bold yellow]WARNING: {message}[/bold yellow]", soft_wrap=True)
        return out
