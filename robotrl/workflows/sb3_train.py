"""The training workflow for Stable-Baselines3 agents (``agent=sb3_sac``, ``agent=sb3_ppo``).

:class:`SB3Trainer` runs SB3's ``model.learn(callback=...)`` in place of the trainer's collector loop; everything
around it is the trainer's own parts (:mod:`robotrl.workflows.trainer`): the env factory and reward layer
(``reward=clip`` ...), the run state and schedule, ``train.csv``/``eval.csv``/TensorBoard rows, seeded ground-truth
evaluation with videos, atomic checkpoints, ``resume=true``. The agent itself
(:class:`~robotrl.agents.sb3.SB3Agent`) and the resume semantics are documented in :mod:`robotrl.agents.sb3`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from robotrl.agents import agent_config
from robotrl.agents.sb3 import ALGORITHMS, SKIP_METRICS, SB3Agent
from robotrl.errors import CheckpointError, ConfigError
from robotrl.workflows.trainer.console import GracefulInterrupt
from robotrl.workflows.trainer.loop import RunView
from robotrl.workflows.trainer.run import Run, closed_on_error
from robotrl.workflows.trainer.schedule import episode_seed
from robotrl.workflows.trainer.stats import EpisodeStats

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ env
class EpisodeSeeds(gym.Wrapper):
    """Reset training episode ``i`` with ``episode_seed(run_seed, i)``, as the trainer does, ignoring SB3's seeds.

    SB3's VecEnv passes its own seed to the first reset and none afterwards; robotrl derives every episode's seed
    from (run seed, episode index) so that a resumed run replays the episodes the uninterrupted run would have.
    ``next_episode`` is set from the trainer's episode counter before ``learn``.
    """

    def __init__(self, env: gym.Env, run_seed: int) -> None:
        super().__init__(env)
        self.run_seed = run_seed
        self.next_episode = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=episode_seed(self.run_seed, self.next_episode), options=options)
        self.next_episode += 1
        return obs, info


# ------------------------------------------------------------------------------------------------ replay
class SB3Replay:
    """SB3's replay buffer in a robotrl checkpoint: the filled rows of each array as ``.npy``, plus its cursor.

    Saved through :func:`robotrl.checkpoint.save_checkpoint` (``save(dir)``) so the checkpoint stays one atomic
    directory with a manifest, and loaded without pickle.
    """

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def _arrays(self) -> dict[str, np.ndarray]:
        buf, arrays = self.buffer, {}
        for name in ("observations", "next_observations"):
            value = getattr(buf, name)
            if isinstance(value, dict):
                arrays.update({f"{name}.{key}": arr for key, arr in value.items()})
            else:
                arrays[name] = value
        arrays.update({name: getattr(buf, name) for name in ("actions", "rewards", "dones", "timeouts")})
        return arrays

    def _filled(self) -> int:
        return self.buffer.buffer_size if self.buffer.full else self.buffer.pos

    def save(self, path: Path) -> None:
        path.mkdir(parents=True)
        n = self._filled()
        for name, arr in self._arrays().items():
            np.save(path / f"{name}.npy", arr[:n])
        meta = {"pos": int(self.buffer.pos), "full": bool(self.buffer.full),
                "buffer_size": int(self.buffer.buffer_size)}
        (path / "meta.json").write_text(json.dumps(meta))

    def load(self, path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        if meta["buffer_size"] != self.buffer.buffer_size:
            raise CheckpointError(f"checkpoint replay {path} has capacity {meta['buffer_size']}, this run "
                                  f"replay.capacity={self.buffer.buffer_size}; resume with the same capacity")
        self.buffer.pos, self.buffer.full = int(meta["pos"]), bool(meta["full"])
        n = self._filled()
        for name, arr in self._arrays().items():
            data = np.load(path / f"{name}.npy", mmap_mode="r")
            if data.shape != arr[:n].shape or data.dtype != arr.dtype:
                raise CheckpointError(f"checkpoint replay array {path / name}.npy is {data.dtype}{data.shape}, "
                                      f"expected {arr.dtype}{arr[:n].shape}")
            arr[:n] = data


# ------------------------------------------------------------------------------------------------ trainer
class _EpisodeCallback(BaseCallback):
    """Drives the run's per-episode work from inside SB3's ``learn``: train.csv rows, evaluation, checkpoints.

    Off-policy, SB3 stores a step's transition and trains on it after ``on_step``; the episode-end work therefore
    waits for the next ``on_rollout_start`` (train_freq 1), when replay and networks include the last step, so
    the checkpoint is exact. SB3 can only be stopped from ``on_step``, i.e. once it has taken the next env step:
    that step is dropped (never stored or trained on) and the checkpoint was written before it.
    On-policy (PPO), the work happens at the episode's last step and training stops there.
    """

    def __init__(self, run: Run, off_policy: bool) -> None:
        super().__init__()
        self.run, self.off_policy = run, off_policy
        self.stats = EpisodeStats()
        self.finished = False  # an episode ended at or after cfg.frames and its checkpoint is written
        self._episode_over = False
        self.interrupt: GracefulInterrupt | None = None
        self.updating = contextlib.ExitStack()  # SB3's gradient steps: from a rollout's end to the next's start

    def _on_rollout_end(self) -> None:
        if self.interrupt is not None:
            self.updating.enter_context(self.interrupt.anytime())

    def _on_rollout_start(self) -> None:
        self.updating.close()
        self._collect_metrics()
        if self._episode_over:
            self._episode_over = False
            self._end_episode()

    def _on_step(self) -> bool:
        if self.finished:
            return False
        if self.interrupt is not None:
            self.interrupt.check()  # Ctrl-C, raised here between env steps (see trainer.console.GracefulInterrupt)
        run = self.run
        run.state.step += 1
        self.stats.add_step(float(self.locals["rewards"][0]), self.locals["infos"][0])
        if self.locals["infos"][0].get("reward_invalid"):  # SB3 stores this step next: keep its reward out
            run.agent.flag_reward_invalid()
        if not self.locals["dones"][0]:
            if run.state.step % 100 == 0:
                run.progress.steps(run.state.step)
            return True
        if self.off_policy:
            self._episode_over = True
            return True
        self._end_episode()
        return not self.finished

    def _end_episode(self) -> None:
        self.run.episode_finished(self.stats)
        self.finished = self.run.between_episodes()
        self.stats = EpisodeStats()

    def _collect_metrics(self) -> None:
        """Move SB3's ``train/*`` values (recorded by its last ``train()``) into the episode's update metrics."""
        logger = self.model.logger
        keys = [k for k in logger.name_to_value if k.startswith("train/")]
        metrics = {k.removeprefix("train/"): float(logger.name_to_value[k]) for k in keys
                   if k.removeprefix("train/") not in SKIP_METRICS}
        for key in keys:
            for table in (logger.name_to_value, logger.name_to_count, logger.name_to_excluded):
                table.pop(key, None)
        if metrics:
            self.stats.updates.append(metrics)


@dataclass
class SB3Parts:
    """The SB3 agent (its model owns the buffers), its replay in robotrl checkpoints (None on-policy) and the env
    whose resets follow the run's episode seeds."""

    agent: SB3Agent
    replay: SB3Replay | None
    seeded_env: EpisodeSeeds

    @classmethod
    def build(cls, cfg: Any, env: gym.Env, device: Any, action_repeat: int) -> SB3Parts:
        hparams = agent_config(cfg.agent, cfg.env.name)
        for key in ("name", "_target_"):
            hparams.pop(key, None)
        seeded_env = EpisodeSeeds(env, int(cfg.seed))
        run_kwargs = {"seed": int(cfg.seed), "buffer_size": int(cfg.replay.capacity),
                      "learning_starts": int(cfg.seed_frames) // action_repeat}
        if cfg.replay.storage_dir is not None:
            raise ConfigError(f"replay.storage_dir={cfg.replay.storage_dir!r}: SB3 agents keep SB3's replay "
                              f"buffer in memory; use replay.storage_dir=null")
        check_replay_memory(hparams, env.observation_space, int(cfg.replay.capacity))
        agent = SB3Agent(env.observation_space, env.action_space, str(device), train_env=seeded_env,
                         run_kwargs=run_kwargs, **hparams)
        buffer = getattr(agent.model, "replay_buffer", None)
        return cls(agent, SB3Replay(buffer) if buffer is not None else None, seeded_env)


def check_replay_memory(hparams: dict[str, Any], space: gym.spaces.Dict, capacity: int) -> None:
    """SB3 stores obs and next_obs in full (no frame sharing): refuse a capacity that cannot fit in memory."""
    cls = ALGORITHMS.get(hparams.get("algorithm", ""))
    if cls is None or not issubclass(cls, OffPolicyAlgorithm):
        return  # on-policy: a rollout buffer of n_steps, no replay (an unknown algorithm fails in SB3Agent)
    per_step = 2 * sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in space.spaces.values())
    need = capacity * per_step
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # numpy allocates lazily: fail now
    if need > memory:
        raise ConfigError(f"replay.capacity={capacity} needs {need / 2**30:.1f} GiB for SB3's "
                          f"replay buffer (observation and next observation stored in full, {per_step} bytes "
                          f"per step), more than this machine's {memory / 2**30:.1f} GiB; lower "
                          f"replay.capacity (at most {memory // per_step} fit in memory)")


class SB3Trainer(RunView):
    """The run with SB3's ``learn`` as its loop (``make_trainer`` returns one for ``agent=sb3_*``); it shares the
    run state, schedule, evaluation and checkpoints of every trainer."""

    agent: SB3Agent

    def __init__(self, run: Run, parts: SB3Parts) -> None:
        self.run, self.parts = run, parts

    def load_replay(self, path: Path) -> None:
        """A checkpoint's SB3 replay into the model's buffer."""
        if self.parts.replay is None:
            return  # on-policy: no replay; the partial rollout is not checkpointed (see module docstring)
        if (path / "replay").exists():
            self.parts.replay.load(path / "replay")
        else:
            log.warning("checkpoint %s has no replay buffer: resuming with an empty buffer (not exact)", path)

    def train(self) -> dict[str, Any]:
        """Train until the first episode end at or after ``cfg.frames``; return the final summary."""
        run, state = self.run, self.run.state
        state.started = time.perf_counter()
        total_steps = state.schedule.total_steps
        with closed_on_error(run):
            if state.schedule.eval_due(run.frame):
                run.evaluate()
            if state.step < total_steps:
                callback = _EpisodeCallback(run, self.parts.agent.off_policy)
                self.parts.seeded_env.next_episode = state.episode
                # room for the last episode to end past total_steps (+1: the dropped step, see _EpisodeCallback)
                budget = total_steps - state.step + int(run.env_info["max_agent_steps"]) + 1
                with run.start_progress(), GracefulInterrupt() as interrupt, callback.updating:
                    callback.interrupt = interrupt
                    self.parts.agent.learn(budget, callback)
                if not callback.finished:
                    raise RuntimeError(f"SB3 stopped at step {state.step} before an episode ended at or after step "
                                       f"{total_steps} (budget {budget} steps)")
            return run.finish()
