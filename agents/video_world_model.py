"""An action-conditioned video world model in a learned latent space, rolled out autoregressively.

* **Latent space**: diffusers' ``AutoencoderKL`` (the Stable Diffusion VAE building block, here a few blocks:
  64x64 frames -> 16x16x4 latents), trained with reconstruction + a small KL term.
* **Dynamics**: a residual conv net over the last ``context`` latents, conditioned on the action and the current
  proprioception by FiLM, predicting the next latent's change and the next proprioception. It is deterministic
  regression, not a diffusion denoiser: one forward pass per frame instead of tens of denoising passes, which is
  what makes RL inside the model affordable on CPU (World-Env's EVAC is a video diffusion U-Net).
  ``model.dynamics=diffusion`` swaps in a latent denoiser on the same autoencoder
  (:mod:`robotrl.agents.diffusion_world_model`; ``docs/results.md`` "Which world model" compares the two).
* **Training**: teacher-forced first step, then ``horizon`` autoregressive steps on its own predicted latents, with
  latent, pixel and proprio losses on every step (so it learns to correct its own drift).

It implements :class:`robotrl.world.WorldModel` (``init`` / ``step`` on numpy batches).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from robotrl.world import check_context


class FiLMBlock(nn.Module):
    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm(x)))
        h = h * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class LatentDynamics(nn.Module):
    """(context latents, action, proprio) -> (next latent, next proprio)."""

    def __init__(self, latent_channels: int, context: int, action_dim: int, proprio_dim: int, hidden: int,
                 blocks: int = 3):
        super().__init__()
        cond_dim = 4 * hidden
        self.cond = nn.Sequential(nn.Linear(action_dim + proprio_dim, cond_dim), nn.SiLU(),
                                  nn.Linear(cond_dim, cond_dim))
        self.inp = nn.Conv2d(latent_channels * context, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(hidden, cond_dim) for _ in range(blocks))
        self.out = nn.Conv2d(hidden, latent_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as "nothing changes", the strongest baseline for video
        nn.init.zeros_(self.out.bias)
        self.proprio = nn.Sequential(nn.Linear(hidden + cond_dim, cond_dim), nn.SiLU(),
                                     nn.Linear(cond_dim, proprio_dim))

    def forward(self, latents: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor):
        """latents [B, context, C, h, w] (oldest first) -> next latent [B, C, h, w], next proprio [B, P]."""
        cond = self.cond(torch.cat([action, proprio], dim=-1))
        h = self.inp(latents.flatten(1, 2))
        for block in self.blocks:
            h = block(h, cond)
        next_latent = latents[:, -1] + self.out(F.silu(h))
        next_proprio = proprio + self.proprio(torch.cat([h.mean(dim=(2, 3)), cond], dim=-1))
        return next_latent, next_proprio


class LatentVAEModel(nn.Module):
    """The part every latent world model shares: diffusers' ``AutoencoderKL``, the proprio normaliser, pixel
    conversions and ``init`` (the context frames encoded to latents). Subclasses add the dynamics and ``step``."""

    def __init__(self, image_size: int, action_dim: int, proprio_dim: int, context: int = 2,
                 latent_channels: int = 4, block_channels: tuple[int, ...] = (16, 32, 32), hidden: int = 64):
        super().__init__()
        from diffusers import AutoencoderKL

        self.image_size, self.action_dim, self.proprio_dim, self.context = image_size, action_dim, proprio_dim, context
        self.config: dict[str, Any] = {"image_size": image_size, "action_dim": action_dim, "proprio_dim": proprio_dim,
                                       "context": context, "latent_channels": latent_channels,
                                       "block_channels": list(block_channels), "hidden": hidden}
        n = len(block_channels)
        self.latent_size = image_size // 2 ** (n - 1)  # AutoencoderKL downsamples once per block but the last
        self.vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                                 up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_channels),
                                 layers_per_block=1, latent_channels=latent_channels,
                                 norm_num_groups=min(32, min(block_channels)), sample_size=image_size)
        # proprio is normalised with statistics of the training data (set by fit_normaliser)
        self.register_buffer("p_mean", torch.zeros(proprio_dim))
        self.register_buffer("p_std", torch.ones(proprio_dim))

    # -------------------------------------------------------------------------------------- pieces
    def fit_normaliser(self, proprio: np.ndarray) -> None:
        self.p_mean.copy_(torch.as_tensor(proprio.mean(0)))
        self.p_std.copy_(torch.as_tensor(proprio.std(0) + 1e-3))

    @staticmethod
    def to_unit(frames: torch.Tensor) -> torch.Tensor:
        return frames.float() / 127.5 - 1.0

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    def encode(self, frames: torch.Tensor, sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [N, 3, H, W] -> (latent [N, C, h, w], KL per item)."""
        dist = self.vae.encode(self.to_unit(frames)).latent_dist
        return (dist.sample() if sample else dist.mean), dist.kl()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latent [N, C, h, w] -> frames in [-1, 1]."""
        return self.vae.decode(latents).sample

    def vae_losses(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 [B, T, 3, H, W] -> (reconstruction MSE of a posterior sample, KL per frame, mean latents
        [B, T, C, h, w])."""
        flat = frames.flatten(0, 1)
        dist = self.vae.encode(self.to_unit(flat)).latent_dist
        recon = F.mse_loss(self.decode(dist.sample()), self.to_unit(flat))
        return recon, dist.kl(), dist.mean.view(*frames.shape[:2], *dist.mean.shape[1:])

    @torch.no_grad()
    def init(self, frames: np.ndarray, proprio: np.ndarray) -> dict[str, Any]:
        frames, proprio = check_context(frames, proprio, self.image_size, self.context, self.proprio_dim, "world-model")
        x = torch.as_tensor(frames, device=self.p_mean.device)
        z, _ = self.encode(x.flatten(0, 1))
        p = (torch.as_tensor(proprio, device=self.p_mean.device) - self.p_mean) / self.p_std
        return {"window": z.view(*x.shape[:2], *z.shape[1:]), "proprio": p}

    def emit(self, state: dict[str, Any], next_latent: torch.Tensor,
             next_proprio: torch.Tensor) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """The ``step`` result: the window slid by one latent, the decoded frame and the proprio in world units."""
        window = torch.cat([state["window"][:, 1:], next_latent[:, None]], dim=1)
        frame = self.to_uint8(self.decode(next_latent)).cpu().numpy()
        proprio = (next_proprio * self.p_std + self.p_mean).cpu().numpy().astype(np.float32)
        return {**state, "window": window, "proprio": next_proprio}, frame, proprio


class VideoWorldModel(LatentVAEModel):
    """AutoencoderKL latents + FiLM latent dynamics (deterministic, ``model.dynamics=latent``); a
    :class:`robotrl.world.WorldModel`."""

    def __init__(self, image_size: int, action_dim: int, proprio_dim: int, context: int = 2,
                 latent_channels: int = 4, block_channels: tuple[int, ...] = (16, 32, 32), hidden: int = 64,
                 device: str | torch.device = "cpu"):
        super().__init__(image_size, action_dim, proprio_dim, context, latent_channels, block_channels, hidden)
        self.dynamics = LatentDynamics(latent_channels, context, action_dim, proprio_dim, hidden)
        self.device = torch.device(device)
        self.to(self.device)

    # -------------------------------------------------------------------------------------- training
    def loss(self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor, kl_weight: float):
        """frames uint8 [B, T+1, 3, H, W] (the first ``context`` are history), actions [B, T, A] aligned so that
        actions[:, t] leads from frame t to t+1, proprio [B, T+1, P]. Returns (loss, metrics)."""
        T1 = frames.shape[1]
        c = self.context
        recon, kl, z = self.vae_losses(frames)
        p = (proprio - self.p_mean) / self.p_std
        window, cur_p = z[:, :c], p[:, c - 1]
        lat_loss = pix_loss = prop_loss = 0.0
        steps = T1 - c
        preds = []
        for t in range(c - 1, T1 - 1):
            nz, cur_p = self.dynamics(window, actions[:, t], cur_p)
            lat_loss = lat_loss + F.mse_loss(nz, z[:, t + 1].detach())
            prop_loss = prop_loss + F.mse_loss(cur_p, p[:, t + 1])
            preds.append(nz)
            window = torch.cat([window[:, 1:], nz[:, None]], dim=1)
        pix = self.decode(torch.stack(preds, 1).flatten(0, 1))
        pix_loss = F.mse_loss(pix, self.to_unit(frames[:, c:].flatten(0, 1)))
        lat_loss, prop_loss = lat_loss / steps, prop_loss / steps
        loss = recon + kl_weight * kl.mean() + lat_loss + pix_loss + prop_loss
        return loss, {"recon": recon.item(), "latent": lat_loss.item(), "pixel": pix_loss.item(),
                      "proprio": prop_loss.item()}

    # -------------------------------------------------------------------------------------- WorldModel
    @torch.no_grad()
    def step(self, state: dict[str, Any], action: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        a = torch.as_tensor(np.asarray(action, np.float32), device=self.device)
        nz, p = self.dynamics(state["window"], a, state["proprio"])
        return self.emit(state, nz, p)


__all__ = ["LatentVAEModel", "VideoWorldModel"]
