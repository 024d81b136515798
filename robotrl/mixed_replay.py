"""``MixedReplay``: a demo buffer mixed into every batch of the online buffer at a (scheduled) ratio (MoDem)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from robotrl.replay import ReplayBuffer
from robotrl.types import Batch, Trajectories


class MixedReplay:
    """Each batch: exactly round(ratio(step) * B) samples from ``demos`` (first), the rest from ``main``."""

    def __init__(
        self, main: ReplayBuffer, demos: ReplayBuffer, ratio: Callable[[int], float] | float
    ) -> None:
        same = ("observation_space", "action_dim", "frame_stack", "nstep", "discount", "device")
        for attr in same:
            if getattr(main, attr) != getattr(demos, attr):
                raise ValueError(
                    f"demos.{attr}={getattr(demos, attr)!r}, expected the same as "
                    f"main.{attr}={getattr(main, attr)!r}"
                )
        self.main = main
        self.demos = demos
        self.ratio = ratio

    def __len__(self) -> int:
        return len(self.main) + len(self.demos)

    def num_demo(self, batch_size: int, step: int) -> int:
        """How many of ``batch_size`` samples come from the demos at ``step``."""
        ratio = float(self.ratio(step) if callable(self.ratio) else self.ratio)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"demo ratio at step {step} is {ratio}, expected within [0, 1]")
        return int(round(ratio * batch_size))

    def sample(self, batch_size: int, step: int = 0) -> Batch:
        n_demo = self.num_demo(batch_size, step)
        parts = _parts(self.demos.sample, self.main.sample, n_demo, batch_size)
        return Batch(*(_cat([p[i] for p in parts], dim=0) for i in range(len(Batch._fields))))

    def sample_trajectories(self, batch_size: int, horizon: int, step: int = 0) -> Trajectories:
        n_demo = self.num_demo(batch_size, step)
        demos = partial(self.demos.sample_trajectories, horizon=horizon)
        main = partial(self.main.sample_trajectories, horizon=horizon)
        parts = _parts(demos, main, n_demo, batch_size)
        if any(p.reward_valid is not None for p in parts):  # one part has flagged rewards: mask the whole batch
            parts = [p if p.reward_valid is not None else p._replace(reward_valid=torch.ones_like(p.reward))
                     for p in parts]
        return Trajectories(*(_cat([p[i] for p in parts], dim=1) for i in range(len(Trajectories._fields))))


def _parts(
    demo_fn: Callable[[int], Any], main_fn: Callable[[int], Any], n_demo: int, batch_size: int
) -> list[Any]:
    parts = []
    if n_demo > 0:
        parts.append(demo_fn(n_demo))
    if batch_size - n_demo > 0:
        parts.append(main_fn(batch_size - n_demo))
    return parts


def _cat(values: list[Any], dim: int) -> Any:
    """Concatenate tensors or dicts of tensors (obs) along the batch dim (``reward_valid``: None is all valid)."""
    if len(values) == 1:
        return values[0]
    if all(v is None for v in values):
        return None
    if isinstance(values[0], dict):
        return {key: torch.cat([v[key] for v in values], dim=dim) for key in values[0]}
    return torch.cat(values, dim=dim)
