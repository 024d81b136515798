"""MR.Q's networks (Fujimoto et al., 2025): the model-based encoder, the deterministic policy and the twin value.

Architecture, activations and initialisation as facebookresearch/MRQ ``models.py`` (our own code): every hidden
layer is Linear -> LayerNorm (no affine) -> activation; Linear/Conv weights are Xavier-uniform with the ReLU gain,
biases zero. Parameters are created in the reference's order, so a reference state dict maps onto these modules
one-to-one by position (``bench/mrq_parity.py``).

Two things the reference does not have: an observation with both "pixels" and "state" concatenates the state to
the conv features before the ``zs`` projection (the reference takes one or the other); and the conv stack can run
channels_last (oneDNN's fast NHWC kernels on CPU, same numerics up to float summation order). Pixels arrive as
uint8 and are scaled in the first layer, as in the reference (``x / 255 - 0.5``).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from robotrl.errors import ConfigError


def mrq_init(m: nn.Module) -> None:
    """Xavier-uniform weight with the ReLU gain, zero bias (the reference's ``weight_init``)."""
    if isinstance(m, nn.Linear | nn.Conv2d):
        nn.init.xavier_uniform_(m.weight.data, nn.init.calculate_gain("relu"))
        if m.bias is not None:
            m.bias.data.zero_()


class _FastELU(torch.autograd.Function):
    """ELU with ``exp(x) - 1`` on the negative side instead of ``expm1``: torch's CPU expm1 is not vectorised and
    made F.elu ~22% of an MR.Q update; this is ~5x faster and within 1.2e-7 of F.elu (float32 ulps near 0).
    The backward is torch's own ``elu_backward`` on the output (grad * (y + 1) where x <= 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # max(exp(min(x, 0)) - 1, x): x > 0 gives max(0, x) = x; x <= 0 gives exp(x) - 1, which is >= x (up to
        # one rounding of exp near 0, where both are within 2e-8 of ELU). One temporary, four passes.
        y = x.clamp(max=0.0).exp_().sub_(1.0)
        y = torch.maximum(y, x, out=y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1, 1, True, y)


def fast_elu(x: torch.Tensor) -> torch.Tensor:
    return _FastELU.apply(x)


def activation(name: str, fast: bool = True) -> Act:
    """``torch.nn.functional.<name>`` (elu, relu, ...), ELU as :func:`fast_elu` when ``fast``; ConfigError for an
    unknown name."""
    if name == "elu" and fast:
        return fast_elu
    fn = getattr(F, name, None)
    if not callable(fn) or name.startswith("_"):
        raise ConfigError(f"activation {name!r} is not a torch.nn.functional activation (e.g. 'elu', 'relu')")
    return fn


Act = Callable[[torch.Tensor], torch.Tensor]


def ln_act(x: torch.Tensor, act: Act) -> torch.Tensor:
    return act(F.layer_norm(x, (x.shape[-1],)))


class MLP(nn.Module):
    """Linear -> LN -> act -> Linear -> LN -> act -> Linear (the reference's ``BaseMLP``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, act: Act):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(in_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim), nn.Linear(
            hidden_dim, out_dim)
        self.act = act
        self.apply(mrq_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(ln_act(self.l2(ln_act(self.l1(x), self.act)), self.act))


class Encoder(nn.Module):
    """obs -> zs (state embedding); (zs, a) -> zsa; zsa -> (done, next zs, reward logits) via one linear head."""

    def __init__(self, observation_space: gym.spaces.Dict, action_dim: int, num_bins: int, zs_dim: int,
                 za_dim: int, zsa_dim: int, hidden_dim: int, act: Act, channels_last: bool = True):
        super().__init__()
        spaces = observation_space.spaces
        self.has_pixels, self.has_state = "pixels" in spaces, "state" in spaces
        if not (self.has_pixels or self.has_state):
            raise ConfigError(f"observation space needs 'pixels' or 'state', got {list(spaces)}")
        state_dim = spaces["state"].shape[0] if self.has_state else 0
        self.channels_last = channels_last
        if self.has_pixels:
            c, h, w = spaces["pixels"].shape
            self.zs_cnn1 = nn.Conv2d(c, 32, 3, stride=2)
            self.zs_cnn2 = nn.Conv2d(32, 32, 3, stride=2)
            self.zs_cnn3 = nn.Conv2d(32, 32, 3, stride=2)
            self.zs_cnn4 = nn.Conv2d(32, 32, 3, stride=1)
            side = lambda n: ((((n - 3) // 2 + 1 - 3) // 2 + 1 - 3) // 2 + 1) - 2  # noqa: E731
            if side(h) < 1 or side(w) < 1:
                raise ConfigError(f"pixels {h}x{w} are too small for MR.Q's conv stack, expected >= 31x31")
            self.zs_lin = nn.Linear(32 * side(h) * side(w) + state_dim, zs_dim)
        else:
            self.zs_mlp = MLP(state_dim, zs_dim, hidden_dim, act)
        self.za = nn.Linear(action_dim, za_dim)
        self.zsa = MLP(zs_dim + za_dim, zsa_dim, hidden_dim, act)
        self.model = nn.Linear(zsa_dim, num_bins + zs_dim + 1)
        self.zs_dim = zs_dim
        self.act = act
        self.apply(mrq_init)
        if self.has_pixels and channels_last:
            self.to(memory_format=torch.channels_last)

    def zs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """State embedding of a batch of observations (pixels uint8 or float in [0, 255])."""
        if not self.has_pixels:
            return ln_act(self.zs_mlp(obs["state"].float()), self.act)
        x = obs["pixels"]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.float() / 255.0 - 0.5
        for conv in (self.zs_cnn1, self.zs_cnn2, self.zs_cnn3, self.zs_cnn4):
            x = self.act(conv(x))
        features = x.reshape(x.shape[0], -1)  # (C, H, W) order as the reference (a 1.6 MB copy from NHWC)
        if self.has_state:
            features = torch.cat([features, obs["state"].float()], dim=1)
        return ln_act(self.zs_lin(features), self.act)

    def forward(self, zs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """zsa: the state-action embedding the value and the model read."""
        return self.zsa(torch.cat([zs, self.act(self.za(action))], dim=1))

    def model_all(self, zs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(done logit (B, 1), predicted next zs (B, zs_dim), reward logits (B, num_bins))."""
        out = self.model(self.forward(zs, action))
        return out[:, :1], out[:, 1:self.zs_dim + 1], out[:, self.zs_dim + 1:]


class Policy(nn.Module):
    """zs -> tanh(MLP(zs)); ``forward`` also returns the pre-activation (its square is penalised)."""

    def __init__(self, action_dim: int, zs_dim: int, hidden_dim: int, act: Act):
        super().__init__()
        self.policy = MLP(zs_dim, action_dim, hidden_dim, act)

    def forward(self, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.policy(zs)
        return torch.tanh(pre), pre

    def act(self, zs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.policy(zs))


class QNet(nn.Module):
    """One value head: MLP to ``hidden_dim``, LN -> act, Linear to 1."""

    def __init__(self, zsa_dim: int, hidden_dim: int, act: Act):
        super().__init__()
        self.q1 = MLP(zsa_dim, hidden_dim, hidden_dim, act)
        self.q2 = nn.Linear(hidden_dim, 1)
        self.act = act
        self.apply(mrq_init)

    def forward(self, zsa: torch.Tensor) -> torch.Tensor:
        return self.q2(ln_act(self.q1(zsa), self.act))


class Value(nn.Module):
    """Twin Q on zsa: (B, 2)."""

    def __init__(self, zsa_dim: int, hidden_dim: int, act: Act):
        super().__init__()
        self.q1, self.q2 = QNet(zsa_dim, hidden_dim, act), QNet(zsa_dim, hidden_dim, act)

    def forward(self, zsa: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q1(zsa), self.q2(zsa)], dim=1)


class TwoHot:
    """Two-hot encoding over ``num_bins`` symexp-spaced bins in [symexp(lower), symexp(upper)] (reward targets)."""

    def __init__(self, lower: float, upper: float, num_bins: int, device: torch.device):
        line = torch.linspace(lower, upper, num_bins, device=device)
        self.bins = line.sign() * (line.abs().exp() - 1.0)  # symexp
        self.num_bins = num_bins

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) values -> (B, num_bins) two-hot weights; values outside the bins go to the edge bin."""
        x = x.reshape(-1, 1)
        upper = torch.searchsorted(self.bins, x.contiguous(), right=True).clamp(1, self.num_bins - 1)
        lo, hi = self.bins[upper - 1], self.bins[upper]
        weight = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        out = torch.zeros(x.shape[0], self.num_bins, device=x.device, dtype=x.dtype)
        out.scatter_(1, upper - 1, 1.0 - weight)
        out.scatter_add_(1, upper, weight)
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value of the softmax over the bins: (B, num_bins) -> (B, 1)."""
        return (F.softmax(logits, dim=-1) * self.bins).sum(-1, keepdim=True)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample (B, 1) cross-entropy of the logits against the two-hot of ``target``."""
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)
