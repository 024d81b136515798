"""MoDem (Hansen et al., 2023) and MoDem-V2 (Lancaster et al., 2023) on the TD-MPC2 world model and planner.

MoDem accelerates a visual model-based agent with a few demonstrations in three phases
(facebookresearch/modem ``train.py``, ``algorithm/tdmpc.py``):

1. **policy pretraining**: behaviour cloning of the policy prior *and the encoder* on the demos' (obs, action)
   pairs -- MSE between the policy's mean action and the demo action on random-shifted pixels, ``bc_steps``
   Adam steps (reference: 2 x demos x episode length) of ``batch_size`` demo samples. It runs in
   :meth:`ModemAgent.pretrain`, which the trainer calls once with the demos it read, before training (a resumed run
   only hands them back).
2. **seeding**: until the first ``update`` (the trainer's ``seed_frames``; reference 5000 agent steps) the agent
   acts with the BC policy (mean + truncated Gaussian noise ``bc_noise_std``, clipped at ``bc_noise_clip``, the
   reference's ``pi(z, min_std)``) instead of uniformly at random; the trainer stores those transitions.
3. **interactive learning**: TD-MPC2 updates on batches mixing the demos into every batch at ratio
   ``demo_schedule(step)`` (``robotrl.mixed_replay.MixedReplay``; reference ``linear(0.5,0.25,50000)`` on Meta-World,
   ``linear(0.75,0.25,50000)`` on Adroit/DMControl). The first update call runs the seed-phase burst of one
   update per collected step, its schedule evaluated at ``step + i`` as in the reference.

MoDem-V2 options (each a flag, on in ``configs/agent/modem_v2.yaml``, off in ``modem.yaml``; facebookresearch/
modemv2 ``algorithm/tdmpc.py::plan`` and its ``scripts/franka/*/modemv2.sh``):

* ``exploration_centering``: MPPI samples around the policy prior's own plan (its mean actions along its latent
  rollout) with std ``centering_std`` instead of around the previous plan with std ``max_std``, every sample and
  the executed action kept within ``centering_bound`` of the prior's actions;
* ``agency_handover``: with probability ``1 - handover_schedule(step)`` the step is taken by the *frozen* BC policy
  (a copy of the model taken after phase 1) instead of the planner; ``linear(init,final,start,end)`` schedules
  (reference ``linear(0.0,1.0,5000,105000)``) ramp the planner's share. Applied in evaluation too, as in the
  reference (the deployed agent is the mixture);
* ``ensemble_value``: planning bootstraps with a conservative value from all ``num_q`` critics,
  ``value_min_coef * min + value_mean_coef * mean + value_std_coef * std`` (reference weights 0, 1, -10) instead
  of the average of two random members;
* actor ensemble (``num_pi`` > 1, the reference's ``ensemble_size``: 5 learned actor-critics beside the BC one):
  ``num_pi`` policy priors, all initialised from the BC policy after phase 1, each trained to maximise the critics
  on its own draw of two members; MPPI's policy trajectories are split evenly among them, and the ensemble value
  takes, for each critic, its value of the best actor's action (the reference's max over the other actors'
  actions) before the min/mean/std combination.

Deviations from the references (which are built on TD-MPC, not TD-MPC2): TD-MPC2's losses, architecture and
planner (horizon 3, no prioritised replay, no std schedule, no MPPI momentum; the reference's planning-horizon
schedule is an option, ``plan_horizon_schedule``, off by default); the env's own reward
(the references use Meta-World's sparse success reward); MoDem-V2's actor-critic pairs are approximated by
``num_pi`` actors over TD-MPC2's shared ``num_q`` critic ensemble (each reference actor has its own twin Q); the TD
target bootstraps with actor 0; the BC policy is a frozen copy of the whole model rather than a separate encoder +
actor-critic pair.
"""

from __future__ import annotations

import json
from copy import deepcopy
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robotrl.augment import random_shift, sample_shifts
from robotrl.contract import PROPRIO_OBS_TYPES, check_obs
from robotrl.distributed import all_reduce_gradients
from robotrl.errors import CheckpointError, ConfigError, RobotRLError
from robotrl.heartbeat import Heartbeat
from robotrl.mixed_replay import MixedReplay
from robotrl.params import given, require
from robotrl.replay import ReplayBuffer
from robotrl.types import Episode, Metrics, Obs

from .modem_demos import demo_dir, read_demos
from .mppi import mppi
from .nets import schedule
from .tdmpc2 import TDMPC2Agent
from .world_model import WorldModel


class ModemAgent(TDMPC2Agent):
    """MoDem on TD-MPC2 (see the module docstring); ``exploration_centering``, ``agency_handover``,
    ``ensemble_value`` and ``num_pi`` > 1 turn it into MoDem-V2 (``configs/agent/modem_v2.yaml`` sets them, and
    ``agent_name="modem_v2"``, its checkpoint tag). Every TD-MPC2 hyperparameter is accepted unchanged.

    Demos: ``demos`` is a directory in the robotrl demo format (:mod:`robotrl.demos`). With ``demos=null`` the
    agent reads ``demo_cache``, where the training workflow (:func:`robotrl.workflows.demos.ensure_demos`) has
    generated ``num_demos`` Meta-World scripted-expert episodes for ``env`` before building the agent.
    ``frame_stack`` must be the env's (the demo replay rebuilds stacks like the main replay).
    """

    agent_name = "modem"
    capabilities = replace(TDMPC2Agent.capabilities, learns_from_demos=True)
    # The MoDem-V2 switches change what the checkpointed networks mean: loading across them is refused.
    checked_config = TDMPC2Agent.checked_config + ("exploration_centering", "agency_handover", "ensemble_value")

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Box,
        device: str,
        demos: str | None = None,
        num_demos: int = 5,
        demo_seed: int = 0,
        demo_cache: str | None = None,
        env: dict[str, Any] | None = None,
        frame_stack: int | None = None,
        demo_schedule: str | float = "linear(0.75,0.25,50000)",
        bc_steps: int | None = None,
        bc_lr: float | None = None,
        bc_noise_std: float = 0.05,
        bc_noise_clip: float = 0.3,
        exploration_centering: bool = False,
        centering_std: float = 0.1,
        centering_bound: float = 0.3,
        agency_handover: bool = False,
        handover_schedule: str | float = "linear(0.0,1.0,5000,105000)",
        ensemble_value: bool = False,
        value_min_coef: float = 0.0,
        value_mean_coef: float = 1.0,
        value_std_coef: float = -10.0,
        plan_horizon_schedule: str | float | None = None,
        agent_name: str = "modem",
        **tdmpc2: Any,
    ):
        require("agent", positive_int={"num_demos": num_demos, **given(frame_stack=frame_stack)},
                nonneg_int={"demo_seed": demo_seed, **given(bc_steps=bc_steps)},
                nonneg={"bc_noise_std": bc_noise_std, "bc_noise_clip": bc_noise_clip},
                positive={"centering_std": centering_std, "centering_bound": centering_bound, **given(bc_lr=bc_lr)},
                finite={"value_min_coef": value_min_coef, "value_mean_coef": value_mean_coef,
                        "value_std_coef": value_std_coef})
        super().__init__(observation_space, action_space, device, **tdmpc2)
        self.agent_name = str(agent_name)  # the checkpoint tag: "modem_v2" from configs/agent/modem_v2.yaml
        self._seed = None if tdmpc2.get("seed") is None else int(tdmpc2["seed"])
        self.demos_path = None if demos is None else str(demos)
        self.num_demos, self.demo_seed = int(num_demos), int(demo_seed)
        self.demo_cache = None if demo_cache is None else str(demo_cache)
        self.env_cfg = None if env is None else dict(env)
        if frame_stack is None:
            frame_stack = 1 if "pixels" not in observation_space.spaces else (
                observation_space["pixels"].shape[0] // (3 * (tdmpc2.get("pixel_views") or 1)))
        self.frame_stack = int(frame_stack)
        self.replay_nstep, self.replay_discount = int(tdmpc2.get("nstep", 1)), float(tdmpc2.get("discount", 0.99))
        self.demo_schedule = demo_schedule
        self.demo_ratio(0)  # validates the spec now
        self.bc_steps = None if bc_steps is None else int(bc_steps)
        self.bc_lr = float(bc_lr if bc_lr is not None else tdmpc2.get("lr", 3e-4))
        self.bc_noise_std, self.bc_noise_clip = float(bc_noise_std), float(bc_noise_clip)
        self.exploration_centering = bool(exploration_centering)
        self.centering_std, self.centering_bound = float(centering_std), float(centering_bound)
        self.agency_handover = bool(agency_handover)
        self.handover_schedule = handover_schedule
        self.handover_prob(0)
        self.plan_horizon_schedule = plan_horizon_schedule
        self.planning_horizon(0)  # validates the spec now
        self.ensemble_value = bool(ensemble_value)
        self.value_coefs = (float(value_min_coef), float(value_mean_coef), float(value_std_coef))
        if self.ensemble_value and self.model.num_q < 2 and value_std_coef != 0:
            raise ConfigError("ensemble_value with value_std_coef != 0 needs num_q >= 2")
        self.config.update(exploration_centering=self.exploration_centering, agency_handover=self.agency_handover,
                           ensemble_value=self.ensemble_value, num_demos=self.num_demos)
        self.demos: list[Episode] | None = None  # handed to pretrain() by the workflow
        self.demo_replay: ReplayBuffer | None = None
        self.extra_demos: list[Episode] = []  # added during training (a person's interventions on the arm)
        self._pending_demo_rng: dict[str, Any] | None = None
        self.bc_done = False
        self.bc_metrics: Metrics = {}
        # frozen BC policy for agency handover (a copy of the model after phase 1)
        self.bc_model: WorldModel | None = None

    # ------------------------------------------------------------------ schedules
    def demo_ratio(self, step: int) -> float:
        """Share of each batch drawn from the demos at agent step ``step``."""
        ratio = schedule(self.demo_schedule, step)
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"demo_schedule {self.demo_schedule!r} gives {ratio} at step {step}, expected [0, 1]")
        return ratio

    def handover_prob(self, step: int) -> float:
        """Probability that the planner (not the frozen BC policy) acts at ``step`` (1 without handover)."""
        if not self.agency_handover:
            return 1.0
        p = schedule(self.handover_schedule, step)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"handover_schedule {self.handover_schedule!r} gives {p} at step {step}, "
                              "expected [0, 1]")
        return p

    def planning_horizon(self, step: int) -> int:
        """MPPI's horizon at ``step``: ``int(plan_horizon_schedule(step))`` capped at the model's ``horizon`` (the
        reference's ``horizon_schedule``: short plans while the model is fit on little data); fixed without one."""
        if self.plan_horizon_schedule is None:
            return self.horizon
        h = int(schedule(self.plan_horizon_schedule, step))
        if h < 1:
            raise ConfigError(f"plan_horizon_schedule {self.plan_horizon_schedule!r} gives {h} at step {step}, "
                              "expected >= 1")
        return min(self.horizon, h)

    # ------------------------------------------------------------------ demos
    def load_demos(self) -> list[Episode]:
        """The demos this agent learns from (``demos``, or the first ``num_demos`` of ``demo_cache``), checked
        against its spaces (:func:`.modem_demos.read_demos`)."""
        obs_type = (self.env_cfg or {}).get("obs_type") or "pixels"
        root = demo_dir(self.demos_path, self.demo_cache)
        return read_demos(root, self.observation_space, self.action_dim, self.frame_stack,
                          proprio=obs_type in PROPRIO_OBS_TYPES,
                          limit=self.num_demos if self.demos_path is None else None)

    def add_demos(self, episodes: list[Episode]) -> None:
        """More demonstrations during training (SERL-style: the segments a person drove the arm), appended to the demo
        buffer, which is rebuilt with room for them; its sampling RNG carries on. Episodes are in this agent's
        observation format (single frames, as the replay stores them)."""
        if not episodes:
            return
        if self.demo_replay is not None:
            self._pending_demo_rng, self.demo_replay = self.demo_replay.rng.bit_generator.state, None
        self.extra_demos.extend(episodes)
        if self.demos is not None:
            self._demo_buffer()

    def _demo_buffer(self) -> ReplayBuffer:
        """The demo replay: the demos :meth:`pretrain` was handed plus :meth:`add_demos`' (built on first use)."""
        if self.demo_replay is None:
            if self.demos is None:
                raise RobotRLError(f"agent={self.agent_name} has no demos: call pretrain(demos) before it learns "
                                   "(robotrl train does: robotrl.workflows.demos.pretrain_on_demos)")
            episodes = self.demos + self.extra_demos
            capacity = sum(len(ep.action) + 1 for ep in episodes) + 1
            buf = ReplayBuffer(capacity, self.observation_space, self.action_dim, self.frame_stack,
                               nstep=self.replay_nstep, discount=self.replay_discount,
                               seed=self.demo_seed if self._seed is None else self._seed,
                               device=self.device)
            for ep in episodes:
                buf.add_episode(ep)
            if self._pending_demo_rng is not None:
                buf.rng.bit_generator.state, self._pending_demo_rng = self._pending_demo_rng, None
            self.demo_replay = buf
        return self.demo_replay

    def mixed_replay(self, replay: ReplayBuffer) -> MixedReplay:
        """The trainer's replay with the demos mixed in at ``demo_schedule``."""
        demos = self._demo_buffer()
        if replay.frame_stack != demos.frame_stack:
            raise ConfigError(f"agent frame_stack={demos.frame_stack} != the replay's {replay.frame_stack}; set "
                              "agent.frame_stack to env.frame_stack (configs/agent/modem.yaml interpolates it)")
        return MixedReplay(replay, demos, self.demo_ratio)

    # ------------------------------------------------------------------ phase 1: behaviour cloning
    def pretrain(self, demos: list[Episode]) -> Metrics:
        """Phase 1, once before training: keep ``demos`` (:meth:`load_demos`' episodes, which the workflow reads)
        as the demo buffer and behaviour-clone on them, unless a restored checkpoint says that already ran (then
        the demos are only handed back). Returns the BC metrics."""
        if self.demo_replay is not None:  # handed again: the buffer's sampling RNG carries on
            self._pending_demo_rng, self.demo_replay = self.demo_replay.rng.bit_generator.state, None
        self.demos = list(demos)
        self._demo_buffer()
        return self.bc_metrics if self.bc_done else self.pretrain_bc()

    def _check_pretrained(self) -> None:
        if not self.bc_done:
            raise RobotRLError(f"agent={self.agent_name} acts and learns after its BC phase: call pretrain(demos) "
                               "first (robotrl train does) or load a checkpoint")

    def pretrain_bc(self) -> Metrics:
        """Phase 1: behaviour cloning of encoder + policy prior on the demos (modem algorithm/tdmpc.py::init_bc).

        Adam (``bc_lr``) on encoder and policy parameters, MSE between the policy's mean action on random-shifted
        obs and the demo action, gradients clipped at ``grad_clip_norm``. Returns the first/last losses."""
        demos = self._demo_buffer()
        steps = self.bc_steps if self.bc_steps is not None else 2 * len(demos)
        m = self.model
        params = [*m.encoder_parameters(), *m._pi.parameters()]
        optim = torch.optim.Adam(params, lr=self.bc_lr)
        losses = []
        m.train()
        beat = Heartbeat("MoDem BC pretraining")  # minutes on CPU before the first env step
        for i in range(steps):
            beat.tick(lambda i=i: f"step {i}/{steps}" + (f", loss {losses[-1]:.4g}" if losses else ""))
            traj = demos.sample_trajectories(self.batch_size, 1)
            obs = {k: v[0].to(self.device) for k, v in traj.obs.items()}
            if "pixels" in obs and self.aug_pad > 0:
                shifts = sample_shifts(obs["pixels"].shape[0], self.aug_pad, self.device, self.generator)
                obs["pixels"] = random_shift(obs["pixels"], self.aug_pad, shifts)
            _, info = m.pi(m.encode(obs), self.generator)
            loss = ((info["mean"] - traj.action[0].to(self.device)) ** 2).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            all_reduce_gradients(params)  # under torchrun: every rank's demo batch (no-op in one process)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            optim.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():  # every actor of an ensemble starts from the BC policy (modemv2 post_bc_load)
            for net in m._pi_ensemble:
                net.load_state_dict(m._pi.state_dict())
        m.eval()
        self.bc_done = True
        if self.agency_handover:
            self.bc_model = deepcopy(self.model).requires_grad_(False).eval()
        self.bc_metrics = {"bc_steps": float(steps), "bc_loss_first": losses[0] if losses else float("nan"),
                           "bc_loss_last": losses[-1] if losses else float("nan")}
        return self.bc_metrics

    @torch.no_grad()
    def bc_action(self, obs: Obs, eval_mode: bool, frozen: bool = False) -> np.ndarray:
        """The BC policy's action: its mean, plus clipped Gaussian noise when training (the reference's
        ``pi(z, min_std)``); ``frozen`` uses the copy taken after phase 1 (agency handover)."""
        m = self.bc_model if (frozen and self.bc_model is not None) else self.model
        tensors = {k: torch.as_tensor(np.asarray(v), device=self.device)[None] for k, v in obs.items()}
        _, info = m.pi(m.encode(tensors), self.generator)
        a = info["mean"][0]
        if not eval_mode and self.bc_noise_std > 0:
            noise = torch.randn(a.shape, device=self.device, generator=self.generator) * self.bc_noise_std
            a = a + noise.clamp(-self.bc_noise_clip, self.bc_noise_clip)
        return a.clamp(-1, 1).float().cpu().numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ acting (phase 2 and handover)
    def act(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """BC policy in the seed phase (phase 2); afterwards the planner, or with agency handover the frozen BC
        policy with probability ``1 - handover_prob(step)``."""
        self._check_pretrained()
        if not eval_mode and self._num_updates == 0:
            check_obs(obs, self.observation_space)
            return self.bc_action(obs, eval_mode)
        if self.agency_handover:
            check_obs(obs, self.observation_space)
            u = float(torch.rand((), device=self.device, generator=self.generator))
            if u >= self.handover_prob(step):
                self._prev_mean = None  # the planner's warm start is stale after a BC step
                return self.bc_action(obs, eval_mode, frozen=True)
        return super().act(obs, step, eval_mode)

    def plan(self, z: torch.Tensor, eval_mode: bool, horizon: int | None = None) -> torch.Tensor:
        """TD-MPC2's MPPI, or with ``exploration_centering`` MPPI around the policy prior's plan, bounded."""
        if not self.exploration_centering:
            return super().plan(z, eval_mode, horizon)
        H, S, A, g = horizon or self.horizon, self.num_samples, self.action_dim, self.generator
        m, dev = self._planning_model(), z.device
        dtype = torch.bfloat16 if self.plan_bf16 else torch.float32
        z = z.to(dtype)
        prior = torch.empty(H, A, device=dev)
        _z = z
        for t in range(H):  # the policy prior's own plan: its mean action along its latent rollout
            _, info = m.pi(_z, g)
            prior[t] = info["mean"][0].float()
            if t < H - 1:
                _z = m.next(_z, info["mean"])
        low = (prior - self.centering_bound).clamp(-1, 1)[:, None]
        high = (prior + self.centering_bound).clamp(-1, 1)[:, None]
        noise = torch.empty(H, S, A, device=dev)

        def sample(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
            noise.normal_(generator=g)
            actions = torch.maximum(torch.minimum(mean[:, None] + std[:, None] * noise, high), low)
            actions[:, 0] = prior  # the prior itself is always a candidate
            return actions

        z = z.expand(S, -1)
        a, mean = mppi(sample, lambda actions: self._estimate_value(z, actions.to(dtype)), prior.clone(),
                       torch.full((H, A), self.centering_std, device=dev), self.mppi_settings, g, eval_mode)
        self._prev_mean = mean.clone()
        return torch.maximum(torch.minimum(a, high[0, 0]), low[0, 0])

    def _terminal_value(self, m: WorldModel, z: torch.Tensor) -> torch.Tensor:
        if not self.ensemble_value:
            return super()._terminal_value(m, z)
        # each critic's value of the best actor's action (one actor without an ensemble): (num_q, N, 1)
        qs = torch.stack([m.two_hot.decode(m.Q(z, m.pi(z, self.generator, member=k)[0], "all").float())
                          for k in range(m.num_pi)]).max(0).values
        c_min, c_mean, c_std = self.value_coefs
        value = c_mean * qs.mean(0)
        if c_min:
            value = value + c_min * qs.min(0).values
        if c_std:
            value = value + c_std * qs.std(0)
        return value

    # ------------------------------------------------------------------ learning (phase 3)
    def update(self, replay: Any, step: int) -> Metrics:
        """TD-MPC2 updates on batches with ``round(demo_ratio * batch_size)`` demo sub-trajectories."""
        self._check_pretrained()
        mixed = self.mixed_replay(replay)
        n = self._updates_now(step)
        burst = n > 1
        metrics: Metrics = {}
        s = int(step)
        for i in range(n):
            s = int(step) + i if burst else int(step)
            metrics = self.update_from(mixed.sample_trajectories(self.batch_size, self.horizon, step=s))
        metrics["demo_ratio"] = self.demo_ratio(s)
        metrics["demo_batch_size"] = float(mixed.num_demo(self.batch_size, s))
        if self.agency_handover:
            metrics["handover_prob"] = self.handover_prob(int(step))
        if burst:
            metrics.update(self.bc_metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        rng = self.demo_replay.rng.bit_generator.state if self.demo_replay is not None else self._pending_demo_rng
        state.update(bc_done=self.bc_done, bc_metrics=dict(self.bc_metrics),
                     demo_rng=None if rng is None else json.dumps(rng),
                     bc_model=None if self.bc_model is None else self.bc_model.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.bc_done = bool(state["bc_done"])
            self.bc_metrics = {k: float(v) for k, v in state.get("bc_metrics", {}).items()}
            rng = state.get("demo_rng")
            rng = None if rng is None else json.loads(rng)
            if self.demo_replay is not None and rng is not None:
                self.demo_replay.rng.bit_generator.state = rng
            else:
                self._pending_demo_rng = rng
            if state.get("bc_model") is not None:
                self.bc_model = deepcopy(self.model).requires_grad_(False).eval()
                self.bc_model.load_state_dict(state["bc_model"])
            else:
                self.bc_model = None
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"cannot load {self.agent_name} checkpoint: {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]}") from None


__all__ = ["ModemAgent"]
