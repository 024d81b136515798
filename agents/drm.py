"""DrM (Xu et al., ICLR 2024, "Mastering Visual RL through Dormant Ratio Minimization") on top of DrQ-v2.

DrM is DrQ-v2 plus three mechanisms driven by the actor's tau-dormant ratio ``beta`` (tau = ``dormant_threshold``),
measured on every update's batch before the critic step (XuGW-Kevin/DrM ``agents/drm.py``, ``update``):

* **perturbation** (``perturb``): every ``perturb_interval`` agent steps, every Linear layer of the actor, critic,
  critic target and value network moves to ``a * current + (1 - a) * fresh init`` with
  ``a = clip(1 - perturb_rate * beta, min_perturb_factor, max_perturb_factor)``, and every optimiser's state is
  reset (reference ``perturb_factor``/``perturb`` and ``utils.perturb``: the critic target gets its own fresh
  init, the conv encoder has no Linear so only its Adam state is reset);
* **awaken exploration** (``awaken_exploration``): exploration std
  ``sigma(beta) = 1 / (1 + exp(-dormant_temp * (beta - target_dormant_ratio)))`` until the first update after
  ``num_expl_steps`` with ``beta < target_dormant_ratio`` (the *awaken step*), then
  ``max(sigma(beta), stddev_schedule(step - awaken_step))`` (reference ``stddev_type: awake``). Off: DrQ-v2's
  ``stddev_schedule(step)``;
* **dormant-ratio-guided exploitation** (``expectile_exploitation``): a value network V(s) trained by expectile
  regression (``expectile``) towards min(Q1, Q2)(s, a) on replay actions, and the TD target's bootstrap value
  ``lambda * V(s') + (1 - lambda) * min(Q1', Q2')(s', a')`` with
  ``lambda = target_lambda / (1 + exp(lambda_temp * (beta - target_dormant_ratio)))`` (``lambda_schedule:
  dormant``, the DMC agent) or ``lambda = target_lambda`` (``constant``, the reference's Meta-World agent
  ``agents/drm_mw.py``). Off: no value network, DrQ-v2's target.

With all three off, DrM's updates are DrQ-v2's bit for bit (``tests/test_drm.py``). Everything else (encoder,
actor, critic, augmentation, optimisers, n-step TD, target soft update) is :class:`DrQV2Agent`'s.

Meta-World (``task_overrides`` in ``configs/agent/drm.yaml``) follows ``agents/drm_mw.py`` + ``train_mw.py``: the
critic's Q heads get Dropout(0.01) + LayerNorm (``critic_dropout``), lambda is constant, the awaken step needs no
``num_expl_steps`` first (``awaken_after_expl_steps: false``), and n-step 10 with discount 0.97: ``train_mw.py``
builds its replay with ``floor(nstep + nstep_alpha)`` = 10 and ``discount - discount_alpha - discount_beta`` = 0.97
and defines, but never calls, the schedules that would decay them, so those constants are what the reference ran.

Deviation from the reference: the value network's update computes min(Q1, Q2) without critic gradients (the
reference computes and discards them).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from robotrl.errors import CheckpointError, ConfigError
from robotrl.params import require
from robotrl.types import Metrics

from .dormant import shrink_and_perturb
from .drqv2 import DrQV2Agent
from .nets import schedule, weight_init

NAME = "drm"


class ValueNetwork(nn.Module):
    """V(s): the critic's architecture without the action input (trunk Linear-LayerNorm-Tanh, 2-hidden MLP)."""

    def __init__(self, repr_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.V = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 1),
        )  # fmt: skip
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.V(self.trunk(obs))


class DrMAgent(DrQV2Agent):
    """DrM agent; the DrQ-v2 arguments plus the DrM ones (see the module docstring and ``configs/agent/drm.yaml``).

    ``dormant_threshold`` (tau) is the DrQ-v2 argument; DrM measures the ratio on every update (it drives the
    schedules), so ``dormant_every`` is ignored. ``perturb_interval`` is in agent steps (``dormant_perturb_interval``
    in the reference) and must be a multiple of ``update_every_steps`` (perturbation happens on update steps).
    """

    agent_name = NAME
    checked_config = ("feature_dim", "hidden_dim", "critic_dropout", "expectile_exploitation")

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Box,
        device: str,
        *,
        target_dormant_ratio: float = 0.2,
        dormant_temp: float = 10.0,
        perturb: bool = True,
        perturb_interval: int = 100_000,
        min_perturb_factor: float = 0.2,
        max_perturb_factor: float = 1.0,
        perturb_rate: float = 2.0,
        awaken_exploration: bool = True,
        awaken_after_expl_steps: bool = True,
        expectile_exploitation: bool = True,
        expectile: float = 0.9,
        target_lambda: float = 0.6,
        lambda_temp: float = 50.0,
        lambda_schedule: str = "dormant",
        **drqv2_kwargs: Any,
    ):
        require("agent", positive_int={"perturb_interval": perturb_interval},
                positive={"dormant_temp": dormant_temp, "lambda_temp": lambda_temp},
                # target_dormant_ratio > 1: awake from the first update (every ratio is below it)
                nonneg={"perturb_rate": perturb_rate, "target_dormant_ratio": target_dormant_ratio},
                probability={"target_lambda": target_lambda})
        drqv2_kwargs.setdefault("dormant_every", 1)
        super().__init__(observation_space, action_space, device, **drqv2_kwargs)
        if lambda_schedule not in ("dormant", "constant"):
            raise ConfigError(f"lambda_schedule={lambda_schedule!r} must be 'dormant' or 'constant'")
        if perturb_interval % self.update_every_steps:  # perturb_interval >= 1: above
            raise ConfigError(f"perturb_interval={perturb_interval} must be a positive multiple of "
                              f"update_every_steps={self.update_every_steps}")
        if not 0.0 <= float(min_perturb_factor) <= float(max_perturb_factor) <= 1.0:
            raise ConfigError(f"need 0 <= min_perturb_factor={min_perturb_factor} <= max_perturb_factor="
                              f"{max_perturb_factor} <= 1")
        if not 0.0 < float(expectile) < 1.0:
            raise ConfigError(f"expectile={expectile} must be in (0, 1)")
        self.target_dormant_ratio = float(target_dormant_ratio)
        self.dormant_temp = float(dormant_temp)
        self.perturb, self.perturb_interval = bool(perturb), int(perturb_interval)
        self.min_perturb_factor, self.max_perturb_factor = float(min_perturb_factor), float(max_perturb_factor)
        self.perturb_rate = float(perturb_rate)
        self.awaken_exploration = bool(awaken_exploration)
        self.awaken_after_expl_steps = bool(awaken_after_expl_steps)
        self.expectile_exploitation = bool(expectile_exploitation)
        self.expectile = float(expectile)
        self.target_lambda, self.lambda_temp = float(target_lambda), float(lambda_temp)
        self.lambda_schedule = lambda_schedule
        self.config.update({
            "dormant_threshold": self.dormant_threshold, "target_dormant_ratio": self.target_dormant_ratio,
            "dormant_temp": self.dormant_temp, "perturb": self.perturb, "perturb_interval": self.perturb_interval,
            "min_perturb_factor": self.min_perturb_factor, "max_perturb_factor": self.max_perturb_factor,
            "perturb_rate": self.perturb_rate, "awaken_exploration": self.awaken_exploration,
            "awaken_after_expl_steps": self.awaken_after_expl_steps,
            "expectile_exploitation": self.expectile_exploitation, "expectile": self.expectile,
            "target_lambda": self.target_lambda, "lambda_temp": self.lambda_temp,
            "lambda_schedule": self.lambda_schedule,
        })  # fmt: skip

        # Schedule state: the reference starts from beta = 1 (fully dormant: max noise, lambda ~ 0).
        self.dormant_ratio = 1.0
        self.awaken_step: int | None = None

        self.value_net: ValueNetwork | None = None
        self.value_opt: torch.optim.Optimizer | None = None
        if self.expectile_exploitation:  # built last: the DrQ-v2 nets get the same init as in DrQ-v2
            feature_dim, hidden_dim = self.config["feature_dim"], self.config["hidden_dim"]
            self.value_net = ValueNetwork(self.encoder.repr_dim, feature_dim, hidden_dim).to(self.device)
            self.value_opt = torch.optim.Adam(self.value_net.parameters(), lr=self.lr)
            self.value_net.train(self.training)

    def train(self, training: bool = True) -> None:
        super().train(training)
        if getattr(self, "value_net", None) is not None:
            self.value_net.train(training)

    # ---------------------------------------------------------------- schedules
    @property
    def dormant_stddev(self) -> float:
        """sigma(beta) = 1 / (1 + exp(-dormant_temp * (beta - target_dormant_ratio)))."""
        return 1.0 / (1.0 + math.exp(-self.dormant_temp * (self.dormant_ratio - self.target_dormant_ratio)))

    def stddev(self, step: int) -> float:
        """Awaken exploration (reference ``stddev_type: awake``), or DrQ-v2's schedule when switched off."""
        if not self.awaken_exploration:
            return super().stddev(step)
        if self.awaken_step is None:
            return self.dormant_stddev
        return max(self.dormant_stddev, schedule(self.stddev_schedule, step - self.awaken_step))

    @property
    def lambda_(self) -> float:
        """Weight of V(s') in the bootstrap value: target_lambda / (1 + exp(lambda_temp * (beta - target)))."""
        if not self.expectile_exploitation:
            return 0.0
        if self.lambda_schedule == "constant":
            return self.target_lambda
        excess = self.dormant_ratio - self.target_dormant_ratio
        return self.target_lambda / (1.0 + math.exp(self.lambda_temp * excess))

    @property
    def perturb_factor(self) -> float:
        """a = clip(1 - perturb_rate * beta, min_perturb_factor, max_perturb_factor)."""
        return min(max(self.min_perturb_factor, 1.0 - self.perturb_rate * self.dormant_ratio), self.max_perturb_factor)

    # ---------------------------------------------------------------- learning
    def perturb_networks(self) -> float:
        """Shrink-and-perturb actor, critic, critic target and V by :attr:`perturb_factor`; reset all optimisers."""
        factor = self.perturb_factor
        nets = [self.actor, self.critic, self.critic_target, self.value_net]
        for net in nets:
            if net is not None:
                shrink_and_perturb(net, factor, self.generator)
        for opt in (self.actor_opt, self.critic_opt, self.encoder_opt, self.value_opt):
            if opt is not None:
                opt.state.clear()  # reference: optimizer.state = defaultdict(dict) (Adam moments and step)
        return factor

    def update(self, replay: Any, step: int) -> Metrics:
        """Perturb first when ``step`` is a positive multiple of ``perturb_interval``, then DrQ-v2's update."""
        metrics: Metrics = {}
        if self.perturb and step > 0 and step % self.perturb_interval == 0:  # a multiple of update_every_steps
            metrics["perturb_factor"] = self.perturb_networks()
        return {**super().update(replay, step), **metrics}

    def before_updates(self, features: torch.Tensor, action: torch.Tensor, step: int) -> Metrics:
        """Dormant ratio (every update), awaken step, then the value network's expectile step."""
        stats = self.actor_dormant(features)
        self.dormant_ratio = stats.ratio
        past_expl = step > self.num_expl_steps or not self.awaken_after_expl_steps
        if self.awaken_step is None and past_expl and self.dormant_ratio < self.target_dormant_ratio:
            self.awaken_step = int(step)
        metrics = stats.metrics("actor_dormant_ratio")
        metrics["drm_lambda"] = self.lambda_
        if self.awaken_exploration:
            metrics["awakened"] = float(self.awaken_step is not None)
        if self.value_net is not None:
            metrics.update(self.update_value(features, action))
        return metrics

    def update_value(self, features: torch.Tensor, action: torch.Tensor) -> Metrics:
        """Expectile regression of V(s) to min(Q1, Q2)(s, a): weight ``expectile`` where V <= Q, else 1 - it."""
        assert self.value_net is not None and self.value_opt is not None
        with torch.no_grad():
            q1, q2 = self.critic(features, action)
            q = torch.min(q1, q2)
        v = self.value_net(features)
        err = v - q
        weight = torch.where(err > 0, 1.0 - self.expectile, self.expectile)
        loss = (weight * err.square()).mean()
        self.value_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.value_opt.step()
        return {"value_loss": loss.item(), "value_v": v.mean().item()}

    def target_value(self, next_obs: torch.Tensor, step: int) -> torch.Tensor:
        """lambda * V(s') + (1 - lambda) * min(Q1', Q2')(s', a'); DrQ-v2's target when exploitation is off."""
        explore = super().target_value(next_obs, step)
        if self.value_net is None:
            return explore
        lam = self.lambda_
        return lam * self.value_net(next_obs) + (1.0 - lam) * explore

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["drm"] = {
            "dormant_ratio": float(self.dormant_ratio),
            "awaken_step": -1 if self.awaken_step is None else int(self.awaken_step),
            "value_net": self.value_net.state_dict() if self.value_net is not None else None,
            "value_opt": self.value_opt.state_dict() if self.value_opt is not None else None,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            drm = state["drm"]
            if self.value_net is not None:
                self.value_net.load_state_dict(drm["value_net"])
                self.value_opt.load_state_dict(drm["value_opt"])
            self.dormant_ratio = float(drm["dormant_ratio"])
            awaken = int(drm["awaken_step"])
            self.awaken_step = None if awaken < 0 else awaken
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            msg = " ".join(str(e).split())
            raise CheckpointError(f"cannot load drm checkpoint: {type(e).__name__}: {msg[:300]}") from None
