"""MPPI in a world model's latent space: the loop TD-MPC2 and MoDem(-V2) share (nicklashansen/tdmpc2 ``_plan``).

The planners differ only in where the samples come from (TD-MPC2: Gaussian around a warm-started mean plus policy
rollouts; MoDem-V2's exploration centering: Gaussian around the policy prior's own plan, bounded) and in the final
clip; :func:`mppi` is the elite re-weighting they both run, :func:`estimate_value` the model return they both score
with. Every random draw uses the generator handed in, in a fixed order, so plans are reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass

import torch

from .world_model import WorldModel


@dataclass(frozen=True)
class MPPISettings:
    """The elite re-weighting's hyperparameters (tdmpc2 ``config.yaml``: iterations, num_elites, temperature,
    min_std, max_std)."""

    iterations: int
    num_elites: int
    temperature: float
    min_std: float
    max_std: float


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges cutting ``n`` items into ``parts`` contiguous shares differing by at most one (empty shares
    when n < parts)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def warm_start(prev_mean: torch.Tensor | None, horizon: int, action_dim: int, device: torch.device) -> torch.Tensor:
    """The initial mean (H, A): the previous plan's mean shifted by one step (only the overlap if the horizon
    changed), zeros where there is none."""
    mean = torch.zeros(horizon, action_dim, device=device)
    if prev_mean is not None:
        k = min(horizon, prev_mean.shape[0]) - 1
        mean[:k] = prev_mean[1:k + 1]
    return mean


def bf16_copy(model: WorldModel) -> WorldModel:
    """A bf16 copy of the world model for planning (``plan_bf16``), made outside any inference mode."""
    with torch.inference_mode(False):
        return deepcopy(model).to(torch.bfloat16).eval()


def policy_rollouts(m: WorldModel, z: torch.Tensor, actions: torch.Tensor, num_trajs: int,
                    generator: torch.Generator) -> None:
    """Fill ``actions[:, :num_trajs]`` (H, S, A) with sampled policy-prior rollouts from latent ``z`` (1, L); each
    prior of an actor ensemble rolls out its even share (tdmpc2.py::_plan's ``pi_actions``)."""
    H = actions.shape[0]
    for k, (lo, hi) in enumerate(split_evenly(num_trajs, m.num_pi)):
        if hi == lo:
            continue
        _z = z.expand(hi - lo, -1)
        for t in range(H):
            a_pi, _ = m.pi(_z, generator, member=k)
            actions[t, lo:hi] = a_pi
            if t < H - 1:
                _z = m.next(_z, a_pi)


def estimate_value(m: WorldModel, z: torch.Tensor, actions: torch.Tensor, discount: float,
                   terminal_value: Callable[[WorldModel, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Discounted H-step model return of each action sequence (H, N, A) from latents ``z`` (N, L) plus the
    bootstrap ``terminal_value`` at the last latent, cut at predicted terminations (tdmpc2.py::_estimate_value).
    Returns float32 (N, 1) whatever the model's dtype."""
    ret = torch.zeros(z.shape[0], 1, device=z.device)
    scale, alive = 1.0, None
    for t in range(actions.shape[0]):
        reward = m.two_hot.decode(m.reward(z, actions[t]).float())
        z = m.next(z, actions[t])
        ret = ret + scale * (reward if alive is None else alive * reward)
        scale *= discount
        if m._termination is not None:
            done = (m.termination(z) > 0.5).float()
            alive = 1 - done if alive is None else alive * (1 - done)
    q = terminal_value(m, z)
    return ret + scale * (q if alive is None else alive * q)


def mppi(sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
         estimate: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, std: torch.Tensor,
         settings: MPPISettings, generator: torch.Generator, eval_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``settings.iterations`` rounds of: ``sample(mean, std)`` -> candidate sequences (H, S, A), ``estimate`` ->
    their values (S, 1), softmax-weighted mean/std of the ``num_elites`` best. Then one elite drawn by its score;
    in training its first action gets the final std as Gaussian noise.

    Returns (the first action (A,) before any clip, the final mean (H, A): the next step's warm start)."""
    for _ in range(settings.iterations):
        actions = sample(mean, std)
        value = estimate(actions).nan_to_num(0).squeeze(1)
        elite_value, elite_idx = torch.topk(value, settings.num_elites, dim=0)
        elite_actions = actions[:, elite_idx].float()
        score = torch.softmax(settings.temperature * elite_value, dim=0)  # = exp(T (v - max)) / sum
        mean = (score[None, :, None] * elite_actions).sum(1)
        std = (score[None, :, None] * (elite_actions - mean[:, None]) ** 2).sum(1).sqrt()
        std = std.clamp(settings.min_std, settings.max_std)
    idx = torch.multinomial(score, 1, generator=generator)
    a = elite_actions[0, idx[0]]
    if not eval_mode:
        a = a + std[0] * torch.randn(a.shape[-1], device=a.device, generator=generator)
    return a, mean
