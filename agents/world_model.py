"""TD-MPC2's implicit world model (Hansen et al., 2024; nicklashansen/tdmpc2 ``common/world_model.py``,
``common/layers.py``, ``common/init.py``).

Five verbs on a SimNorm latent ``z``: ``encode(obs)``, ``next(z, a)`` (latent dynamics), ``reward(z, a)`` (two-hot
logits), ``pi(z)`` (squashed Gaussian policy prior) and ``Q(z, a)`` (an ensemble of two-hot value heads with
dropout, plus its Polyak target); ``termination(z)`` exists only for episodic tasks.

Same layers, sizes and initialisation as the reference; the implementation differs where it is cheaper:
  * the Q ensemble is one module holding stacked weights (:class:`EnsembleMLP`): the first layer of all members
    is one GEMM on the shared input, the later layers one batched matmul, instead of ``vmap`` over a
    tensordict of parameters; when only two members are read (``min``/``avg`` of two random members: TD
    targets, the policy loss, planning) only those two are computed -- the reference computes all members and
    then discards the rest;
  * the pixel encoder is the reference's conv stack (7/5/3/3 kernels, strides 2/2/2/1, ReLU, 32 channels) for
    any image size: a layer whose input is smaller than its kernel is zero-padded (32x32 test images), and when
    the flattened conv output is not ``latent_dim`` (the reference asserts 64x64 input, where it is 512) a
    linear projection to ``latent_dim`` is added before SimNorm; random-shift augmentation (pad 3) is applied by
    the agent in updates only (the reference also shifts the observation it plans from);
  * all sampling takes an explicit ``torch.Generator`` so a resumed run continues bit-identically.

The layers are in :mod:`robotrl.agents.world_model_layers`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import tdmpc2_math as tm
from .world_model_layers import (
    EnsembleMLP,
    Mish,
    MultiViewEncoder,
    NormedLinear,
    SimNorm,
    compiled_ln_mish,
    conv_encoder,
    mish,
    mlp,
    trunc_normal_init,
)

# common/__init__.py::MODEL_SIZE (parameters in millions for a 6-d action, 39-d state task, single task)
MODEL_SIZE: dict[int, dict[str, int]] = {
    1: {"enc_dim": 256, "mlp_dim": 384, "latent_dim": 128, "num_enc_layers": 2, "num_q": 2},
    5: {"enc_dim": 256, "mlp_dim": 512, "latent_dim": 512, "num_enc_layers": 2},
    19: {"enc_dim": 1024, "mlp_dim": 1024, "latent_dim": 768, "num_enc_layers": 3},
    48: {"enc_dim": 1792, "mlp_dim": 1792, "latent_dim": 768, "num_enc_layers": 4},
    317: {"enc_dim": 4096, "mlp_dim": 4096, "latent_dim": 1376, "num_enc_layers": 5, "num_q": 8},
}


class WorldModel(nn.Module):
    """The TD-MPC2 world model for one task; see the module docstring.

    ``obs_shapes`` maps "pixels" (C, H, W) uint8 and/or "state" (S,) to shapes. With one modality the encoder is
    TD-MPC2's. With both, it is MoDem's and MoDem-V2's fusion (``TOLD.h``): the conv features (summed over views)
    plus the state MLP's features, through a fuse MLP (latent -> enc_dim -> latent) and then SimNorm; in
    TD-MPC2's layers (LayerNorm + Mish) where MoDem's used ELU. ``pixel_views`` > 1 encodes each camera view
    with its own conv stack (:class:`MultiViewEncoder`); ``None`` or 1 runs one conv stack over all channels.
    """

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], action_dim: int, latent_dim: int = 512,
                 mlp_dim: int = 512, enc_dim: int = 256, num_enc_layers: int = 2, num_channels: int = 32,
                 num_q: int = 5, dropout: float = 0.01, simnorm_dim: int = 8, num_bins: int = 101,
                 vmin: float = -10.0, vmax: float = 10.0, log_std_min: float = -10.0, log_std_max: float = 2.0,
                 episodic: bool = False, num_pi: int = 1, pixel_views: int | None = None):
        super().__init__()
        if latent_dim % simnorm_dim:
            raise ValueError(f"latent_dim={latent_dim} must be a multiple of simnorm_dim={simnorm_dim}")
        if num_pi < 1:
            raise ValueError(f"num_pi={num_pi}, expected >= 1 policy priors")
        self.action_dim, self.latent_dim, self.num_q = int(action_dim), int(latent_dim), int(num_q)
        self.num_pi = int(num_pi)
        self.two_hot = tm.TwoHot(num_bins, vmin, vmax)
        self.log_std_min, self.log_std_dif = float(log_std_min), float(log_std_max) - float(log_std_min)
        out_bins = max(num_bins, 1)
        za = latent_dim + action_dim
        self._encoder = nn.ModuleDict()
        fused = len(obs_shapes) > 1  # each encoder's features go unnormalised into the fuse MLP
        for key, shape in sorted(obs_shapes.items()):
            if key == "state":
                self._encoder[key] = mlp(shape[0], max(num_enc_layers - 1, 1) * [enc_dim], latent_dim,
                                         act=None if fused else SimNorm(simnorm_dim))
            elif key == "pixels" and (pixel_views or 1) > 1:
                self._encoder[key] = MultiViewEncoder(tuple(shape), int(pixel_views), num_channels, latent_dim,
                                                      simnorm_dim, simnorm=not fused)
            elif key == "pixels":
                stack = conv_encoder(tuple(shape), num_channels, latent_dim, simnorm_dim)
                self._encoder[key] = stack[:-1] if fused else stack
            else:
                raise ValueError(f"no encoder for observation key {key!r} (expected 'pixels' and/or 'state')")
        self._fuse = mlp(latent_dim, [enc_dim], latent_dim, act=SimNorm(simnorm_dim)) if fused else None
        self._dynamics = mlp(za, 2 * [mlp_dim], latent_dim, act=SimNorm(simnorm_dim))
        self._reward = mlp(za, 2 * [mlp_dim], out_bins)
        self._termination = mlp(latent_dim, 2 * [mlp_dim], 1) if episodic else None
        self._pi = mlp(latent_dim, 2 * [mlp_dim], 2 * action_dim)
        # MoDem-V2's actor ensemble: policy priors 1..num_pi-1 (member 0 is ``_pi``, so num_pi=1 is TD-MPC2 exactly)
        self._pi_ensemble = nn.ModuleList(mlp(latent_dim, 2 * [mlp_dim], 2 * action_dim) for _ in range(num_pi - 1))
        self._Qs = EnsembleMLP(num_q, za, 2 * [mlp_dim], out_bins, dropout=dropout)
        self.apply(trunc_normal_init)
        with torch.no_grad():  # zero-init the reward head and every Q head's last layer (reference __init__)
            self._reward[-1].weight.zero_()
            self._Qs.weight_2.zero_()
        self._target_Qs = EnsembleMLP(num_q, za, 2 * [mlp_dim], out_bins, dropout=dropout)
        self._target_Qs.load_state_dict(self._Qs.state_dict())
        self._target_Qs.requires_grad_(False)

    def train(self, mode: bool = True) -> WorldModel:
        """The target Qs always stay in eval mode (no dropout), as in the reference."""
        super().train(mode)
        self._target_Qs.train(False)
        return self

    def compile_kernels(self) -> None:
        """Run every LayerNorm + Mish of the model through one ``torch.compile``-d kernel (:func:`_ln_mish`): same
        function, fewer passes over memory; the first call of each shape compiles (tens of seconds on CPU)."""
        for module in self.modules():
            if isinstance(module, EnsembleMLP):
                module.fused = compiled_ln_mish("ensemble")
            elif isinstance(module, NormedLinear) and isinstance(module.act, Mish):
                module.fused = compiled_ln_mish("linear")

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Everything ``encode`` learns: the per-modality encoders and, with two modalities, the fuse MLP."""
        fuse = [] if self._fuse is None else list(self._fuse.parameters())
        return [*self._encoder.parameters(), *fuse]

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def soft_update_target_Q(self, tau: float) -> None:
        torch._foreach_lerp_(list(self._target_Qs.parameters()), list(self._Qs.parameters()), tau)

    # ------------------------------------------------------------------ the five verbs
    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """obs["pixels"] uint8 (..., C, H, W) and/or obs["state"] (..., S) -> latent (..., latent_dim)."""
        feats = []
        for key, enc in self._encoder.items():
            x = obs[key]
            lead = x.shape[: x.ndim - (3 if key == "pixels" else 1)]
            if key == "pixels":
                x = x.reshape(-1, *x.shape[-3:]).float().div_(255.0).sub_(0.5)
            else:
                x = x.reshape(-1, x.shape[-1]).float()
            feats.append(enc(x))
        z = feats[0] if self._fuse is None else self._fuse(sum(feats))
        return z.view(*lead, self.latent_dim)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self._dynamics(torch.cat([z, a], dim=-1))

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Two-hot logits (..., num_bins) of the one-step reward."""
        return self._reward(torch.cat([z, a], dim=-1))

    def termination(self, z: torch.Tensor, unnormalized: bool = False) -> torch.Tensor:
        assert self._termination is not None, "termination head exists only with episodic=True"
        logits = self._termination(z)
        return logits if unnormalized else torch.sigmoid(logits)

    def pi_nets(self) -> list[nn.Module]:
        """The policy prior networks, member 0 first."""
        return [self._pi, *self._pi_ensemble]

    def pi(self, z: torch.Tensor, generator: torch.Generator | None = None,
           member: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample a squashed-Gaussian action from policy prior ``member``; info holds mean (tanh), log_std, entropy,
        scaled_entropy (the reference's single-task definitions, common/world_model.py::pi)."""
        net = self._pi if member == 0 else self._pi_ensemble[member - 1]
        mean, log_std = net(z).chunk(2, dim=-1)
        log_std = tm.scaled_log_std(log_std, self.log_std_min, self.log_std_dif)
        eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        log_prob = tm.gaussian_logprob(eps, log_std)
        scaled_log_prob = log_prob * eps.shape[-1]
        action = mean + eps * log_std.exp()
        mean, action, log_prob = tm.squash(mean, action, log_prob)
        entropy_scale = scaled_log_prob / (log_prob + 1e-8)
        info = {"mean": mean, "log_std": log_std, "entropy": -log_prob, "scaled_entropy": -log_prob * entropy_scale}
        return action, info

    def Q(self, z: torch.Tensor, a: torch.Tensor, return_type: str = "min", target: bool = False,
          detach: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``all``: (num_q, ..., num_bins) logits; ``min``/``avg``: (..., 1) value of two random members.

        ``detach`` reads the online parameters without recording their gradient (for the policy loss).
        """
        if return_type not in ("min", "avg", "all"):
            raise ValueError(f"return_type={return_type!r}, expected min, avg or all")
        za = torch.cat([z, a], dim=-1)
        net = self._target_Qs if target else self._Qs
        if return_type == "all":
            return net(za)
        members = torch.randperm(self.num_q, device=z.device, generator=generator)[:2]
        if detach:
            with _frozen(net):
                out = net(za, members)
        else:
            out = net(za, members)
        q = self.two_hot.decode(out.float())
        return q.min(0).values if return_type == "min" else q.sum(0) / 2


class _frozen:
    """Context: parameters of ``module`` do not require grad (gradients still flow to the inputs)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.module.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        self.module.requires_grad_(True)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def model_dims(model_size: int | None, **overrides: Any) -> dict[str, Any]:
    """Architecture keys for a reference MODEL_SIZE (1, 5, 19, 48, 317) with explicit overrides on top."""
    dims: dict[str, Any] = {}
    if model_size is not None:
        if int(model_size) not in MODEL_SIZE:
            raise ValueError(f"model_size={model_size}, expected one of {sorted(MODEL_SIZE)}")
        dims.update(MODEL_SIZE[int(model_size)])
    dims.update({k: v for k, v in overrides.items() if v is not None})
    return dims


__all__ = ["MODEL_SIZE", "EnsembleMLP", "MultiViewEncoder", "NormedLinear", "SimNorm", "WorldModel", "conv_encoder",
           "mish", "mlp", "model_dims"]
