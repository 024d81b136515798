"""The dormant-ratio diagnostic (:mod:`robotrl.agents.dormant`) for Stable-Baselines3 SAC and PPO.

:class:`DormantCallback` measures the actor's and the critic's tau-dormant ratio after every ``every``-th SB3
``train()`` call and records them into SB3's logger as ``train/actor_dormant_ratio[/<layer>]`` and
``train/critic_dormant_ratio[/<layer>]``, so they reach ``train.csv`` with SB3's other ``train/*`` values, under the
same column names as the other agents (``robotrl plot --source train --metric actor_dormant_ratio``).

The batch: ``batch_size`` transitions of SAC's replay buffer, drawn with the callback's own generator (SB3's
sampler would advance numpy's global RNG and change training), or the last PPO rollout (subsampled the same way).
Networks: SAC's ``actor`` (features extractor, ``latent_pi``, ``mu``, ``log_std``) and ``critic`` (every Q net, on
the stored actions); PPO's policy path (``pi_features_extractor``, ``mlp_extractor.policy_net``, ``action_net``)
and value path (``vf_features_extractor``, ``mlp_extractor.value_net``, ``value_net``). A hidden ``nn.Linear``
followed by an activation module is measured after that activation (SB3's activations are not in-place, so this
matches what DrQ-v2's in-place ReLUs give); an output layer is measured as is. Diagnostic only: no effect on
training (no_grad, eval-mode forward, no global RNG).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from robotrl.errors import ConfigError

from .dormant import DormantStats, layers_dormant_ratio


def measured_layers(parts: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
    """(name, module to hook) for every ``nn.Linear`` of ``parts``: the activation that follows it in a Sequential
    (post-activation), else the Linear itself. Names are ``<part>.<path of the Linear>``."""
    layers = []
    for prefix, part in parts.items():
        after: dict[nn.Module, nn.Module] = {}
        for seq in part.modules():
            if isinstance(seq, nn.Sequential):
                children = list(seq)
                for a, b in zip(children[:-1], children[1:], strict=True):
                    if isinstance(a, nn.Linear) and not isinstance(b, nn.Linear) and next(b.parameters(), None) is None:
                        after[a] = b
        layers += [(f"{prefix}.{name}" if name else prefix, after.get(m, m))
                   for name, m in part.named_modules() if isinstance(m, nn.Linear)]
    return layers


def _batch(model: BaseAlgorithm, rng: np.random.Generator,
           batch_size: int) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray] | None:
    """(observations, actions) of up to ``batch_size`` stored transitions (env 0), or None when nothing is stored."""
    buffer = getattr(model, "replay_buffer", None) or getattr(model, "rollout_buffer", None)
    n = buffer.buffer_size if buffer.full else buffer.pos
    if n == 0:
        return None
    idx = np.sort(rng.choice(n, size=min(batch_size, n), replace=False))
    obs = buffer.observations
    obs = {k: v[idx, 0] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx, 0]
    return obs, buffer.actions[idx, 0]


@torch.no_grad()
def sb3_dormant_stats(model: BaseAlgorithm, obs: dict[str, np.ndarray] | np.ndarray, actions: np.ndarray,
                      tau: float = 0.025) -> tuple[DormantStats, DormantStats]:
    """(actor, critic) tau-dormant ratios of an SB3 SAC or PPO policy on a batch (see the module docstring)."""
    policy = model.policy
    was_training = policy.training
    policy.set_training_mode(False)
    try:
        obs_t, _ = policy.obs_to_tensor(obs)
        if hasattr(policy, "actor") and hasattr(policy, "critic"):  # SAC (and TD3-style) policies
            act_t = torch.as_tensor(actions, dtype=torch.float32, device=policy.device)
            actor = layers_dormant_ratio(measured_layers({"actor": policy.actor}),  # deterministic: no torch RNG
                                         lambda: policy.actor(obs_t, deterministic=True), tau)
            critic = layers_dormant_ratio(measured_layers({"critic": policy.critic}),
                                          lambda: policy.critic(obs_t, act_t), tau)
            return actor, critic
        if hasattr(policy, "mlp_extractor"):  # PPO/A2C ActorCriticPolicy

            def pi() -> None:
                features = policy.extract_features(obs_t, policy.pi_features_extractor)
                policy.action_net(policy.mlp_extractor.forward_actor(features))

            def vf() -> None:
                features = policy.extract_features(obs_t, policy.vf_features_extractor)
                policy.value_net(policy.mlp_extractor.forward_critic(features))

            ex = policy.mlp_extractor
            actor = layers_dormant_ratio(measured_layers({"features": policy.pi_features_extractor,
                                                          "policy_net": ex.policy_net,
                                                          "action_net": policy.action_net}), pi, tau)
            critic = layers_dormant_ratio(measured_layers({"features": policy.vf_features_extractor,
                                                           "value_net": ex.value_net,
                                                           "value_head": policy.value_net}), vf, tau)
            return actor, critic
        raise ConfigError(f"dormant ratio: SB3 policy {type(policy).__name__} is neither SAC's nor PPO's")
    finally:
        policy.set_training_mode(was_training)


class DormantCallback(BaseCallback):
    """Record the actor/critic dormant ratio into SB3's logger after every ``every``-th ``train()`` (0: never).

    Checked at each rollout end (SAC: every env step; PPO: every ``n_steps``), i.e. before that rollout's
    ``train()``: the networks measured are those of the last ``train()``. ``train()`` calls are counted through
    SB3's ``_n_updates`` counter.
    """

    def __init__(self, every: int = 10, tau: float = 0.025, batch_size: int = 256, seed: int = 0) -> None:
        super().__init__()
        if int(every) < 0 or not 0.0 <= float(tau) < 1.0 or int(batch_size) < 1:
            raise ConfigError(f"dormant_every={every} must be >= 0, dormant_threshold={tau} in [0, 1) and "
                              f"batch size {batch_size} >= 1")
        self.every, self.tau, self.batch_size = int(every), float(tau), int(batch_size)
        self.rng = np.random.default_rng(seed)
        self._seen_updates = 0
        self.trains = 0  # train() calls seen

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        n_updates = int(getattr(self.model, "_n_updates", 0))
        if not self.every or n_updates == self._seen_updates:
            return
        self._seen_updates = n_updates
        self.trains += 1
        if (self.trains - 1) % self.every:
            return
        batch = _batch(self.model, self.rng, self.batch_size)
        if batch is None:
            return
        actor, critic = sb3_dormant_stats(self.model, *batch, tau=self.tau)
        metrics: dict[str, Any] = {**actor.metrics("actor_dormant_ratio"), **critic.metrics("critic_dormant_ratio")}
        for key, value in metrics.items():
            self.model.logger.record(f"train/{key}", value)
