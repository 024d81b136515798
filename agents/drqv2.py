"""DrQ-v2 (Yarats et al., 2021): DDPG with n-step returns, clipped double Q and random-shift augmentation.

Same algorithm, hyperparameters and initialisation as facebookresearch/drqv2; the implementation differs only
where it is cheaper with the same numerics (see docs of each method):
  * random shift is an integer gather on uint8 instead of a bilinear grid_sample (identical values);
  * the conv stack runs channels_last (oneDNN's fast NHWC kernels) and its features are flattened as a view
    in (H, W, C) order (a fixed permutation of the trunk's inputs);
  * ``bf16=True`` (opt-in, off by default) runs the encoder under bf16 autocast: ~1.8x faster on CPUs with
    AMX/AVX512-BF16, but it changes the numerics (critic losses drift by up to ~4% over 40 updates);
  * the actor update does not compute critic parameter gradients that the reference computes and discards;
  * the target soft update is one fused ``_foreach_lerp_``;
  * all randomness comes from the agent's own generator, saved in ``state_dict`` so a resumed run continues
    bit-identically.

Diagnostic (no effect on training numerics): every ``dormant_every`` updates, ``update`` also returns the actor's
tau-dormant neuron ratio (``actor_dormant_ratio`` and per layer ``actor_dormant_ratio/<layer>``, see
:mod:`robotrl.agents.dormant`), measured with one extra no-grad actor forward on the batch's features.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robotrl.augment import random_shift, sample_shifts
from robotrl.checkpoint import check_agent_state
from robotrl.contract import check_obs_batch
from robotrl.errors import CheckpointError, ConfigError
from robotrl.params import require
from robotrl.types import Batch, Capabilities, Metrics, Obs

from .dormant import dormant_ratio
from .nets import ObsEncoder, TruncatedNormal, schedule, weight_init

NAME = "drqv2"


class Actor(nn.Module):
    """Trunk (Linear -> LayerNorm -> Tanh) to ``feature_dim``, then a 2-hidden-layer MLP to tanh(mean)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, action_dim),
        )  # fmt: skip
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, std: float) -> TruncatedNormal:
        mu = torch.tanh(self.policy(self.trunk(obs)))
        return TruncatedNormal(mu, torch.full_like(mu, std))


class Critic(nn.Module):
    """Shared trunk, then two independent Q MLPs on [features, action] (clipped double Q).

    ``dropout`` > 0 gives every hidden layer of the Q heads Dropout(dropout) + LayerNorm before its ReLU: the
    Meta-World critic of XuGW-Kevin/DrM ``agents/drm_mw.py`` (0.01 there); 0 is DrQ-v2's critic."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

        def hidden(in_dim: int) -> list[nn.Module]:
            regularise = [nn.Dropout(dropout), nn.LayerNorm(hidden_dim)] if dropout > 0 else []
            return [nn.Linear(in_dim, hidden_dim), *regularise, nn.ReLU(inplace=True)]

        def q_head() -> nn.Sequential:
            return nn.Sequential(*hidden(feature_dim + action_dim), *hidden(hidden_dim), nn.Linear(hidden_dim, 1))

        self.Q1, self.Q2 = q_head(), q_head()
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_action = torch.cat([self.trunk(obs), action], dim=-1)
        return self.Q1(h_action), self.Q2(h_action)


class DrQV2Agent:
    """DrQ-v2 agent; satisfies :class:`robotrl.types.Agent`.

    Subclasses (DrM) change it through four methods: :meth:`stddev` (exploration noise), :meth:`target_value`
    (the bootstrap value in the TD target), :meth:`before_updates` (runs on the batch's features before the
    critic and actor steps) and :attr:`agent_name` (the checkpoint tag).

    ``nstep`` and ``discount`` are replay settings (the trainer reads them from this config); the agent keeps
    them only to record them in checkpoints. ``compile`` wraps the encoder in ``torch.compile`` (opt-in: it
    costs ~10-20 s of compile time at start). ``aug_pad`` is the random-shift padding (4 in the paper).
    ``bf16`` runs the conv encoder under bf16 autocast in training updates (off by default: changes numerics).
    ``seed`` seeds the agent's private generator (augmentation, policy noise, exploration actions).
    ``dormant_every``: log the actor's dormant ratio every this many updates (0: never); ``dormant_threshold`` is
    its tau (0.025 as DrM's actor).
    """

    agent_name = NAME
    capabilities = Capabilities(batched_acting=True, own_generator=True)
    checked_config: tuple[str, ...] = ("feature_dim", "hidden_dim", "critic_dropout")  # must match to load

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Box,
        device: str,
        lr: float,
        feature_dim: int,
        hidden_dim: int,
        critic_target_tau: float,
        num_expl_steps: int,
        update_every_steps: int,
        stddev_schedule: str | float,
        stddev_clip: float,
        batch_size: int,
        nstep: int,
        discount: float,
        compile: bool = False,
        aug_pad: int = 4,
        channels_last: bool = True,
        bf16: bool = False,
        seed: int | None = None,
        dormant_every: int = 10,
        dormant_threshold: float = 0.025,
        critic_dropout: float = 0.0,
    ):
        if not isinstance(observation_space, gym.spaces.Dict):
            got = type(observation_space).__name__
            raise ConfigError(f"observation_space must be a gymnasium Dict, got {got}")
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ConfigError(f"action_space must be a 1-D gymnasium Box, got {action_space}")
        require("agent", positive_int={"feature_dim": feature_dim, "hidden_dim": hidden_dim,
                                       "update_every_steps": update_every_steps, "batch_size": batch_size,
                                       "nstep": nstep},
                nonneg_int={"num_expl_steps": num_expl_steps, "aug_pad": aug_pad, "dormant_every": dormant_every},
                positive={"lr": lr}, nonneg={"stddev_clip": stddev_clip},
                unit={"critic_target_tau": critic_target_tau, "discount": discount},
                fraction={"dormant_threshold": dormant_threshold, "critic_dropout": critic_dropout})
        schedule(stddev_schedule, 0)  # fail early on a malformed schedule string
        self.observation_space, self.action_space = observation_space, action_space
        self.device = torch.device(device)
        self.lr = float(lr)
        self.critic_target_tau = float(critic_target_tau)
        self.num_expl_steps = int(num_expl_steps)
        self.update_every_steps = int(update_every_steps)
        self.stddev_schedule = stddev_schedule
        self.stddev_clip = float(stddev_clip)
        self.batch_size = int(batch_size)
        self.nstep, self.discount = int(nstep), float(discount)
        self.aug_pad = int(aug_pad)
        self.dormant_every, self.dormant_threshold = int(dormant_every), float(dormant_threshold)
        self.config: dict[str, Any] = {
            "lr": self.lr, "feature_dim": int(feature_dim), "hidden_dim": int(hidden_dim),
            "critic_target_tau": self.critic_target_tau, "num_expl_steps": self.num_expl_steps,
            "update_every_steps": self.update_every_steps, "stddev_schedule": stddev_schedule,
            "stddev_clip": self.stddev_clip, "batch_size": self.batch_size, "nstep": self.nstep,
            "discount": self.discount, "aug_pad": self.aug_pad, "critic_dropout": float(critic_dropout),
        }  # fmt: skip
        self.shapes = {
            "obs": {k: list(s.shape) for k, s in sorted(observation_space.spaces.items())},
            "action": list(action_space.shape),
        }

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))

        action_dim = action_space.shape[0]
        self.encoder = ObsEncoder(observation_space, channels_last=channels_last).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic = Critic(repr_dim, action_dim, feature_dim, hidden_dim, critic_dropout).to(self.device)
        self.critic_target = Critic(repr_dim, action_dim, feature_dim, hidden_dim, critic_dropout).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)

        encoder_params = list(self.encoder.parameters())  # empty for a state-only encoder (identity)
        self.encoder_opt = torch.optim.Adam(encoder_params, lr=self.lr) if encoder_params else None
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.lr)

        # Only the encoder is worth compiling: it is ~90% of the FLOPs, the rest is a few GEMMs.
        self._encoder_fn = torch.compile(self.encoder) if compile else self.encoder
        self.bf16 = bool(bf16)
        self.train()

    # ------------------------------------------------------------------ acting
    def train(self, training: bool = True) -> None:
        self.training = training
        for m in (self.encoder, self.actor, self.critic):
            m.train(training)

    def reset(self) -> None:
        """Episode start. DrQ-v2 keeps no per-episode state (planners such as TD-MPC2 drop their warm start)."""

    def act(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """One action for one observation; uniform in [-1, 1] while ``step < num_expl_steps`` (training)."""
        return self.act_batch({k: np.asarray(v)[None] for k, v in obs.items()}, step, eval_mode)[0]

    def act_batch(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """Actions (N, A) for a batch of N observations (``env.num_envs``): one forward pass, same rules as act."""
        check_obs_batch(obs, self.observation_space)
        with torch.inference_mode():
            tensors = {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in obs.items()}
            dist = self.actor(self.encoder(tensors), self.stddev(step))
            if eval_mode:
                action = dist.mean
            elif step < self.num_expl_steps:
                action = torch.empty_like(dist.mean).uniform_(-1.0, 1.0, generator=self.generator)
            else:
                action = dist.sample(clip=None, generator=self.generator)
        return action.cpu().numpy().astype(np.float32, copy=False)

    def reset_env(self, index: int) -> None:
        """Episode start in batch slot ``index``; nothing to drop (see reset)."""

    def stddev(self, step: int) -> float:
        """Exploration noise std at ``step``: DrQ-v2's ``stddev_schedule``."""
        return schedule(self.stddev_schedule, step)

    # ---------------------------------------------------------------- learning
    def _encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder forward; with ``bf16`` the convs run under bf16 autocast (AMX/AVX512-BF16), features fp32."""
        if not self.bf16:
            return self._encoder_fn(obs)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self._encoder_fn(obs).float()

    def _augment(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move a batch to the device and random-shift the (uint8) pixels."""
        out = {k: v.to(self.device, non_blocking=True) for k, v in obs.items()}
        if "pixels" in out:
            pixels = out["pixels"]
            shifts = sample_shifts(pixels.shape[0], self.aug_pad, self.device, self.generator)
            out["pixels"] = random_shift(pixels, self.aug_pad, shifts)  # uint8; the encoder scales it
        if "state" in out:
            out["state"] = out["state"].float()
        return out

    def update_critic(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_obs: torch.Tensor, step: int) -> Metrics:
        """TD(n) regression of both Qs to r + gamma^n min(Q1', Q2')(s', a' ~ clipped policy).

        Trains the critic and, through it, the encoder.
        """
        with torch.no_grad():
            target_q = reward + discount * self.target_value(next_obs, step)

        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)

        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        return {
            "critic_target_q": target_q.mean().item(), "critic_q1": q1.mean().item(),
            "critic_q2": q2.mean().item(), "critic_loss": critic_loss.item(),
        }  # fmt: skip

    def target_value(self, next_obs: torch.Tensor, step: int) -> torch.Tensor:
        """min(Q1', Q2')(s', a') with a' from the clipped-noise policy (called under ``no_grad``)."""
        dist = self.actor(next_obs, self.stddev(step))
        next_action = dist.sample(clip=self.stddev_clip, generator=self.generator)
        target_q1, target_q2 = self.critic_target(next_obs, next_action)
        return torch.min(target_q1, target_q2)

    def update_actor(self, obs: torch.Tensor, step: int) -> Metrics:
        """Deterministic policy gradient through min(Q1, Q2) on detached features.

        The critic's parameters are frozen for this backward: the reference computes their gradients and
        throws them away (they are zeroed before the next critic step), so skipping them changes nothing.
        """
        stddev = self.stddev(step)
        dist = self.actor(obs, stddev)
        action = dist.sample(clip=self.stddev_clip, generator=self.generator)
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        self.critic.requires_grad_(False)
        try:
            q1, q2 = self.critic(obs, action)
            actor_loss = -torch.min(q1, q2).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
        finally:
            self.critic.requires_grad_(True)
        self.actor_opt.step()
        return {
            "actor_loss": actor_loss.item(), "actor_logprob": log_prob.mean().item(),
            "actor_ent": dist.entropy().sum(dim=-1).mean().item(), "actor_stddev": stddev,
        }  # fmt: skip

    def update(self, replay: Any, step: int) -> Metrics:
        """One DrQ-v2 update every ``update_every_steps`` agent steps (returns {} on the others).

        The next observation is encoded under ``no_grad`` in its own forward: batching it with ``obs`` would
        double the conv weight-gradient work in the backward for rows whose gradient is zero.
        """
        if step % self.update_every_steps != 0:
            return {}
        batch: Batch = replay.sample(self.batch_size)
        obs = self._augment(batch.obs)
        next_obs = self._augment(batch.next_obs)
        action = batch.action.to(self.device, torch.float32)
        reward = batch.reward.to(self.device, torch.float32)
        discount = batch.discount.to(self.device, torch.float32)

        features = self._encode(obs)
        with torch.no_grad():
            next_features = self._encode(next_obs)

        metrics: Metrics = {"batch_reward": reward.mean().item()}
        metrics.update(self.before_updates(features.detach(), action, step))
        metrics.update(self.update_critic(features, action, reward, discount, next_features, step))
        metrics.update(self.update_actor(features.detach(), step))
        self.soft_update_target()
        return metrics

    def actor_dormant(self, features: torch.Tensor):
        """The actor's tau-dormant ratio on a batch of (detached) features (one no-grad actor forward)."""
        return dormant_ratio(self.actor, features, 1.0, tau=self.dormant_threshold)

    def before_updates(self, features: torch.Tensor, action: torch.Tensor, step: int) -> Metrics:
        """Hook run before the critic and actor steps; here the dormant-ratio diagnostic every ``dormant_every``
        updates (reads the actor only: no randomness, no parameter change)."""
        if self.dormant_every and (step // self.update_every_steps) % self.dormant_every == 0:
            return self.actor_dormant(features).metrics("actor_dormant_ratio")
        return {}

    @torch.no_grad()
    def soft_update_target(self) -> None:
        """target <- (1 - tau) * target + tau * online, for every critic parameter (one fused op)."""
        torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()),
                             self.critic_target_tau)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Networks, target, optimisers and RNG state; tensors and plain types only (weights_only-safe)."""
        return {
            "agent": self.agent_name,
            "config": dict(self.config),
            "shapes": {"obs": dict(self.shapes["obs"]), "action": list(self.shapes["action"])},
            "encoder": self.encoder.state_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "encoder_opt": self.encoder_opt.state_dict() if self.encoder_opt is not None else None,
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything from :meth:`state_dict`; CheckpointError if it is another agent or shape."""
        check_agent_state(state, self.agent_name, self.shapes, self.config, self.checked_config)
        try:
            self.encoder.load_state_dict(state["encoder"])
            self.actor.load_state_dict(state["actor"])
            self.critic.load_state_dict(state["critic"])
            self.critic_target.load_state_dict(state["critic_target"])
            if self.encoder_opt is not None:
                self.encoder_opt.load_state_dict(state["encoder_opt"])
            self.actor_opt.load_state_dict(state["actor_opt"])
            self.critic_opt.load_state_dict(state["critic_opt"])
            self.generator.set_state(state["generator"].cpu())
        except (KeyError, RuntimeError, ValueError) as e:
            msg = " ".join(str(e).split())
            raise CheckpointError(
                f"cannot load {self.agent_name} checkpoint: {type(e).__name__}: {msg[:300]}") from None
