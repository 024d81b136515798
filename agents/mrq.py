"""MR.Q (Fujimoto et al., 2025, "Towards General-Purpose Model-Free Reinforcement Learning"): TD3-style actor-critic
on representations learned with model-based losses, one hyperparameter set for pixels and state.

Same algorithm, hyperparameters and initialisation as facebookresearch/MRQ (``MRQ.py``; our own code):
  * every ``target_update_freq`` (250) updates the targets (encoder, policy, value) are copied from the online nets,
    the reward scale moves on (``target_reward_scale`` <- ``reward_scale`` <- the replay's mean |reward|), and the
    encoder takes ``target_update_freq`` steps on ``enc_horizon``-step sub-trajectories: latent dynamics (MSE to the
    target encoder's embedding), reward (cross-entropy to a two-hot over symexp bins) and done (MSE, only once the
    replay holds a termination) losses, masked after a termination;
  * the value (twin Q on the encoder's zsa, Huber loss, grad-norm clip 20) regresses to the ``nstep``-step
    (``Q_horizon``) return plus the target's min Q at a TD3-noised target action, all in units of the reward scale;
  * the policy maximises Q with a pre-activation penalty (``pre_activ_weight * pre_tanh^2``);
  * AdamW with weight decay on every net; random-shift augmentation (pad 4) on pixels;
  * LAP sampling (``prioritized``): the replay samples by ``max(|TD error|, min_priority) ** alpha``
    (:mod:`robotrl.priority`), updated from the larger of the two Qs' errors after every value step.

Where it differs from the reference, and why:
  * transitions come from robotrl's replay, whose n-step return keeps the reward of the terminating step (the
    reference's ``multi_step_reward`` multiplies each reward by that step's not-done, dropping it) and shortens the
    horizon at a truncation instead of masking those starts; the reward scale is the mean |reward| over the steps
    stored (the reference also counts each episode's final, reward-less slot); encoder sub-trajectories stay inside
    one episode (the reference also samples ones that run past a termination, then masks them);
  * ELU is computed as ``exp(x) - 1`` on the negative side (``fast_elu``; torch's CPU ``expm1`` is scalar code and
    was ~22% of an update): within 1.2e-7 of F.elu, so losses agree to float rounding, not bit for bit;
  * the actor step does not compute encoder and value parameter gradients (the reference computes and discards
    them), the conv stack runs channels_last on uint8 input, the random shift is an integer gather (the same values
    as the reference's grid_sample), and LAP uses a sum tree instead of a cumulative
    sum over the whole replay per batch: the same numerics, faster (``bench/mrq_speed.py``);
  * AdamW runs as one fused kernel per step (``fused_adam``; ~5x faster than foreach on CPU, the same update to
    float rounding; ``fused_adam=false`` is foreach, the reference's op order, for bit-exact parity);
  * ``precision=bf16`` (opt-in, never the default) runs the update's forwards under bf16 autocast with fp32
    parameters, optimiser state and losses: ~1.8x the fp32 updates/s on an avx512_bf16 CPU, not the same numerics;
  * all randomness comes from the agent's generator (saved in ``state_dict``: a resumed run continues exactly).

Diagnostic (no effect on training): every ``dormant_every`` updates, ``update`` also returns the tau-dormant ratio of
the policy (``actor_dormant_ratio``) and of the value (``critic_dormant_ratio``), hidden layers measured after their
LayerNorm + activation, the output layer as is.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from robotrl.augment import random_shift, sample_shifts
from robotrl.checkpoint import check_agent_state
from robotrl.contract import check_obs_batch
from robotrl.errors import CheckpointError, ConfigError
from robotrl.params import require, require_below
from robotrl.types import Batch, Capabilities, Metrics, Obs, Trajectories

from .dormant import DormantStats, merge_stats, stats_from_scores
from .mrq_nets import MLP, Encoder, Policy, QNet, TwoHot, Value, activation, ln_act

NAME = "mrq"
_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # bf16: opt-in autocast of the update's forwards
_NETS = ("encoder", "encoder_target", "policy", "policy_target", "value", "value_target")


class MRQAgent:
    """MR.Q agent; satisfies :class:`robotrl.types.Agent` (``act_batch`` for vector envs).

    ``nstep`` is MR.Q's ``Q_horizon`` and, with ``discount``, a replay setting the trainer reads from this config.
    ``num_expl_steps``: uniform random actions and no updates before this step (the reference's
    ``buffer_size_before_training``). ``seed`` seeds the agent's generator.
    """

    agent_name = NAME
    capabilities = Capabilities(batched_acting=True, own_generator=True)
    checked_config = ("zs_dim", "za_dim", "zsa_dim", "enc_hdim", "enc_activ", "value_hdim", "value_activ",
                      "policy_hdim", "policy_activ", "num_bins")

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box, device: str,
                 batch_size: int = 256, discount: float = 0.99, nstep: int = 3, target_update_freq: int = 250,
                 num_expl_steps: int = 10_000, exploration_noise: float = 0.2, target_policy_noise: float = 0.2,
                 noise_clip: float = 0.3, dyn_weight: float = 1.0, reward_weight: float = 0.1,
                 done_weight: float = 0.1, prioritized: bool = True, alpha: float = 0.4, min_priority: float = 1.0,
                 enc_horizon: int = 5, zs_dim: int = 512, zsa_dim: int = 512, za_dim: int = 256,
                 enc_hdim: int = 512, enc_activ: str = "elu", enc_lr: float = 1e-4, enc_wd: float = 1e-4,
                 pixel_augs: bool = True, aug_pad: int = 4, value_hdim: int = 512, value_activ: str = "elu",
                 value_lr: float = 3e-4, value_wd: float = 1e-4, value_grad_clip: float = 20.0,
                 policy_hdim: int = 512, policy_activ: str = "relu", policy_lr: float = 3e-4,
                 policy_wd: float = 1e-4, pre_activ_weight: float = 1e-5, num_bins: int = 65, lower: float = -10.0,
                 upper: float = 10.0, channels_last: bool = True, fast_elu: bool = True, fused_adam: bool = True,
                 precision: str = "fp32", seed: int | None = None, dormant_every: int = 10,
                 dormant_threshold: float = 0.025):
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ConfigError(f"observation_space must be a gymnasium Dict, got {type(observation_space).__name__}")
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ConfigError(f"action_space must be a 1-D gymnasium Box, got {action_space}")
        require("agent",
                positive_int={"batch_size": batch_size, "nstep": nstep, "target_update_freq": target_update_freq,
                              "enc_horizon": enc_horizon, "zs_dim": zs_dim, "zsa_dim": zsa_dim, "za_dim": za_dim,
                              "enc_hdim": enc_hdim, "value_hdim": value_hdim, "policy_hdim": policy_hdim,
                              "num_bins": num_bins},
                nonneg_int={"num_expl_steps": num_expl_steps, "aug_pad": aug_pad, "dormant_every": dormant_every},
                positive={"min_priority": min_priority, "value_grad_clip": value_grad_clip, "enc_lr": enc_lr,
                          "value_lr": value_lr, "policy_lr": policy_lr},
                nonneg={"exploration_noise": exploration_noise, "target_policy_noise": target_policy_noise,
                        "noise_clip": noise_clip, "dyn_weight": dyn_weight, "reward_weight": reward_weight,
                        "done_weight": done_weight, "alpha": alpha, "enc_wd": enc_wd, "value_wd": value_wd,
                        "policy_wd": policy_wd, "pre_activ_weight": pre_activ_weight},
                finite={"lower": lower, "upper": upper},
                fraction={"dormant_threshold": dormant_threshold}, unit={"discount": discount})
        if int(num_bins) < 2:
            raise ConfigError(f"agent.num_bins={num_bins!r}, expected an integer >= 2 (two-hot reward bins)")
        require_below("agent", ("lower", lower), ("upper", upper))
        if precision not in _PRECISIONS:
            raise ConfigError(f"agent.precision={precision!r}, expected one of {sorted(_PRECISIONS)}")
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k not in {
            "self", "observation_space", "action_space", "device", "seed", "channels_last", "fast_elu", "fused_adam",
            "precision"}}
        self.observation_space, self.action_space = observation_space, action_space
        self.shapes = {"obs": {k: list(s.shape) for k, s in sorted(observation_space.spaces.items())},
                       "action": list(action_space.shape)}
        self.device = torch.device(device)
        self.batch_size, self.nstep, self.target_update_freq = int(batch_size), int(nstep), int(target_update_freq)
        self.num_expl_steps, self.enc_horizon = int(num_expl_steps), int(enc_horizon)
        self.exploration_noise, self.target_policy_noise = float(exploration_noise), float(target_policy_noise)
        self.noise_clip, self.pre_activ_weight = float(noise_clip), float(pre_activ_weight)
        self.weights = (float(dyn_weight), float(reward_weight), float(done_weight))
        self.prioritized, self.alpha, self.min_priority = bool(prioritized), float(alpha), float(min_priority)
        self.aug_pad = int(aug_pad) if pixel_augs else 0
        self.value_grad_clip = float(value_grad_clip)
        self.low_precision = _PRECISIONS[precision]  # None: fp32; else the autocast dtype of the update's forwards
        self.dormant_every, self.dormant_threshold = int(dormant_every), float(dormant_threshold)

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))
        action_dim = action_space.shape[0]
        act = {name: activation(name, bool(fast_elu)) for name in {enc_activ, policy_activ, value_activ}}
        self.encoder = Encoder(observation_space, action_dim, int(num_bins), int(zs_dim), int(za_dim), int(zsa_dim),
                               int(enc_hdim), act[enc_activ], channels_last).to(self.device)
        self.policy = Policy(action_dim, int(zs_dim), int(policy_hdim), act[policy_activ]).to(self.device)
        self.value = Value(int(zsa_dim), int(value_hdim), act[value_activ]).to(self.device)
        self.encoder_target, self.policy_target, self.value_target = (
            copy.deepcopy(m).requires_grad_(False) for m in (self.encoder, self.policy, self.value))
        # fused: one kernel for the whole AdamW step (~5x faster than foreach on CPU; the same update to float
        # rounding, ~1 ulp); foreach keeps the reference's exact op order (bench/mrq_parity.py).
        kind = {"fused": True} if fused_adam else {"foreach": True}
        adamw = lambda m, lr, wd: torch.optim.AdamW(m.parameters(), lr=float(lr), weight_decay=float(wd),  # noqa: E731
                                                    **kind)
        self.encoder_opt = adamw(self.encoder, enc_lr, enc_wd)
        self.policy_opt = adamw(self.policy, policy_lr, policy_wd)
        self.value_opt = adamw(self.value, value_lr, value_wd)
        self.two_hot = TwoHot(float(lower), float(upper), int(num_bins), self.device)
        self.discount = float(discount)
        self.reward_scale, self.target_reward_scale = 1.0, 0.0  # the reference's starting values
        self.num_updates = 0

    # ------------------------------------------------------------------ acting
    def train(self, training: bool = True) -> None:
        self.training = training  # no dropout or batch norm: nothing else changes between modes

    def reset(self) -> None:
        """Episode start; MR.Q keeps no per-episode state."""

    def reset_env(self, index: int) -> None:
        """Episode start in batch slot ``index``; nothing to drop."""

    def act(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """One action; uniform in [-1, 1] while ``step < num_expl_steps`` (training)."""
        return self.act_batch({k: np.asarray(v)[None] for k, v in obs.items()}, step, eval_mode)[0]

    def act_batch(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """Actions (N, A) for N observations: tanh policy, + N(0, exploration_noise) in training, clipped to [-1, 1]."""
        check_obs_batch(obs, self.observation_space)
        with torch.inference_mode():
            tensors = {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in obs.items()}
            action = self.policy.act(self.encoder.zs(tensors))
            if not eval_mode and step < self.num_expl_steps:
                action = torch.empty_like(action).uniform_(-1.0, 1.0, generator=self.generator)
            elif not eval_mode:
                noise = torch.randn(action.shape, device=self.device, generator=self.generator)
                action = (action + noise * self.exploration_noise).clamp(-1.0, 1.0)
        return action.cpu().numpy().astype(np.float32, copy=False)

    # ---------------------------------------------------------------- learning
    def update(self, replay: Any, step: int) -> Metrics:
        """One MR.Q update per agent step from ``num_expl_steps`` on; every ``target_update_freq`` updates the
        targets are refreshed and the encoder trained ``target_update_freq`` times first."""
        if step < self.num_expl_steps:
            return {}
        if self.prioritized:
            if not hasattr(replay, "enable_priority"):
                raise ConfigError(f"prioritized=true needs a replay with LAP sampling, got {type(replay).__name__}")
            replay.enable_priority(self.alpha, self.min_priority)  # no-op once on (or restored from a checkpoint)
        metrics: Metrics = {}
        if self.num_updates % self.target_update_freq == 0:
            metrics.update(self.refresh_targets(replay))
        batch: Batch = replay.sample(self.batch_size)
        rl_metrics, td_error, zs = self.update_rl(batch)
        if self.prioritized:
            replay.update_priority(td_error)
        if self.dormant_every and self.num_updates % self.dormant_every == 0:  # on the batch's embeddings
            metrics.update(self.dormant_metrics(zs))
        self.num_updates += 1
        return {**metrics, **rl_metrics}

    def refresh_targets(self, replay: Any) -> Metrics:
        """Hard target copy, reward scales moved on, then ``target_update_freq`` encoder steps."""
        for online, target in ((self.encoder, self.encoder_target), (self.policy, self.policy_target),
                               (self.value, self.value_target)):
            target.load_state_dict(online.state_dict())
        self.target_reward_scale = self.reward_scale
        self.reward_scale = float(replay.mean_abs_reward())
        terminates = bool(replay.has_terminations())
        losses: list[Metrics] = []
        for _ in range(self.target_update_freq):
            losses.append(self.update_encoder(replay.sample_trajectories(self.batch_size, self.enc_horizon),
                                              terminates))
        return {k: float(np.mean([m[k] for m in losses])) for k in losses[-1]} | {"reward_scale": self.reward_scale}

    def _prepare(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Obs to the device; pixels (any leading dims) random-shifted, one shift per image, kept uint8."""
        out = {k: v.to(self.device, non_blocking=True) for k, v in obs.items()}
        if "pixels" in out and self.aug_pad > 0:
            pix = out["pixels"]
            flat = pix.reshape(-1, *pix.shape[-3:])
            shifts = sample_shifts(flat.shape[0], self.aug_pad, self.device, self.generator)
            out["pixels"] = random_shift(flat, self.aug_pad, shifts).reshape(pix.shape)
        return out

    def update_encoder(self, traj: Trajectories, terminates: bool) -> Metrics:
        """Dynamics, reward and done losses unrolled over the sub-trajectory (time-major (H+1, B, ...))."""
        obs = self._prepare(traj.obs)
        action = traj.action.to(self.device, torch.float32)
        reward = traj.reward.to(self.device, torch.float32)
        done = traj.terminated.to(self.device, torch.float32)
        valid = None if traj.reward_valid is None else traj.reward_valid.to(self.device, torch.float32)
        return self.encoder_step(obs, action, reward, done, terminates, valid)

    def encoder_step(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
                     done: torch.Tensor, terminates: bool, reward_valid: torch.Tensor | None = None) -> Metrics:
        """One encoder step on prepared tensors: obs (H+1, B, ...), action (H, B, A), reward/done (H, B, 1)."""
        horizon, batch = action.shape[:2]
        with self._autocast():
            with torch.no_grad():
                flat = {k: v[1:].reshape(horizon * batch, *v.shape[2:]) for k, v in obs.items()}
                target_zs = self.encoder_target.zs(flat).reshape(horizon, batch, -1).float()
            zs = self.encoder.zs({k: v[0] for k, v in obs.items()})
            dyn_w, reward_w, done_w = self.weights
            alive = torch.ones(batch, 1, device=self.device)  # 0 after a termination in the sub-trajectory
            dyn_total, reward_total, done_total = 0.0, 0.0, 0.0
            for t in range(horizon):  # losses in fp32 (.float() is a no-op unless precision=bf16)
                pred_done, zs, pred_reward = self.encoder.model_all(zs, action[t])
                dyn_total = dyn_total + ((zs.float() - target_zs[t]) ** 2 * alive).mean()
                ce = self.two_hot.cross_entropy(pred_reward.float(), reward[t]) * alive
                reward_total = reward_total + (ce if reward_valid is None else ce * reward_valid[t]).mean()
                if terminates:
                    done_total = done_total + ((pred_done.float() - done[t]) ** 2 * alive).mean()
                alive = alive * (1.0 - done[t])
        loss = dyn_w * dyn_total + reward_w * reward_total + done_w * done_total
        self.encoder_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.encoder_opt.step()
        return {"encoder_loss": _item(loss), "dyn_loss": _item(dyn_total), "reward_loss": _item(reward_total),
                "done_loss": _item(done_total)}

    def update_rl(self, batch: Batch) -> tuple[Metrics, torch.Tensor, torch.Tensor]:
        """Value and policy steps on an n-step batch; returns metrics, per-sample max |TD error| (B,) and zs."""
        obs, next_obs = self._prepare(batch.obs), self._prepare(batch.next_obs)
        action = batch.action.to(self.device, torch.float32)
        reward = batch.reward.to(self.device, torch.float32)
        discount = batch.discount.to(self.device, torch.float32)
        return self.rl_step(obs, action, reward, discount, next_obs)

    def target_noise(self, shape: torch.Size) -> torch.Tensor:
        """TD3's target-policy smoothing noise: N(0, target_policy_noise) clipped to +-noise_clip."""
        noise = torch.randn(shape, device=self.device, generator=self.generator) * self.target_policy_noise
        return noise.clamp(-self.noise_clip, self.noise_clip)

    def rl_step(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                next_obs: dict[str, torch.Tensor]) -> tuple[Metrics, torch.Tensor, torch.Tensor]:
        """Value step to (r_n + gamma^n min Q'(zsa') * target_scale) / scale, then the policy step."""
        with torch.no_grad(), self._autocast():
            next_zs = self.encoder_target.zs(next_obs)
            next_action = (self.policy_target.act(next_zs).float() + self.target_noise(action.shape)).clamp(-1.0, 1.0)
            next_q = self.value_target(self.encoder_target(next_zs, next_action)).float().min(1, keepdim=True).values
            q_target = (reward + discount * next_q * self.target_reward_scale) / self.reward_scale
            zs = self.encoder.zs(obs)
            zsa = self.encoder(zs, action)
        with self._autocast():
            q = self.value(zsa).float()
        value_loss = F.smooth_l1_loss(q, q_target.expand(-1, 2))
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.value.parameters(), self.value_grad_clip)
        self.value_opt.step()

        self.encoder.requires_grad_(False)  # the reference computes these gradients and throws them away
        self.value.requires_grad_(False)
        try:
            with self._autocast():
                policy_action, pre = self.policy(zs)
                q_policy = self.value(self.encoder(zs, policy_action)).float()
            policy_loss = -q_policy.mean() + self.pre_activ_weight * pre.float().pow(2).mean()
            self.policy_opt.zero_grad(set_to_none=True)
            policy_loss.backward()
        finally:
            self.encoder.requires_grad_(True)
            self.value.requires_grad_(True)
        self.policy_opt.step()
        td_error = (q.detach() - q_target).abs().max(1).values
        metrics = {"value_loss": _item(value_loss), "policy_loss": _item(policy_loss), "q": _item(q.mean()),
                   "q_target": float(q_target.mean()), "batch_reward": float(reward.mean())}
        return metrics, td_error, zs.float()

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of the forwards when ``precision=bf16`` (parameters, optimiser and losses stay fp32);
        a no-op context in fp32, so the default path runs exactly the ops it did without this option."""
        if self.low_precision is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.low_precision)

    # ------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def dormant_stats(self, zs: torch.Tensor) -> tuple[DormantStats, DormantStats]:
        """(policy, value) tau-dormant ratios on a batch of state embeddings ``zs`` (no random draw): hidden layers
        after LayerNorm + activation, the value on (zs, the policy's action)."""
        actor_scores, pre = _mlp_scores(self.policy.policy, zs, "policy")
        zsa = self.encoder(zs, torch.tanh(pre))
        parts = []
        for name, q in (("q1", self.value.q1), ("q2", self.value.q2)):
            scores, _ = _qnet_scores(q, zsa)
            parts.append((name, stats_from_scores(scores, self.dormant_threshold)))
        return stats_from_scores(actor_scores, self.dormant_threshold), merge_stats(parts)

    def dormant_metrics(self, zs: torch.Tensor) -> Metrics:
        actor, critic = self.dormant_stats(zs)
        return {**actor.metrics("actor_dormant_ratio"), **critic.metrics("critic_dormant_ratio")}

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Nets, targets, optimisers, reward scales, update count and generator; weights_only-safe."""
        state: dict[str, Any] = {"agent": self.agent_name, "config": dict(self.config),
                                 "shapes": {"obs": dict(self.shapes["obs"]), "action": list(self.shapes["action"])}}
        state.update({name: getattr(self, name).state_dict() for name in _NETS})
        state.update({name: getattr(self, name).state_dict() for name in ("encoder_opt", "policy_opt", "value_opt")})
        state.update(reward_scale=self.reward_scale, target_reward_scale=self.target_reward_scale,
                     num_updates=self.num_updates, generator=self.generator.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything from :meth:`state_dict`; CheckpointError if it is another agent or shape."""
        check_agent_state(state, self.agent_name, self.shapes, self.config, self.checked_config)
        try:
            for name in (*_NETS, "encoder_opt", "policy_opt", "value_opt"):
                getattr(self, name).load_state_dict(state[name])
            self.reward_scale, self.target_reward_scale = float(state["reward_scale"]), float(
                state["target_reward_scale"])
            self.num_updates = int(state["num_updates"])
            self.generator.set_state(state["generator"].cpu())
        except (KeyError, RuntimeError, ValueError) as e:
            msg = " ".join(str(e).split())
            raise CheckpointError(
                f"cannot load {self.agent_name} checkpoint: {type(e).__name__}: {msg[:300]}") from None


def _item(x: torch.Tensor | float) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _mlp_scores(mlp: MLP, x: torch.Tensor, prefix: str) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor]:
    """Per-neuron mean |activation| of an MLP's layers (hidden after LN + act) and its output."""
    h1 = ln_act(mlp.l1(x), mlp.act)
    h2 = ln_act(mlp.l2(h1), mlp.act)
    out = mlp.l3(h2)
    scores = [(f"{prefix}.l1", h1.abs().mean(0)), (f"{prefix}.l2", h2.abs().mean(0)),
              (f"{prefix}.l3", out.abs().mean(0))]
    return scores, out


def _qnet_scores(q: QNet, zsa: torch.Tensor) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor]:
    scores, hidden = _mlp_scores(q.q1, zsa, "q1")
    h3 = ln_act(hidden, q.act)
    scores[-1] = ("q1.l3", h3.abs().mean(0))
    out = q.q2(h3)
    return [*scores, ("q2", out.abs().mean(0))], out

