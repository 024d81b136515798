"""Types shared by envs, replay, agents and the trainer: the contracts between the folders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

# An observation is a dict with "pixels" (uint8, (3*frame_stack, H, W)) and/or "state" (float32, (S,)).
Obs = dict[str, np.ndarray]
Metrics = dict[str, float]


class Batch(NamedTuple):
    """n-step transitions sampled from replay; every tensor has leading batch dim B.

    ``obs``/``next_obs`` are dicts keyed like the env observation ("pixels" uint8 (B, 3k, H, W),
    "state" float32 (B, S)). ``reward`` is the discounted n-step return sum_{i<m} gamma^i r_{t+i} and
    ``discount`` is gamma^m times the product of env discounts (0 after a termination), both (B, 1),
    so the TD target is ``reward + discount * V(next_obs)``.
    """

    obs: dict[str, torch.Tensor]
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: dict[str, torch.Tensor]


class Trajectories(NamedTuple):
    """Contiguous sub-trajectories (for world models): obs has H+1 steps, action/reward/terminated H steps.

    Shapes are time-major: obs[k] (H+1, B, ...), action (H, B, A), reward (H, B, 1), terminated (H, B, 1).
    ``reward_valid`` (H, B, 1) float32 is 0.0 where the stored reward is made up (a failed reward-model call): a
    world model must not learn the reward there, nor a value target built from it. None: every reward is valid.
    """

    obs: dict[str, torch.Tensor]
    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    reward_valid: torch.Tensor | None = None


@runtime_checkable
class Agent(Protocol):
    """What the trainer needs from an agent (the DrQ-v2 duck type, made explicit)."""

    def reset(self) -> None:
        """Called at the start of every episode (training and evaluation) to drop per-episode state."""

    def act(self, obs: Obs, step: int, eval_mode: bool) -> np.ndarray:
        """Return a float32 action in [-1, 1]^A for one (unbatched) observation."""

    def update(self, replay: Any, step: int) -> Metrics:
        """Sample from ``replay`` and take gradient steps; return scalar metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, target networks, optimisers (tensors and plain types)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Capabilities:
    """What an agent can do beyond :class:`Agent`, declared by its class (``capabilities = Capabilities(...)``) so
    that workflows ask it instead of sniffing config keys, class paths or attributes. All off by default.

    ``batched_acting``: ``act_batch(obs, step, eval_mode) -> (N, A)`` and ``reset_env(i)`` (``env.num_envs > 1``).
    ``learns_from_demos``: ``pretrain(demos)`` once before training on the demos the workflow loaded
    (``load_demos()``), ``add_demos(episodes)`` during it (a person's take-overs); MoDem.
    ``per_task_demos``: its demos are one folder per task of a multi-task config (``agent=vla``), made by
    ``robotrl.workflows.demos`` before it is built.
    ``owns_loop``: runs its own learning loop (Stable-Baselines3): the trainer hands the run to ``SB3Trainer``.
    ``distributed``: a data-parallel learner under torchrun (gradients all-reduced, ``robotrl.distributed``).
    ``own_generator``: its random draws come from ``self.generator`` (a ``torch.Generator``), which Ray rollout
    actors reseed per episode.
    """

    batched_acting: bool = False
    learns_from_demos: bool = False
    per_task_demos: bool = False
    owns_loop: bool = False
    distributed: bool = False
    own_generator: bool = False


NO_CAPABILITIES = Capabilities()


def capabilities_of(agent: Any) -> Capabilities:
    """The capabilities an agent (or agent class) declares; none for a class that declares nothing."""
    caps = getattr(agent, "capabilities", NO_CAPABILITIES)
    if not isinstance(caps, Capabilities):
        name = getattr(agent, "__name__", type(agent).__name__)
        raise TypeError(f"{name}.capabilities is {caps!r}, expected a robotrl.types.Capabilities")
    return caps


class Episode(NamedTuple):
    """One episode as stored on disk (demos) and added to replay in one go.

    ``obs["pixels"]`` holds single frames (T+1, 3 * views, H, W) uint8 -- the newest frame of each stacked
    observation, i.e. ``stacked[-3 * views:]`` -- so frame stacks are rebuilt, never stored; ``obs["state"]`` is
    (T+1, S) float32. ``action`` (T, A) float32 in [-1, 1], ``reward`` (T,) float32, ``terminated`` (T,) bool
    (True only where the MDP ended; a time-limit end is not a termination), ``success`` (T,) bool;
    ``reward_invalid`` (T,) bool or None: True where the reward is made up (a failed reward-model call).
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    success: np.ndarray
    reward_invalid: np.ndarray | None = None
