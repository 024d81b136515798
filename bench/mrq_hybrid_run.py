"""robotrl's MR.Q update inside facebookresearch/MRQ's own training loop, replay buffer and env (from state).

    OMP_NUM_THREADS=1 MUJOCO_GL=egl python bench/mrq_hybrid_run.py --ref /work/.mirror/facebookresearch+MRQ/repo \\
        --out runs/mrq_hybrid/walker_walk_state -- --env Dmc-walker-walk --seed 1 --total_timesteps 20000

This splits a learning difference between robotrl's MR.Q and the reference in two: it runs the reference's
``main.py`` (its env, loop, random phase, evaluation and LAP buffer with its sampling mask) exactly as
``bench/mrq_reference_run.py`` does, but the agent's networks, acting and updates are robotrl's ``MRQAgent`` with its
default settings. If this learns like the reference, a difference lies in robotrl's replay or training loop; if it
learns like robotrl, in the agent. The glue is :class:`ReferenceReplay`: robotrl's replay interface over the
reference's buffer (its value batches summed with its own ``multi_step_reward``, its reward scale, its priorities
``max(|TD|, min_priority) ** alpha``). State observations only (a pixel run costs ~15 h per seed here).
Evals and logs land where the reference writes them (``<out>/evals``, ``<out>/logs``), named ``MRQ+<env>+<seed>``.
``--learning-starts N`` replaces the reference's 10,000 random steps before the first update (smoke tests only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mrq_reference_run import add_arguments, run  # noqa: E402
from robotrl.agents.mrq import MRQAgent  # noqa: E402

from robotrl.types import Batch, Trajectories  # noqa: E402

_ALWAYS_TRAINING = 10**12  # robotrl's step counter: past num_expl_steps (the reference's buffer decides when to start)


class ReferenceReplay:
    """The part of robotrl's replay interface MRQAgent.update uses, served by the reference's ReplayBuffer."""

    def __init__(self, buffer, multi_step_reward, gammas: torch.Tensor, discount_n: float, alpha: float,
                 min_priority: float):
        """``multi_step_reward``, ``gammas`` (1, Q_horizon, 1) and ``discount_n`` (discount ** Q_horizon) are the
        reference agent's own, so the n-step batch is summed exactly as it sums it."""
        self.buffer, self.multi_step_reward = buffer, multi_step_reward
        self.gammas, self.discount_n = gammas, float(discount_n)
        self.alpha, self.min_priority = alpha, min_priority

    def enable_priority(self, alpha: float, min_priority: float) -> None:
        """The reference's buffer is prioritised from the start."""

    def mean_abs_reward(self) -> float:
        return self.buffer.reward_scale()

    def has_terminations(self) -> bool:
        return bool(self.buffer.env_terminates)

    def sample_trajectories(self, batch_size: int, horizon: int) -> Trajectories:
        state, action, next_state, reward, not_done = self.buffer.sample(horizon, include_intermediate=True)
        obs = torch.cat([state[:, :1], next_state], dim=1)  # (B, H+1, S)
        return Trajectories(obs={"state": obs.transpose(0, 1).contiguous()}, action=action.transpose(0, 1),
                            reward=reward.transpose(0, 1), terminated=1.0 - not_done.transpose(0, 1))

    def sample(self, batch_size: int) -> Batch:
        state, action, next_state, reward, not_done = self.buffer.sample(self.gammas.shape[1],
                                                                         include_intermediate=False)
        reward, not_done = self.multi_step_reward(reward, not_done, self.gammas)
        return Batch(obs={"state": state}, action=action, reward=reward, discount=not_done * self.discount_n,
                     next_obs={"state": next_state})

    def update_priority(self, td_error: torch.Tensor) -> None:
        self.buffer.update_priority(td_error.clamp(min=self.min_priority).pow(self.alpha))


def hybrid_agent_class(mrq_module, hp_overrides: dict[str, int]):
    """A subclass of the reference's Agent: its buffer and training schedule, robotrl's nets, acting and update."""

    class HybridAgent(mrq_module.Agent):
        def __init__(self, obs_shape, action_dim, max_action, pixel_obs, discrete, device, history=1, hp=None):
            if pixel_obs or discrete or history != 1:
                raise SystemExit("the hybrid run supports continuous actions from state only")
            super().__init__(obs_shape, action_dim, max_action, pixel_obs, discrete, device, history,
                             {**(hp or {}), **hp_overrides})
            self.name = "MR.Q (robotrl update in the reference's loop)"
            space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, tuple(obs_shape), np.float32)})
            self.mine = MRQAgent(space, gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32), str(device),
                                 seed=int(torch.randint(2**31, ()).item()))  # drawn from the reference's seeded torch
            # the reference's __init__ has made self.gammas and self.discount (= discount ** Q_horizon)
            self.replay = ReferenceReplay(self.replay_buffer, mrq_module.multi_step_reward, self.gammas, self.discount,
                                          self.alpha, self.min_priority)

        def select_action(self, state: np.ndarray, use_exploration: bool = True):
            if self.replay_buffer.size < self.buffer_size_before_training and use_exploration:
                return None  # the reference's random phase: the env samples the action
            obs = {"state": np.asarray(state, np.float32)}
            return self.mine.act(obs, _ALWAYS_TRAINING, eval_mode=not use_exploration) * self.max_action

        def train(self):
            if self.replay_buffer.size <= self.buffer_size_before_training:
                return
            self.mine.update(self.replay, _ALWAYS_TRAINING)

    return HybridAgent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--learning-starts", type=int, default=None,
                        help="random steps before the first update instead of the reference's 10,000 (smoke tests)")
    args = parser.parse_args()
    overrides = {} if args.learning_starts is None else {"buffer_size_before_training": args.learning_starts}
    run(args, "hybrid", patch=lambda module: setattr(module.MRQ, "Agent", hybrid_agent_class(module.MRQ, overrides)))


if __name__ == "__main__":
    main()
