"""Stable-Baselines3 agents (``agent=sb3_sac``, ``agent=sb3_ppo``) on robotrl's envs, rewards, logs and checkpoints.

SB3 owns its learning loop (SAC: off-policy with SB3's replay buffer; PPO: on-policy rollouts), so these agents do
not fit the trainer's ``act -> update -> step`` loop. :class:`SB3Trainer` is the :class:`~robotrl.trainer.Trainer`
with that loop replaced by ``model.learn(callback=...)``; everything around it is the trainer's own code: the env
factory and reward layer (``reward=clip`` ...), ``train.csv``/``eval.csv``/TensorBoard rows, seeded ground-truth
evaluation with videos, atomic checkpoints, ``resume=true`` and ``robotrl eval`` (:class:`SB3Agent` implements the
``Agent`` protocol's ``act``/``state_dict``/``load_state_dict``, so ``make_agent`` rebuilds it for evaluation).

Counting: SB3 timesteps are agent steps; frames are steps x ``env.action_repeat`` as in the trainer.
``replay.capacity`` is SAC's ``buffer_size`` and ``seed_frames // action_repeat`` its ``learning_starts`` (one knob
each, shared with the other agents); PPO has neither.

Resume. Episode ``i`` resets with ``episode_seed(seed, i)`` (SB3's own reset seeds are replaced, see
:class:`EpisodeSeeds`) and checkpoints are taken only at episode ends, as in the trainer. A checkpoint holds SB3's
networks and optimisers (``get_parameters``), SAC's entropy coefficient, SB3's counters, the action space's RNG
(SAC's warm-up actions), the global python/numpy/torch RNGs (SB3 samples actions with torch and replay indices with
numpy's global RNG) and SAC's replay buffer. So:

- SAC resumes exactly: the checkpoint is written after SB3 stored the episode's last transition and took that
  step's gradient update (at the next rollout start), and the next episode starts from the same seeded reset.
  Training 200 frames, then resuming to 400, gives bit-identical parameters to training 400 in one go.
- PPO resumes its networks, optimiser, counters and RNGs, but not the partial rollout collected since its last
  update (episode ends rarely coincide with rollout ends): the resumed run starts a fresh rollout, so its updates
  fall on other steps than the uninterrupted run's. Those frames still count; the run is not bit-identical.

Observations: always SB3's ``MultiInputPolicy`` over robotrl's dict observation, with :class:`ObsExtractor`
(``state`` as is, ``pixels`` through ``agent.cnn``: SB3's NatureCNN from 36x36, or DrQ-v2's encoder from 16x16;
SB3 scales the uint8 channels-first frames to [0, 1]). SB3's replay stores observation and next observation in
full, so pixel SAC needs ~127 KB per transition at 84x84 with 3 stacked frames: a ``replay.capacity`` that cannot
fit in memory is refused up front. Threads: the trainer's ``torch_threads`` applies (SB3 does not change it).
Diagnostic: the actor's and critic's dormant ratio every ``dormant_every`` SB3 ``train()`` calls
(:mod:`robotrl.agents.sb3_dormant`), in ``train.csv`` as for the other agents.
Not supported: VecNormalize, learning-rate schedules (SB3 arguments are plain numbers from the config), several
envs in parallel (one env, as the trainer).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from robotrl.checkpoint import check_agent_state
from robotrl.errors import CheckpointError, ConfigError
from robotrl.trainer import EpisodeStats, GracefulInterrupt, Trainer, episode_seed

from . import agent_config
from .sb3_dormant import DormantCallback

log = logging.getLogger(__name__)
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"SAC": SAC, "PPO": PPO}
CNNS = ("nature", "drqv2")
NATURE_MIN_SIZE = 36  # 8x8/4, 4x4/2, 3x3/1 convolutions leave nothing of a smaller image
# Algorithm arguments robotrl sets itself; the message says which config key to use instead.
RESERVED = {
    "policy": "always MultiInputPolicy (robotrl observations are dicts); shape it with agent.policy_kwargs",
    "env": "the env comes from env=...", "seed": "use the run-level seed=...", "device": "use device=...",
    "verbose": "progress and metrics go to the console and train.csv", "tensorboard_log": "use tensorboard=...",
    "buffer_size": "use replay.capacity=...", "learning_starts": "use seed_frames=... (frames, not steps)",
    "policy_kwargs": "use agent.policy_kwargs (not an algorithm argument)", "_init_setup_model": "internal",
}
SKIP_METRICS = ("n_updates",)  # SB3's train/ counters that are not per-update metrics


def _plain(value: Any) -> Any:
    """Hydra passes nested config values as DictConfig/ListConfig; SB3 wants dicts, lists and tuples."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


# ------------------------------------------------------------------------------------------------ networks
class DrQv2CNN(nn.Module):
    """DrQ-v2's encoder (3x3 convolutions, stride 2 then 1) and trunk (Linear, LayerNorm, tanh).

    Unlike SB3's NatureCNN it works on any image from 16x16 (robotrl's smallest ``env.image_size``), so the tiny
    test envs and 84x84 runs use the same network family.
    """

    def __init__(self, space: gym.spaces.Box, features_dim: int) -> None:
        super().__init__()
        channels = space.shape[0]
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, *space.shape)).shape[1]
        self.trunk = nn.Sequential(nn.Linear(n_flat, features_dim), nn.LayerNorm(features_dim), nn.Tanh())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.convs(pixels))  # SB3 already scaled uint8 pixels to [0, 1] (normalize_images)


class ObsExtractor(BaseFeaturesExtractor):
    """robotrl's dict observation -> one feature vector: a CNN on ``pixels``, ``state`` as is, concatenated.

    SB3's own CombinedExtractor hard-codes NatureCNN, which needs images of at least 36x36.
    """

    def __init__(self, observation_space: gym.spaces.Dict, cnn: str = "nature", cnn_features_dim: int = 256):
        check_cnn(observation_space, cnn)
        encoders: dict[str, nn.Module] = {}
        total = 0
        for key, space in observation_space.spaces.items():
            if key == "pixels":
                encoders[key] = (NatureCNN(space, features_dim=cnn_features_dim) if cnn == "nature"
                                 else DrQv2CNN(space, cnn_features_dim))
                total += cnn_features_dim
            else:
                encoders[key] = nn.Flatten()
                total += int(np.prod(space.shape))
        super().__init__(observation_space, features_dim=total)
        self.encoders = nn.ModuleDict(encoders)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([encoder(observations[key]) for key, encoder in self.encoders.items()], dim=1)


def check_cnn(observation_space: gym.spaces.Dict, cnn: str) -> None:
    """Raise ConfigError (one line) for a CNN that cannot read these pixels, before SB3 asserts deep inside."""
    if cnn not in CNNS:
        raise ConfigError(f"agent.cnn={cnn!r} is not one of {', '.join(CNNS)}")
    if "pixels" not in observation_space.spaces:
        return
    channels, height, width = observation_space["pixels"].shape
    if cnn == "nature" and min(height, width) < NATURE_MIN_SIZE:
        raise ConfigError(f"agent.cnn=nature (SB3's NatureCNN) needs images of at least {NATURE_MIN_SIZE}x"
                          f"{NATURE_MIN_SIZE}, got env.image_size={height}; use agent.cnn=drqv2 (from 16x16) or a "
                          f"larger env.image_size")
    if channels >= min(height, width):  # SB3 takes the smallest dimension for the channels and would transpose
        raise ConfigError(f"pixels of shape {(channels, height, width)}: SB3 reads the smallest dimension as the "
                          f"channels, so {channels} stacked channels need env.image_size > {channels} "
                          f"(or a smaller env.frame_stack)")


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


class _SpacesEnv(gym.Env):
    """An env with only spaces: SB3 builds a model from an env, and ``robotrl eval`` needs only the policy."""

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        raise RuntimeError("_SpacesEnv is a placeholder for building a policy; it cannot be stepped")

    def step(self, action: Any):
        raise RuntimeError("_SpacesEnv is a placeholder for building a policy; it cannot be stepped")


# ------------------------------------------------------------------------------------------------ agent
def _check_kwargs(algorithm: str, cls: type[BaseAlgorithm], kwargs: Mapping[str, Any]) -> None:
    """Unknown or robotrl-owned algorithm arguments -> ConfigError naming the key and what to do instead."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key, value in kwargs.items():
        if key in RESERVED:
            raise ConfigError(f"agent.{key}={value!r} is set by robotrl for SB3 {algorithm}: {RESERVED[key]}")
        if key not in accepted:
            valid = ", ".join(sorted(accepted - set(RESERVED)))
            raise ConfigError(f"agent.{key}={value!r} is not an argument of SB3 {algorithm}; valid: {valid}")


class SB3Agent:
    """A Stable-Baselines3 algorithm behind robotrl's ``Agent`` protocol (``act``, ``state_dict``, ...).

    ``train_env`` given: the model trains on it (``learn``); ``run_kwargs`` carries the run-level ``seed``,
    ``buffer_size`` and ``learning_starts`` (the latter two only for off-policy algorithms). Without it the model
    is built on the spaces alone, with a one-transition replay buffer: enough to load a checkpoint and act
    (``robotrl eval``). Every other keyword is an argument of the SB3 algorithm (``learning_rate``, ...).
    """

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box, device: str,
                 algorithm: str, cnn: str = "nature", cnn_features_dim: int = 256,
                 policy_kwargs: Mapping[str, Any] | None = None, train_env: gym.Env | None = None,
                 run_kwargs: Mapping[str, Any] | None = None, dormant_every: int = 10,
                 dormant_threshold: float = 0.025, **algorithm_kwargs: Any) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"agent.algorithm={algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        cls = ALGORITHMS[algorithm]
        # YAML has no tuples; SB3 wants one for train_freq=(1, "episode") and no list elsewhere at this level
        algorithm_kwargs = {k: tuple(v) if isinstance(v, list) else v
                            for k, v in ((k, _plain(v)) for k, v in algorithm_kwargs.items())}
        _check_kwargs(algorithm, cls, algorithm_kwargs)
        policy_kwargs = dict(_plain(policy_kwargs) or {})
        if "features_extractor_class" in policy_kwargs or "features_extractor_kwargs" in policy_kwargs:
            raise ConfigError("agent.policy_kwargs sets the features extractor; robotrl's is ObsExtractor, "
                              "configured by agent.cnn and agent.cnn_features_dim")
        check_cnn(observation_space, cnn)
        self.dormant = DormantCallback(dormant_every, dormant_threshold,
                                       seed=int((run_kwargs or {}).get("seed") or 0))  # diagnostic, sb3_dormant.py
        self.algorithm, self.name = algorithm, f"sb3_{algorithm.lower()}"
        self.off_policy = issubclass(cls, OffPolicyAlgorithm)
        self._arch = {"algorithm": algorithm, "cnn": cnn, "cnn_features_dim": int(cnn_features_dim),
                      "policy_kwargs": json.dumps(policy_kwargs, sort_keys=True, default=str)}
        self._shapes = {k: list(s.shape) for k, s in observation_space.spaces.items()} | {
            "action": list(action_space.shape)}
        run = dict(run_kwargs or {})
        if not self.off_policy:
            for key in ("buffer_size", "learning_starts"):
                run.pop(key, None)
        elif train_env is None:
            run.update(buffer_size=1, learning_starts=0)  # a policy to evaluate, not to train
        env = DummyVecEnv([lambda: train_env if train_env is not None else _SpacesEnv(observation_space,
                                                                                      action_space)])
        policy_kwargs.update(features_extractor_class=ObsExtractor,
                             features_extractor_kwargs={"cnn": cnn, "cnn_features_dim": int(cnn_features_dim)})
        try:
            self.model = cls("MultiInputPolicy", env, policy_kwargs=policy_kwargs, device=get_device(device),
                             verbose=0, **run, **algorithm_kwargs)
        except (ValueError, TypeError, AssertionError) as e:  # SB3 validates values with all three
            raise ConfigError(f"SB3 {algorithm} rejected the agent config: {e}".splitlines()[0][:400]) from e
        # robotrl logs SB3's train/* values itself; SB3's default logger would make a /tmp/SB3-<date> folder per learn()
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        if self.off_policy and self.model.train_freq.frequency != 1:
            raise ConfigError(f"agent.train_freq={algorithm_kwargs.get('train_freq')!r}: robotrl checkpoints at "
                              f"episode ends, which must be SB3 rollout ends; use train_freq 1 (step) or "
                              f"[1, episode] (raise gradient_steps for more updates per step)")

    # ---------------------------------------------------------------- Agent protocol
    def reset(self) -> None:
        """Nothing per episode: SB3 policies here are memoryless."""

    def act(self, obs: dict[str, np.ndarray], step: int, eval_mode: bool) -> np.ndarray:
        """The deterministic (eval) or sampled action for one observation, float32 in the env's bounds."""
        action, _ = self.model.predict(obs, deterministic=eval_mode)
        return np.asarray(action, dtype=np.float32)

    def update(self, replay: Any, step: int) -> dict[str, float]:
        raise NotImplementedError("SB3 agents train inside SB3's learn() (SB3Trainer), not through update()")

    def learn(self, steps: int, callback: BaseCallback) -> None:
        """Run SB3's own loop for up to ``steps`` more agent steps (the callback stops it at an episode end)."""
        callbacks = CallbackList([callback, self.dormant]) if self.dormant.every else callback
        self.model.learn(steps, callback=callbacks, log_interval=None, reset_num_timesteps=False)

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, SAC's entropy coefficient, counters and the action space's RNG (tensors/plain)."""
        model = self.model
        _, variables = model._get_torch_save_params()
        return {
            "agent": self.name, "shapes": self._shapes, "config": self._arch,
            "params": model.get_parameters(),
            "variables": {name: _getattr(model, name).detach().cpu().clone() for name in variables},
            "counters": {"num_timesteps": int(model.num_timesteps), "n_updates": int(model._n_updates),
                         "episode_num": int(model._episode_num)},
            # a PCG64 state holds 128-bit ints, kept as JSON text for torch.load(weights_only=True)
            "action_space_rng": json.dumps(model.action_space.np_random.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_agent_state(state, self.name, self._shapes, self._arch, tuple(self._arch))
        model = self.model
        try:
            model.set_parameters(state["params"], exact_match=True, device=model.device)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"SB3 {self.algorithm} checkpoint does not fit this model: {e}"
                                  .splitlines()[0][:400]) from e
        with torch.no_grad():
            for name, value in state["variables"].items():
                _getattr(model, name).copy_(value)
        counters = state["counters"]
        model.num_timesteps, model._n_updates = int(counters["num_timesteps"]), int(counters["n_updates"])
        model._episode_num = int(counters["episode_num"])
        model.action_space.np_random.bit_generator.state = json.loads(state["action_space_rng"])


def _getattr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


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
    """Drives the trainer's per-episode work from inside SB3's ``learn``: train.csv rows, evaluation, checkpoints.

    Off-policy, SB3 stores a step's transition and trains on it after ``on_step``; the episode-end work therefore
    waits for the next ``on_rollout_start`` (train_freq 1), when replay and networks include the last step, so
    the checkpoint is exact. SB3 can only be stopped from ``on_step``, i.e. once it has taken the next env step:
    that step is dropped (never stored or trained on) and the checkpoint was written before it.
    On-policy (PPO), the work happens at the episode's last step and training stops there.
    """

    def __init__(self, trainer: SB3Trainer, total_steps: int) -> None:
        super().__init__()
        self.trainer, self.total_steps = trainer, total_steps
        self.off_policy = trainer.agent.off_policy
        self.stats = EpisodeStats()
        self.finished = False  # an episode ended at or after cfg.frames and its checkpoint is written
        self._episode_over = False
        self.interrupt: GracefulInterrupt | None = None

    def _on_rollout_start(self) -> None:
        self._collect_metrics()
        if self._episode_over:
            self._episode_over = False
            self._end_episode()

    def _on_step(self) -> bool:
        if self.finished:
            return False
        if self.interrupt is not None:
            self.interrupt.check()  # Ctrl-C, raised here between env steps (see robotrl.trainer.GracefulInterrupt)
        trainer = self.trainer
        trainer.step += 1
        self.stats.add_step(float(self.locals["rewards"][0]), self.locals["infos"][0])
        if not self.locals["dones"][0]:
            if trainer.step % 100 == 0:
                progress, task = trainer._progress_task
                progress.update(task, completed=min(trainer.step, self.total_steps))
            return True
        if self.off_policy:
            self._episode_over = True
            return True
        self._end_episode()
        return not self.finished

    def _end_episode(self) -> None:
        self.finished = self.trainer._end_episode(self.stats, self.total_steps)
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


class SB3Trainer(Trainer):
    """The trainer with SB3's ``learn`` as its loop (``Trainer(cfg)`` returns one for ``agent=sb3_*``)."""

    agent: SB3Agent

    def _build_agent(self) -> None:
        cfg = self.cfg
        hparams = agent_config(cfg.agent, cfg.env.name)
        for key in ("name", "_target_"):
            hparams.pop(key, None)
        self.seeded_env = EpisodeSeeds(self.env, int(cfg.seed))
        run_kwargs = {"seed": int(cfg.seed), "buffer_size": int(cfg.replay.capacity),
                      "learning_starts": int(cfg.seed_frames) // self.action_repeat}
        if cfg.replay.storage_dir is not None:
            raise ConfigError(f"replay.storage_dir={cfg.replay.storage_dir!r}: SB3 agents keep SB3's replay "
                              f"buffer in memory; use replay.storage_dir=null")
        self._check_replay_memory(hparams)
        self.agent = SB3Agent(self.env.observation_space, self.env.action_space, str(self.device),
                              train_env=self.seeded_env, run_kwargs=run_kwargs, **hparams)
        buffer = getattr(self.agent.model, "replay_buffer", None)
        self.replay = SB3Replay(buffer) if buffer is not None else None  # type: ignore[assignment]

    def _check_replay_memory(self, hparams: dict[str, Any]) -> None:
        """SB3 stores obs and next_obs in full (no frame sharing): refuse a capacity that cannot fit in memory."""
        cls = ALGORITHMS.get(hparams.get("algorithm", ""))
        if cls is None or not issubclass(cls, OffPolicyAlgorithm):
            return  # on-policy: a rollout buffer of n_steps, no replay (an unknown algorithm fails in SB3Agent)
        space = self.env.observation_space
        per_step = 2 * sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in space.spaces.values())
        need = int(self.cfg.replay.capacity) * per_step
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # numpy allocates lazily: fail now
        if need > memory:
            raise ConfigError(f"replay.capacity={self.cfg.replay.capacity} needs {need / 2**30:.1f} GiB for SB3's "
                              f"replay buffer (observation and next observation stored in full, {per_step} bytes "
                              f"per step), more than this machine's {memory / 2**30:.1f} GiB; lower "
                              f"replay.capacity (at most {memory // per_step} fit in memory)")

    def _restore_replay(self, path: Path) -> None:
        if self.replay is None:
            return  # on-policy: no replay; the partial rollout is not checkpointed (see module docstring)
        if (path / "replay").exists():
            self.replay.load(path / "replay")  # type: ignore[attr-defined]
        else:
            log.warning("checkpoint %s has no replay buffer: resuming with an empty buffer (not exact)", path)

    def train(self) -> dict[str, Any]:
        """Train until the first episode end at or after ``cfg.frames``; return the final summary."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        total_steps = int(cfg.frames) // self.action_repeat
        if self.frame >= self.next_eval_frame and cfg.eval_episodes > 0:
            self.evaluate()
        if self.step < total_steps:
            progress, _ = self._make_progress(total_steps)
            callback = _EpisodeCallback(self, total_steps)
            self.seeded_env.next_episode = self.episode
            # room for the last episode to end past total_steps (+1: the dropped step, see _EpisodeCallback)
            budget = total_steps - self.step + int(self.env_info["max_agent_steps"]) + 1
            with progress, GracefulInterrupt() as interrupt:
                callback.interrupt = interrupt
                self.agent.learn(budget, callback)
            if not callback.finished:
                raise RuntimeError(f"SB3 stopped at step {self.step} before an episode ended at or after step "
                                   f"{total_steps} (budget {budget} steps)")
        return self.finish()
