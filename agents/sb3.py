"""Stable-Baselines3 agents (``agent=sb3_sac``, ``agent=sb3_ppo``) on robotrl's envs, rewards, logs and checkpoints.

SB3 owns its learning loop (SAC: off-policy with SB3's replay buffer; PPO: on-policy rollouts), so these agents do
not fit the trainer's ``act -> update -> step`` loop: the training workflow runs them with
:class:`robotrl.workflows.sb3_train.SB3Trainer` (``model.learn(callback=...)`` inside the trainer's run lifecycle).
:class:`SB3Agent` implements the ``Agent`` protocol's ``act``/``state_dict``/``load_state_dict``, so ``make_agent``
rebuilds it for ``robotrl eval``; this module holds the agent, its observation extractor and env adapters only.

Counting: SB3 timesteps are agent steps; frames are steps x ``env.action_repeat`` as in the trainer.
``replay.capacity`` is SAC's ``buffer_size`` and ``seed_frames // action_repeat`` its ``learning_starts`` (one knob
each, shared with the other agents); PPO has neither.

Resume. Episode ``i`` resets with ``episode_seed(seed, i)`` (SB3's own reset seeds are replaced, see
:class:`robotrl.workflows.sb3_train.EpisodeSeeds`) and checkpoints are taken only at episode ends, as in the
trainer. A checkpoint holds SB3's networks and optimisers (``get_parameters``), SAC's entropy coefficient,
SB3's counters, the action space's RNG (SAC's warm-up actions), the global python/numpy/torch RNGs (SB3 samples
actions with torch and replay indices with numpy's global RNG) and SAC's replay buffer. So:

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
from collections.abc import Mapping
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
from robotrl.params import require
from robotrl.types import Capabilities

from .sb3_buffers import FlaggedDictReplayBuffer, FlaggedDictRolloutBuffer
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
    "replay_buffer_class": "robotrl's keeps failed reward-model steps out (agents/sb3_buffers.py)",
    "rollout_buffer_class": "robotrl's keeps failed reward-model steps out (agents/sb3_buffers.py)",
}
# Ranges (robotrl.params kinds) of SB3's numeric arguments, checked when given as numbers: SB3 trains on a NaN gamma
# or a negative tau without a word. Schedules (callables) and strings (ent_coef="auto") go to SB3 unchecked.
SB3_RANGES = {
    "positive_int": ("batch_size", "n_steps", "n_epochs", "target_update_interval", "train_freq"),
    "positive": ("learning_rate", "clip_range", "max_grad_norm"), "nonneg": ("ent_coef", "vf_coef"),
    "unit": ("tau", "gamma"), "probability": ("gae_lambda",),
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


def _check_ranges(kwargs: Mapping[str, Any]) -> None:
    """Numeric algorithm arguments outside their range (SB3_RANGES) -> ConfigError naming the key."""
    def numbers(keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: kwargs[k] for k in keys if isinstance(kwargs.get(k), int | float)}

    require("agent", **{kind: numbers(keys) for kind, keys in SB3_RANGES.items()})
    steps = kwargs.get("gradient_steps")
    if isinstance(steps, int | float) and steps != -1:  # -1: as many gradient steps as env steps in the rollout
        require("agent", positive_int={"gradient_steps": steps})


class SB3Agent:
    """A Stable-Baselines3 algorithm behind robotrl's ``Agent`` protocol (``act``, ``state_dict``, ...).

    ``train_env`` given: the model trains on it (``learn``); ``run_kwargs`` carries the run-level ``seed``,
    ``buffer_size`` and ``learning_starts`` (the latter two only for off-policy algorithms). Without it the model
    is built on the spaces alone, with a one-transition replay buffer: enough to load a checkpoint and act
    (``robotrl eval``). Every other keyword is an argument of the SB3 algorithm (``learning_rate``, ...).
    """

    capabilities = Capabilities(owns_loop=True)  # SB3's learn() runs the loop (robotrl.workflows.sb3_train)

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
        _check_ranges(algorithm_kwargs)
        require("agent", positive_int={"cnn_features_dim": cnn_features_dim},
                nonneg_int={"dormant_every": dormant_every}, fraction={"dormant_threshold": dormant_threshold})
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
        if self.off_policy:  # buffers that keep failed reward-model steps (info["reward_invalid"]) out of learning
            run["replay_buffer_class"] = FlaggedDictReplayBuffer
        else:
            run["rollout_buffer_class"] = FlaggedDictRolloutBuffer
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

    def flag_reward_invalid(self) -> None:
        """The step SB3 stores next has a made-up reward (PPO's rollout buffer gets no infos; SAC's reads them)."""
        if not self.off_policy:
            self.model.rollout_buffer.flag_next()

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
