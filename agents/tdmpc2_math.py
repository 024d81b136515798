"""TD-MPC2 math: symlog/symexp, two-hot discrete regression, soft cross-entropy, the squashed Gaussian policy's
log-probabilities, the discount heuristic and the running Q scale (nicklashansen/tdmpc2 ``common/math.py``,
``common/scale.py``, ``tdmpc2.py::_get_discount``).

The two-hot functions take the bin grid explicitly (``num_bins``, ``vmin``, ``vmax`` in symlog space) and work on
any leading shape: ``two_hot(x)`` maps (..., 1) scalars to (..., num_bins) targets, ``two_hot_inv`` maps
(..., num_bins) logits back to (..., 1) scalars.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI = 0.9189385175704956  # 0.5 * log(2 pi), as in common/math.py::gaussian_logprob


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|) (DreamerV3)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: sign(x) (exp|x| - 1)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


class TwoHot:
    """Discrete regression on ``num_bins`` evenly spaced bins over [vmin, vmax] in symlog space.

    ``num_bins`` 0 means plain regression (identity) and 1 means symlog regression, as in the reference.
    """

    def __init__(self, num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0):
        if num_bins < 0 or vmax <= vmin:
            raise ValueError(f"num_bins={num_bins} must be >= 0 and vmin={vmin} < vmax={vmax}")
        self.num_bins, self.vmin, self.vmax = int(num_bins), float(vmin), float(vmax)
        self.bin_size = (self.vmax - self.vmin) / max(self.num_bins - 1, 1)
        self._bins: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def bins(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._bins:
            with torch.inference_mode(False):  # cached: must not be an inference tensor (used in training too)
                self._bins[key] = torch.linspace(self.vmin, self.vmax, self.num_bins, device=device,
                                                 dtype=dtype)
        return self._bins[key]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 1) scalars -> (..., num_bins) soft two-hot targets (rows sum to 1)."""
        if self.num_bins == 0:
            return x
        if self.num_bins == 1:
            return symlog(x)
        x = torch.clamp(symlog(x), self.vmin, self.vmax)
        pos = (x - self.vmin) / self.bin_size
        idx = torch.floor(pos)
        offset = pos - idx
        idx = idx.long()
        out = torch.zeros(*x.shape[:-1], self.num_bins, device=x.device, dtype=x.dtype)
        out.scatter_(-1, idx, 1 - offset)
        # the upper neighbour of the last bin wraps to bin 0 with weight 0 (x == vmax), as in the reference
        return out.scatter_add_(-1, (idx + 1) % self.num_bins, offset)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., num_bins) logits -> (..., 1) scalars: symexp of the softmax-weighted bin centre."""
        if self.num_bins == 0:
            return logits
        if self.num_bins == 1:
            return symexp(logits)
        probs = F.softmax(logits, dim=-1)
        return symexp(probs @ self.bins(logits.device, logits.dtype)[:, None])

    def soft_ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (..., num_bins) logits against two-hot(target (..., 1)); returns (..., 1)."""
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)


def scaled_log_std(x: torch.Tensor, low: float, dif: float) -> torch.Tensor:
    """Map raw network output to a log std in [low, low + dif] with tanh (common/math.py::log_std)."""
    return low + 0.5 * dif * (torch.tanh(x) + 1)


def gaussian_logprob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(eps; 0, 1) of the reparameterisation noise with the given log std, summed over the last dim."""
    return (-0.5 * eps.pow(2) - log_std - LOG_SQRT_2PI).sum(-1, keepdim=True)


def squash(mu: torch.Tensor, pi: torch.Tensor, log_pi: torch.Tensor):
    """tanh-squash mean and sample and correct the log-probability (common/math.py::squash)."""
    mu, pi = torch.tanh(mu), torch.tanh(pi)
    log_pi = log_pi - torch.log(F.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return mu, pi, log_pi


def heuristic_discount(episode_length: int, denom: float = 5, low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's discount from the episode length in agent steps: clip((L/5 - 1) / (L/5), 0.95, 0.995)."""
    frac = episode_length / denom
    return float(min(max((frac - 1) / frac, low), high))


class RunningScale(nn.Module):
    """Running estimate of the 5th-95th percentile range of Q (at least 1), EMA with rate ``tau``
    (common/scale.py); the policy loss divides Q by it."""

    def __init__(self, tau: float):
        super().__init__()
        self.tau = float(tau)
        self.register_buffer("value", torch.ones(1))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().flatten(1) if x.ndim > 1 else x.detach()[:, None]
        n = x.shape[0]
        srt = torch.sort(x, dim=0).values
        out = []
        for q in (5.0, 95.0):  # linear interpolation between order statistics, as the reference
            pos = q * (n - 1) / 100
            lo = math.floor(pos)
            hi = min(lo + 1, n - 1)
            w = pos - lo
            out.append(srt[lo] * (1 - w) + srt[hi] * w)
        value = torch.clamp(out[1] - out[0], min=1.0)
        self.value.lerp_(value.reshape(-1)[:1], self.tau)

    def forward(self, x: torch.Tensor, update: bool = False) -> torch.Tensor:
        if update:
            self.update(x)
        return x / self.value
