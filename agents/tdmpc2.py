"""TD-MPC2 (Hansen, Su and Wang, 2024): MPPI planning in the latent space of a SimNorm world model trained with
latent consistency, two-hot reward and value regression, and a policy prior that guides the planner.

Same algorithm and hyperparameters as nicklashansen/tdmpc2 (``tdmpc2.py``, ``config.yaml``, MODEL_SIZE presets);
the world model lives in :mod:`robotrl.agents.world_model`, the math in :mod:`robotrl.agents.tdmpc2_math`.
Differences from the reference, none of which changes the algorithm:
  * seed phase: the agent acts uniformly at random until its first ``update`` call (the trainer's ``seed_frames``),
    and that first call runs one update per step collected so far (``pretrain``; the reference runs
    ``seed_steps`` updates at the same point, tdmpc2/trainer/online_trainer.py);
  * the final action is drawn from the elites' softmax scores with ``torch.multinomial`` (the reference's
    Gumbel-max ``gumbel_softmax_sample`` draws from the same categorical distribution);
  * TD targets, the policy loss and planning evaluate only the two randomly chosen Q members they read (see
    :mod:`robotrl.agents.world_model`), and the reward/value cross-entropies of all time steps and members are
    one vectorised expression (the reference loops over t and members);
  * the plan's observation is not random-shifted (the reference's encoder shifts every input, planning included);
    training batches are shifted (pad 3) as in the reference;
  * with both "pixels" and "state" observations the encoder is MoDem's fusion (conv features + state-MLP
    features -> fuse MLP -> SimNorm; the TD-MPC2 reference takes one modality);
  * every random draw except dropout uses the agent's own generator (dropout uses torch's global generator, which
    the trainer checkpoints), so a resumed run is bit-identical;
  * ``plan_bf16`` (opt-in, off by default) plans with a bf16 copy of the world model (AMX/AVX512-BF16 CPUs):
    faster, changes the numerics of the plan only (returns, elite weights and the plan's mean stay float32),
    never of training;
  * ``compile`` (opt-in, the reference's key, which compiles its whole ``_update`` and ``_plan``) compiles only
    the LayerNorm + Mish blocks into fused kernels (:meth:`WorldModel.compile_kernels`), where eager time goes;
    Adam is PyTorch's fused implementation.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from robotrl.augment import random_shift, sample_shifts
from robotrl.checkpoint import check_agent_state
from robotrl.contract import check_obs
from robotrl.distributed import all_gather_cat, all_reduce_gradients
from robotrl.errors import CheckpointError, ConfigError
from robotrl.params import given, require, require_below
from robotrl.types import Capabilities, Metrics, Obs, Trajectories

from . import tdmpc2_math as tm
from .dormant import DormantStats, world_model_dormant_stats
from .mppi import MPPISettings, bf16_copy, estimate_value, mppi, policy_rollouts, warm_start
from .nets import check_compiler
from .world_model import WorldModel, model_dims

NAME = "tdmpc2"
ARCH_KEYS = ("latent_dim", "mlp_dim", "enc_dim", "num_enc_layers", "num_channels", "num_q", "simnorm_dim",
             "num_bins", "episodic", "num_pi", "pixel_views", "obs_fusion")


class TDMPC2Agent:
    """TD-MPC2 agent; satisfies :class:`robotrl.types.Agent`.

    Architecture: ``model_size`` picks a reference preset (1, 5, 19, 48, 317 M parameters); ``latent_dim``,
    ``mlp_dim``, ``enc_dim``, ``num_enc_layers``, ``num_q`` override it (``null`` keeps the preset).
    ``episode_length`` (agent steps) sets the discount by the reference heuristic; ``null`` uses ``discount``.
    ``nstep`` is the trainer's replay setting (TD-MPC2 samples sub-trajectories and ignores it).
    MoDem extension points: :meth:`update_from` (one update on a given :class:`Trajectories` batch, e.g. mixed
    with demos), :meth:`plan` (MPPI from a latent), :meth:`_terminal_value` (planning's bootstrap value),
    :meth:`_updates_now` (the first call's burst) and the public ``model``/``optim``/``pi_optim``.
    """

    agent_name = NAME
    # act_batch plans each env in turn; torchrun data parallelism averages gradients over ranks (robotrl.distributed)
    capabilities = Capabilities(batched_acting=True, distributed=True, own_generator=True)
    checked_config: tuple[str, ...] = ARCH_KEYS  # must match to load a checkpoint

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Box,
        device: str,
        model_size: int | None = 5,
        latent_dim: int | None = None,
        mlp_dim: int | None = None,
        enc_dim: int | None = None,
        num_enc_layers: int | None = None,
        num_q: int | None = None,
        num_channels: int = 32,
        dropout: float = 0.01,
        simnorm_dim: int = 8,
        num_bins: int = 101,
        vmin: float = -10.0,
        vmax: float = 10.0,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        episodic: bool = False,
        num_pi: int = 1,
        pixel_views: int | None = None,
        batch_size: int = 256,
        horizon: int = 3,
        rho: float = 0.5,
        lr: float = 3e-4,
        enc_lr_scale: float = 0.3,
        grad_clip_norm: float = 20.0,
        tau: float = 0.01,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        value_coef: float = 0.1,
        termination_coef: float = 1.0,
        entropy_coef: float = 1e-4,
        mpc: bool = True,
        iterations: int = 6,
        num_samples: int = 512,
        num_elites: int = 64,
        num_pi_trajs: int = 24,
        min_std: float = 0.05,
        max_std: float = 2.0,
        temperature: float = 0.5,
        episode_length: int | None = None,
        discount_denom: float = 5,
        discount_min: float = 0.95,
        discount_max: float = 0.995,
        nstep: int = 1,
        discount: float = 0.99,
        pretrain: bool = True,
        aug_pad: int = 3,
        plan_bf16: bool = False,
        compile: bool = False,
        dormant_every: int = 10,
        dormant_threshold: float = 0.025,
        seed: int | None = None,
    ):
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ConfigError(f"observation_space must be a gymnasium Dict, got {type(observation_space).__name__}")
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ConfigError(f"action_space must be a 1-D gymnasium Box, got {action_space}")
        if pixel_views is not None and ("pixels" not in observation_space.spaces or pixel_views < 1
                                        or observation_space["pixels"].shape[0] % (3 * pixel_views)):
            raise ConfigError(f"pixel_views={pixel_views} does not fit the observation space {observation_space} "
                              f"(expected pixels with a multiple of 3 * pixel_views channels, or pixel_views=null)")
        require("agent",
                positive_int={"num_channels": num_channels, "simnorm_dim": simnorm_dim, "batch_size": batch_size,
                              "horizon": horizon, "iterations": iterations, "num_samples": num_samples,
                              "num_elites": num_elites, "nstep": nstep, "num_pi": num_pi,  # > 1: an actor ensemble
                              **given(model_size=model_size)},
                nonneg_int={"num_bins": num_bins, "num_pi_trajs": num_pi_trajs, "aug_pad": aug_pad,
                            "dormant_every": dormant_every},
                finite={"vmin": vmin, "vmax": vmax, "log_std_min": log_std_min, "log_std_max": log_std_max},
                positive={"lr": lr, "grad_clip_norm": grad_clip_norm, "min_std": min_std, "max_std": max_std,
                          "temperature": temperature, "discount_denom": discount_denom},
                nonneg={"enc_lr_scale": enc_lr_scale, "consistency_coef": consistency_coef, "reward_coef": reward_coef,
                        "value_coef": value_coef, "termination_coef": termination_coef, "entropy_coef": entropy_coef},
                fraction={"dropout": dropout, "dormant_threshold": dormant_threshold},
                unit={"rho": rho, "tau": tau, "discount_min": discount_min, "discount_max": discount_max,
                      "discount": discount})
        require_below("agent", ("vmin", vmin), ("vmax", vmax))
        # equal bounds: a fixed policy std; equal discount bounds: a fixed discount
        require_below("agent", ("log_std_min", log_std_min), ("log_std_max", log_std_max), equal_ok=True)
        require_below("agent", ("min_std", min_std), ("max_std", max_std), equal_ok=True)
        require_below("agent", ("discount_min", discount_min), ("discount_max", discount_max), equal_ok=True)
        self.dormant_every, self.dormant_threshold = int(dormant_every), float(dormant_threshold)
        if not num_elites <= num_samples or not num_pi_trajs < num_samples:  # each one's own range: above
            raise ConfigError(f"need num_elites={num_elites} <= num_samples={num_samples} and num_pi_trajs="
                              f"{num_pi_trajs} < num_samples")
        self.observation_space, self.action_space = observation_space, action_space
        self.device = torch.device(device)
        self.action_dim = int(action_space.shape[0])
        dims = model_dims(model_size, latent_dim=latent_dim, mlp_dim=mlp_dim, enc_dim=enc_dim,
                          num_enc_layers=num_enc_layers, num_q=num_q)
        dims.setdefault("num_q", 5)
        missing = [k for k in ("latent_dim", "mlp_dim", "enc_dim", "num_enc_layers") if k not in dims]
        if missing:
            raise ConfigError(f"model_size=null needs explicit {missing}")
        require("agent", positive_int=dims)
        if dims["latent_dim"] % int(simnorm_dim):
            raise ConfigError(f"agent.latent_dim={dims['latent_dim']} is not a multiple of agent.simnorm_dim="
                              f"{simnorm_dim} (SimNorm splits the latent into groups of simnorm_dim)")
        self.arch = {**{k: int(v) for k, v in dims.items()}, "num_channels": int(num_channels),
                     "simnorm_dim": int(simnorm_dim), "num_bins": int(num_bins), "episodic": bool(episodic),
                     "num_pi": int(num_pi), "pixel_views": int(pixel_views or 1),
                     "obs_fusion": "sum_mlp" if len(observation_space.spaces) > 1 else "none"}
        self.batch_size, self.horizon, self.rho = int(batch_size), int(horizon), float(rho)
        self.grad_clip_norm, self.tau = float(grad_clip_norm), float(tau)
        self.consistency_coef, self.reward_coef = float(consistency_coef), float(reward_coef)
        self.value_coef, self.termination_coef = float(value_coef), float(termination_coef)
        self.entropy_coef = float(entropy_coef)
        self.mpc = bool(mpc)
        # tdmpc2.py: two more MPPI iterations for large action spaces
        self.iterations = int(iterations) + 2 * int(self.action_dim >= 20)
        self.num_samples, self.num_elites, self.num_pi_trajs = int(num_samples), int(num_elites), int(num_pi_trajs)
        self.min_std, self.max_std, self.temperature = float(min_std), float(max_std), float(temperature)
        self.discount = (tm.heuristic_discount(int(episode_length), discount_denom, discount_min, discount_max)
                         if episode_length else float(discount))
        self.nstep = int(nstep)
        # ``pretrain`` (config key): the first update call's burst; the name stays free for MoDem's pretrain(demos)
        self.update_burst, self.aug_pad, self.plan_bf16 = bool(pretrain), int(aug_pad), bool(plan_bf16)
        self.config: dict[str, Any] = {
            "model_size": model_size, **self.arch, "batch_size": self.batch_size, "horizon": self.horizon,
            "lr": float(lr), "discount": self.discount, "iterations": self.iterations,
            "num_samples": self.num_samples,
        }
        self.shapes = {
            "obs": {k: list(s.shape) for k, s in sorted(observation_space.spaces.items())},
            "action": [self.action_dim],
        }

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))

        obs_shapes = {k: tuple(s.shape) for k, s in observation_space.spaces.items()}
        self.model = WorldModel(obs_shapes, self.action_dim, latent_dim=self.arch["latent_dim"],
                                mlp_dim=self.arch["mlp_dim"], enc_dim=self.arch["enc_dim"],
                                num_enc_layers=self.arch["num_enc_layers"], num_channels=num_channels,
                                num_q=self.arch["num_q"], dropout=dropout, simnorm_dim=simnorm_dim,
                                num_bins=num_bins, vmin=vmin, vmax=vmax, log_std_min=log_std_min,
                                log_std_max=log_std_max, episodic=episodic, num_pi=num_pi,
                                pixel_views=pixel_views).to(self.device)
        self.compile = bool(compile)
        if self.compile:
            check_compiler(self.device)
            self.model.compile_kernels()
        m = self.model
        groups = [{"params": m.encoder_parameters(), "lr": float(lr) * float(enc_lr_scale)},
                  {"params": list(m._dynamics.parameters())}, {"params": list(m._reward.parameters())},
                  {"params": list(m._termination.parameters()) if m._termination is not None else []},
                  {"params": list(m._Qs.parameters())}]
        self._model_params = [p for g in groups for p in g["params"]]
        # fused: one kernel for all parameters (3x faster than the per-tensor loop on CPU; same update rule)
        self.optim = torch.optim.Adam(groups, lr=float(lr), fused=True)
        self.pi_optim = torch.optim.Adam([p for net in m.pi_nets() for p in net.parameters()], lr=float(lr), eps=1e-5,
                                         fused=True)
        self.scale = tm.RunningScale(self.tau).to(self.device)
        self.model.eval()
        self._num_updates = 0
        self._prev_mean: torch.Tensor | None = None  # the previous plan (warm start); dropped by reset()
        self._prev_means: dict[int, torch.Tensor | None] = {}  # per batch slot with act_batch (env.num_envs > 1)
        self._plan_copy: tuple[int, WorldModel] | None = None  # (update count, bf16 model) with plan_bf16

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        """Episode start: forget the previous plan (the reference's ``t0=True``)."""
        self._prev_mean = None

    def act(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """Plan one action; uniform in [-1, 1] in training before the first update (the seed phase)."""
        check_obs(obs, self.observation_space)
        with torch.inference_mode():
            if not eval_mode and self._num_updates == 0:
                a = torch.rand(self.action_dim, device=self.device, generator=self.generator) * 2 - 1
            else:
                tensors = {k: torch.as_tensor(np.asarray(v), device=self.device)[None] for k, v in obs.items()}
                z = self.model.encode(tensors)
                if self.mpc:
                    a = self.plan(z, eval_mode, horizon=self.planning_horizon(step))
                else:
                    a, info = self.model.pi(z, self.generator)
                    a = (info["mean"] if eval_mode else a)[0]
        return a.float().cpu().numpy().astype(np.float32, copy=False)

    def act_batch(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """Actions (N, A) for N observations (``env.num_envs``): MPPI plans each one in turn (every batch slot keeps
        its own warm start, dropped by ``reset_env``), through :meth:`act` so subclasses' acting rules hold."""
        prev_means, actions = self._prev_means, []
        for i in range(len(next(iter(obs.values())))):
            self._prev_mean = prev_means.get(i)
            actions.append(self.act({k: v[i] for k, v in obs.items()}, step, eval_mode))
            prev_means[i] = self._prev_mean
        self._prev_mean = None
        return np.stack(actions)

    def reset_env(self, index: int) -> None:
        """Episode start in batch slot ``index``: forget that slot's previous plan."""
        self._prev_means.pop(index, None)

    def planning_horizon(self, step: int) -> int:
        """MPPI's horizon at agent step ``step``: the model's ``horizon`` (a hook for MoDem's schedule)."""
        return self.horizon

    @property
    def mppi_settings(self) -> MPPISettings:
        """The elite re-weighting's settings, read from the agent's current hyperparameters."""
        return MPPISettings(self.iterations, self.num_elites, self.temperature, self.min_std, self.max_std)

    def _planning_model(self) -> WorldModel:
        """The model MPPI rolls out: the world model itself, or with ``plan_bf16`` a bf16 copy refreshed after
        every update (one ~10 MB copy per env step at model size 5, far cheaper than the plan)."""
        if self.plan_bf16 and (self._plan_copy is None or self._plan_copy[0] != self._num_updates):
            self._plan_copy = (self._num_updates, bf16_copy(self.model))
        return self._plan_copy[1] if self.plan_bf16 else self.model

    def _estimate_value(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Discounted H-step model return of each action sequence plus the bootstrap Q (tdmpc2.py)."""
        return estimate_value(self._planning_model(), z, actions, self.discount, self._terminal_value)

    def _terminal_value(self, m: WorldModel, z: torch.Tensor) -> torch.Tensor:
        """Planning's bootstrap value at the end of the horizon: Q of the policy's action, average of two random
        members (tdmpc2.py); a subclass hook (MoDem-V2's conservative ensemble value)."""
        action, _ = m.pi(z, self.generator)
        return m.Q(z, action, "avg", generator=self.generator).float()  # (two_hot decodes in the model's dtype)

    def plan(self, z: torch.Tensor, eval_mode: bool, horizon: int | None = None) -> torch.Tensor:
        """MPPI from latent ``z`` (1, latent_dim): ``num_pi_trajs`` policy rollouts plus Gaussian samples around a
        mean warm-started from the previous plan, ``iterations`` rounds of elite re-weighting (tdmpc2.py::_plan),
        over ``horizon`` steps (default: the model's). Returns the action (A,); stores the plan's mean."""
        H, S, P, A, g = horizon or self.horizon, self.num_samples, self.num_pi_trajs, self.action_dim, self.generator
        m, dev = self._planning_model(), z.device
        z = z.to(torch.bfloat16 if self.plan_bf16 else torch.float32)
        actions = torch.empty(H, S, A, device=dev, dtype=z.dtype)
        policy_rollouts(m, z, actions, P, g)
        mean = warm_start(self._prev_mean, H, A, dev)
        noise = torch.empty(H, S - P, A, device=dev)

        def sample(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
            noise.normal_(generator=g)
            actions[:, P:] = (mean[:, None] + std[:, None] * noise).clamp_(-1, 1)
            return actions

        a, mean = mppi(sample, partial(self._estimate_value, z.expand(S, -1)), mean,
                       torch.full((H, A), self.max_std, device=dev), self.mppi_settings, g, eval_mode)
        self._prev_mean = mean.clone()
        return a.clamp(-1, 1)

    # ---------------------------------------------------------------- learning
    def update(self, replay: Any, step: int) -> Metrics:
        """Sample ``batch_size`` sub-trajectories of ``horizon`` steps and update; the first call runs one update
        per step collected so far (``pretrain``, the reference's update burst at the end of the seed phase)."""
        metrics: Metrics = {}
        for _ in range(self._updates_now(step)):
            metrics = self.update_from(replay.sample_trajectories(self.batch_size, self.horizon))
        return metrics

    def _updates_now(self, step: int) -> int:
        """Updates for this ``update`` call: ``step`` on the first call with ``pretrain`` (the burst), else 1."""
        return max(int(step), 1) if (self.update_burst and self._num_updates == 0) else 1

    def _prepare(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        """Move a batch to the device; random-shift every pixel frame independently (pad ``aug_pad``)."""
        obs = {k: v.to(self.device, non_blocking=True) for k, v in traj.obs.items()}
        if "pixels" in obs and self.aug_pad > 0:
            pix = obs["pixels"]
            flat = pix.reshape(-1, *pix.shape[-3:])
            shifts = sample_shifts(flat.shape[0], self.aug_pad, self.device, self.generator)
            obs["pixels"] = random_shift(flat, self.aug_pad, shifts).reshape(pix.shape)
        return obs

    def update_from(self, traj: Trajectories) -> Metrics:
        """One TD-MPC2 update on a batch (obs (H+1, B, ...), action/reward/terminated (H, B, .)); tdmpc2.py::_update."""
        m, g, H = self.model, self.generator, traj.action.shape[0]
        obs = self._prepare(traj)
        action = traj.action.to(self.device, torch.float32)
        reward = traj.reward.to(self.device, torch.float32)
        terminated = traj.terminated.to(self.device, torch.float32)
        rho = self.rho ** torch.arange(H + 1, device=self.device, dtype=torch.float32)

        with torch.no_grad():  # targets, model in eval mode (no dropout)
            next_z = m.encode({k: v[1:] for k, v in obs.items()})
            next_a, _ = m.pi(next_z, g)
            q_next = m.Q(next_z, next_a, "min", target=True, generator=g)
            td_target = reward + self.discount * (1 - terminated) * q_next

        m.train()
        z = m.encode({k: v[0] for k, v in obs.items()})
        zs = [z]
        for t in range(H):
            z = m.next(z, action[t])
            zs.append(z)
        zs_t = torch.stack(zs)  # (H+1, B, L)
        consistency = ((zs_t[1:] - next_z) ** 2).mean(dim=(1, 2))  # (H,)
        consistency_loss = (consistency * rho[:H]).sum() / H
        qs = m.Q(zs_t[:-1], action, "all")  # (num_q, H, B, bins)
        reward_pred = m.reward(zs_t[:-1], action)
        reward_ce = m.two_hot.soft_ce(reward_pred, reward)  # (H, B, 1)
        target_2h = m.two_hot.encode(td_target)  # (H, B, bins), shared by the members
        value_ce = -(target_2h * F.log_softmax(qs, dim=-1)).sum(-1)  # (num_q, H, B)
        if traj.reward_valid is not None:  # made-up rewards (failed reward-model calls): no reward or TD target
            valid = traj.reward_valid.to(self.device, torch.float32)
            reward_ce, value_ce = reward_ce * valid, value_ce * valid[..., 0]
        reward_loss = (reward_ce.mean(dim=(1, 2)) * rho[:H]).sum() / H
        value_ce = value_ce.mean(-1)  # (num_q, H)
        value_loss = (value_ce * rho[:H]).sum() / (H * m.num_q)
        total = (self.consistency_coef * consistency_loss + self.reward_coef * reward_loss
                 + self.value_coef * value_loss)
        termination_loss = torch.zeros(())
        if m._termination is not None:
            termination_loss = F.binary_cross_entropy_with_logits(m.termination(zs_t[1:], unnormalized=True),
                                                                  terminated)
            total = total + self.termination_coef * termination_loss
        total.backward()
        all_reduce_gradients(self._model_params)  # under torchrun: the gradient of the loss over every rank's batch
        grad_norm = torch.nn.utils.clip_grad_norm_(self._model_params, self.grad_clip_norm)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)

        pi_metrics = self._update_pi(zs_t.detach(), rho)
        m.soft_update_target_Q(self.tau)
        m.eval()
        if self.dormant_every and self._num_updates % self.dormant_every == 0:  # on the batch's first latents
            pi_metrics.update(self.dormant_metrics(zs_t[0].detach()))
        self._num_updates += 1
        out = {"consistency_loss": consistency_loss, "reward_loss": reward_loss, "value_loss": value_loss,
               "total_loss": total, "grad_norm": grad_norm, "batch_reward": reward.mean()}
        if m._termination is not None:
            out["termination_loss"] = termination_loss
        return {**{k: float(v.detach()) for k, v in out.items()}, **pi_metrics}

    def _update_pi(self, zs: torch.Tensor, rho: torch.Tensor) -> Metrics:
        """Maximise scaled Q (mean of two random members, parameters frozen) plus entropy over the latent rollout
        (tdmpc2.py::update_pi); with an actor ensemble (``num_pi`` > 1) every policy prior does so on its own
        draw of two Q members, gradients clipped per policy as the MoDem-V2 reference does per actor."""
        m, losses, entropies = self.model, [], []
        for k in range(m.num_pi):
            action, info = m.pi(zs, self.generator, member=k)
            qs = m.Q(zs, action, "avg", detach=True, generator=self.generator)
            if k == 0:  # the Q scale follows the first prior, as with a single policy (percentiles of all ranks)
                self.scale.update(all_gather_cat(qs[0]))
            qs = self.scale(qs)
            losses.append((-(self.entropy_coef * info["scaled_entropy"] + qs).mean(dim=(1, 2)) * rho).mean())
            entropies.append(info["entropy"].mean().detach())
        pi_loss = torch.stack(losses).sum()
        pi_loss.backward()
        all_reduce_gradients(p for net in m.pi_nets() for p in net.parameters())
        pi_grad_norm = max(float(torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip_norm))
                           for net in m.pi_nets())
        self.pi_optim.step()
        self.pi_optim.zero_grad(set_to_none=True)
        return {"pi_loss": float(pi_loss.detach()) / m.num_pi, "pi_grad_norm": pi_grad_norm,
                "pi_entropy": float(torch.stack(entropies).mean()), "pi_scale": float(self.scale.value)}

    def dormant_stats(self, z: torch.Tensor) -> tuple[DormantStats, DormantStats]:
        """(policy priors, Q ensemble) tau-dormant ratios on latents ``z`` (see :func:`world_model_dormant_stats`)."""
        return world_model_dormant_stats(self.model, z, self.dormant_threshold)

    def dormant_metrics(self, z: torch.Tensor) -> Metrics:
        """``actor_dormant_ratio[/<layer>]`` and ``critic_dormant_ratio[/layer<i>]`` (see :meth:`dormant_stats`)."""
        actor, critic = self.dormant_stats(z)
        return {**actor.metrics("actor_dormant_ratio"), **critic.metrics("critic_dormant_ratio")}

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """World model (with target Qs), optimisers, Q scale, generator, update count; weights_only-safe."""
        return {
            "agent": self.agent_name,
            "config": dict(self.config),
            "shapes": {"obs": dict(self.shapes["obs"]), "action": list(self.shapes["action"])},
            "model": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "pi_optim": self.pi_optim.state_dict(),
            "scale": self.scale.state_dict(),
            "generator": self.generator.get_state(),
            "num_updates": self._num_updates,
            "prev_mean": self._prev_mean,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything from :meth:`state_dict`; CheckpointError if it is another agent, shape or size."""
        if isinstance(state, dict) and isinstance(state.get("config"), dict):  # saved before these keys existed
            old_fusion = "mean" if self.config["obs_fusion"] == "sum_mlp" else "none"  # pixels+state was averaged
            state = {**state, "config": {"pixel_views": 1, "obs_fusion": old_fusion, **state["config"]}}
        check_agent_state(state, self.agent_name, self.shapes, self.config, self.checked_config)
        try:
            self.model.load_state_dict(state["model"])
            self.optim.load_state_dict(state["optim"])
            self.pi_optim.load_state_dict(state["pi_optim"])
            self.scale.load_state_dict(state["scale"])
            self.generator.set_state(state["generator"].cpu())
            self._num_updates = int(state["num_updates"])
            prev = state.get("prev_mean")
            self._prev_mean = None if prev is None else prev.to(self.device)
        except (KeyError, RuntimeError, ValueError) as e:
            msg = " ".join(str(e).split())
            raise CheckpointError(
                f"cannot load {self.agent_name} checkpoint: {type(e).__name__}: {msg[:300]}") from None
