"""TD-MPC2's layers (nicklashansen/tdmpc2 ``common/layers.py``, ``common/init.py``) for
:mod:`robotrl.agents.world_model`: Mish and SimNorm with hand-written gradients, LayerNorm + Mish kernels compiled
per call site, NormedLinear, the MLP, the stacked-weight Q ensemble and the pixel encoders (see that module's
docstring for where they differ from the reference)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_init(m: nn.Module) -> None:
    """common/init.py::weight_init: Linear weights ~ trunc_normal(std=0.02) (bounds +-2, i.e. ~100 std), bias 0.
    Conv layers keep PyTorch's default initialisation, as in the reference."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class _MishFn(torch.autograd.Function):
    """Mish with tanh(softplus(x)) = 1 - 2 / ((e^x + 1)^2 + 1): a few vectorised passes instead of aten's
    scalar softplus/tanh (on CPU ~1.4x faster forward + backward; equal to F.mish within 1e-6)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        t = torch.exp(x.clamp(max=20.0)).add_(1).square_().add_(1).reciprocal_().mul_(-2).add_(1)
        if torch.is_grad_enabled() or x.requires_grad:
            ctx.save_for_backward(x, t)
        return t.mul_(x) if not x.requires_grad else x * t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, t = ctx.saved_tensors
        return grad * torch.sigmoid(x).mul_(x).mul_(1 - t * t).add_(t)


def mish(x: torch.Tensor) -> torch.Tensor:
    """x tanh(softplus(x)); see :class:`_MishFn` (F.mish under autocast, where dtypes vary)."""
    if torch.is_autocast_enabled(x.device.type):
        return F.mish(x)
    return _MishFn.apply(x)


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


class _GroupSoftmaxFn(torch.autograd.Function):
    """Softmax over a short last dim: aten's kernel works row by row, which for SimNorm's rows of 8 is ~5x slower
    than four vectorised passes over the whole tensor (forward + backward ~3.5x; equal to F.softmax within
    float rounding). Reduced-precision inputs are computed in float32, as aten's softmax accumulates."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        e = (xf - xf.amax(-1, keepdim=True)).exp_()
        y = e.div_(e.sum(-1, keepdim=True)).to(x.dtype)
        if torch.is_grad_enabled() or x.requires_grad:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(-1, keepdim=True))


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of ``dim`` features."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        groups = x.reshape(*shape[:-1], -1, self.dim)
        if torch.is_autocast_enabled(x.device.type):
            return F.softmax(groups, dim=-1).view(shape)
        return _GroupSoftmaxFn.apply(groups).view(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _ln_mish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm (affine ``weight``/``bias``, broadcast over leading dims) then Mish, written for torch.compile:
    inductor fuses it into one kernel forward and one backward (eager needs ~12 passes over the activations)."""
    x = torch.addcmul(bias, F.layer_norm(x, x.shape[-1:]), weight)
    e = torch.exp(x.clamp(max=20.0))
    return x * (1 - 2 / ((e + 1) ** 2 + 1))


def _ln_mish_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return _ln_mish(x, weight, bias)


def _ln_mish_ensemble(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return _ln_mish(x, weight, bias)


# dynamo keeps one compile cache (and recompile limit) per code object: one function per call site
_SITES = {"linear": _ln_mish_linear, "ensemble": _ln_mish_ensemble}
_COMPILED: dict[str, Any] = {}
RECOMPILE_LIMIT = 32


def compiled_ln_mish(site: str) -> Any:
    """A ``torch.compile`` of :func:`_ln_mish` per call site ("linear": (..., C) with (C,) affine; "ensemble":
    (k, N, C) with (k, 1, C)), shape-dynamic from the start. Grad modes, dtypes, layer widths and memory layouts
    each need a graph, so the process-wide recompile limit is raised to ``RECOMPILE_LIMIT`` (past the limit dynamo
    silently runs eager)."""
    if site not in _COMPILED:
        import torch._dynamo.config as dynamo_config

        # grad modes x dtypes x layer widths x layouts need more than dynamo's default of 8 graphs per function
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        _COMPILED[site] = torch.compile(_SITES[site], dynamic=True)
    return _COMPILED[site]


class NormedLinear(nn.Linear):
    """Linear -> (dropout) -> LayerNorm -> activation (Mish by default); ``fused`` (set by
    :meth:`WorldModel.compile_kernels`) replaces LayerNorm + Mish by one compiled kernel."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, act: nn.Module | None = None):
        super().__init__(in_features, out_features)
        self.ln = nn.LayerNorm(out_features)
        self.act = act if act is not None else Mish()
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.fused: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.dropout is not None:
            x = self.dropout(x)
        if self.fused is not None:
            return self.fused(x, self.ln.weight, self.ln.bias)
        return self.act(self.ln(x))


def mlp(in_dim: int, hidden: list[int], out_dim: int, act: nn.Module | None = None, dropout: float = 0.0):
    """NormedLinear hidden layers (dropout on the first only), then a plain Linear (or NormedLinear with ``act``)."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = [
        NormedLinear(dims[i], dims[i + 1], dropout=dropout * (i == 0)) for i in range(len(dims) - 2)
    ]
    layers.append(NormedLinear(dims[-2], dims[-1], act=act) if act is not None else nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """``num`` independent ``mlp(in_dim, hidden, out_dim, dropout=dropout)`` with stacked parameters.

    ``forward(x, members)`` takes one input (N, in_dim) shared by every member and returns (k, N, out_dim) for the
    ``members`` selected (all by default). Layer i's parameters are ``weight_i`` (num, out, in), ``bias_i``,
    ``ln_weight_i``, ``ln_bias_i`` (num, out) for hidden layers.
    """

    def __init__(self, num: int, in_dim: int, hidden: list[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.num, self.dropout = int(num), float(dropout)
        self.fused: Any = None  # a compiled LayerNorm + Mish (WorldModel.compile_kernels)
        dims = [in_dim, *hidden, out_dim]
        self.num_layers = len(dims) - 1
        for i in range(self.num_layers):
            w = torch.empty(self.num, dims[i + 1], dims[i])
            nn.init.trunc_normal_(w, std=0.02)
            self.register_parameter(f"weight_{i}", nn.Parameter(w))
            self.register_parameter(f"bias_{i}", nn.Parameter(torch.zeros(self.num, dims[i + 1])))
            if i < self.num_layers - 1:
                self.register_parameter(f"ln_weight_{i}", nn.Parameter(torch.ones(self.num, dims[i + 1])))
                self.register_parameter(f"ln_bias_{i}", nn.Parameter(torch.zeros(self.num, dims[i + 1])))

    def _p(self, name: str, i: int, members: torch.Tensor | None) -> torch.Tensor:
        p = getattr(self, f"{name}_{i}")
        return p if members is None else p.index_select(0, members)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None,
                record: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``record`` (a list) receives every layer's output (k, N, out), after its activation for hidden layers
        (the dormant-ratio diagnostic)."""
        k = self.num if members is None else members.numel()
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        h: torch.Tensor = x
        for i in range(self.num_layers):
            w, b = self._p("weight", i, members), self._p("bias", i, members)
            if i == 0:  # one GEMM for all members on the shared input: (N, k*out) -> (k, N, out)
                h = F.linear(x, w.reshape(-1, w.shape[-1]), b.reshape(-1))
                h = h.view(x.shape[0], k, -1).transpose(0, 1)
            else:  # (k, N, in) @ (k, in, out) + bias
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < self.num_layers - 1:
                if i == 0 and self.dropout and self.training:
                    h = F.dropout(h, self.dropout, training=True)
                ln_w = self._p("ln_weight", i, members).unsqueeze(1)
                ln_b = self._p("ln_bias", i, members).unsqueeze(1)
                if self.fused is not None:
                    h = self.fused(h, ln_w, ln_b)
                else:
                    h = mish(torch.addcmul(ln_b, F.layer_norm(h, h.shape[-1:]), ln_w))
            if record is not None:
                record.append(h)
        return h.reshape(k, *lead, h.shape[-1])


def conv_encoder(in_shape: tuple[int, ...], num_channels: int, latent_dim: int, simnorm_dim: int) -> nn.Sequential:
    """The reference conv stack (common/layers.py::conv) on pixels scaled to [-0.5, 0.5], then SimNorm.

    A layer whose input is smaller than its kernel gets zero padding (k-1)//2; a Linear to ``latent_dim`` is
    inserted when the flattened output differs from it (the reference only supports 64x64, where it is 512).
    """
    c, h, w = in_shape
    layers: list[nn.Module] = []
    size = min(h, w)
    for i, (k, s) in enumerate([(7, 2), (5, 2), (3, 2), (3, 1)]):
        pad = (k - 1) // 2 if size < k else 0
        layers.append(nn.Conv2d(c if i == 0 else num_channels, num_channels, k, stride=s, padding=pad))
        size = (size + 2 * pad - k) // s + 1
        if i < 3:
            layers.append(nn.ReLU())
    layers.append(nn.Flatten())
    with torch.no_grad():
        flat = nn.Sequential(*layers)(torch.zeros(1, c, h, w)).shape[-1]
    if flat != latent_dim:
        layers.append(nn.Linear(flat, latent_dim))
    layers.append(SimNorm(simnorm_dim))
    return nn.Sequential(*layers)


class MultiViewEncoder(nn.Module):
    """MoDem-V2's multi-camera encoder (facebookresearch/modemv2 ``algorithm/tdmpc.py::h``): one conv stack per
    camera view on that view's frame stack, the views' features summed, then SimNorm (or, with ``simnorm=False``,
    the summed features for :class:`WorldModel`'s modality fusion).

    Input pixels hold ``views`` RGB images per frame, frames stacked oldest -> newest (the env contract):
    (N, 3 * views * frame_stack, H, W).
    """

    def __init__(self, in_shape: tuple[int, ...], views: int, num_channels: int, latent_dim: int, simnorm_dim: int,
                 simnorm: bool = True):
        super().__init__()
        c, h, w = in_shape
        if views < 1 or c % (3 * views):
            raise ValueError(f"pixels have {c} channels, expected a multiple of 3 * pixel_views={views}")
        self.views, self.stack = int(views), c // (3 * views)
        per_view = (3 * self.stack, h, w)
        self.encoders = nn.ModuleList(conv_encoder(per_view, num_channels, latent_dim, simnorm_dim)[:-1]
                                      for _ in range(self.views))
        self.simnorm = SimNorm(simnorm_dim) if simnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        frames = x.view(n, self.stack, self.views, 3, h, w)
        feats = sum(enc(frames[:, :, v].reshape(n, 3 * self.stack, h, w)) for v, enc in enumerate(self.encoders))
        return self.simnorm(feats)


__all__ = ["EnsembleMLP", "Mish", "MultiViewEncoder", "NormedLinear", "SimNorm", "conv_encoder", "mish", "mlp",
           "trunc_normal_init"]
