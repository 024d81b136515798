"""A diffusion world model on the same AutoencoderKL latent as :class:`VideoWorldModel` (``model.dynamics=diffusion``).

* **Latent space**: the shared ``LatentVAEModel`` (AutoencoderKL, reconstruction + a small KL term).
* **Dynamics**: a tiny diffusers ``UNet2DModel`` denoises the next latent's change from the last one, with the
  ``context`` past latents concatenated on the channels and the action + normalised proprio as its class embedding
  (added to the timestep embedding). v-prediction on a ``DDPMScheduler`` (cosine schedule) in training;
  ``DDIMScheduler`` with ``denoise_steps`` steps ("trailing" spacing, so the first step starts from pure noise) at
  rollout, with the sampling noise from a ``torch.Generator`` that ``init`` seeds from the model's ``seed`` and the
  start (frames + proprio): the same start and actions give the same rollout, as a seeded simulator does (and as
  gymnasium's determinism check of ``WorldEnv`` asks); the entries of a batch draw different noise. The change is
  divided by ``delta_scale``, a running RMS of the training changes (as Stable Diffusion's latent scaling factor),
  so the unit-variance noise is on the scale of the signal.
* **Proprio**: a deterministic MLP head (last latent pooled, action, proprio -> next proprio's change).
* **Training**: teacher-forced pairs (the true context -> the true next latent) from every step of a sequence;
  the denoiser sees detached latents, so only reconstruction + KL shape the autoencoder (the latent-diffusion
  recipe). Unlike the deterministic model it never trains on its own predictions; ``context_noise`` > 0 noises
  its context latents in training instead (the usual anti-drift augmentation).

Each rollout frame costs ``denoise_steps`` U-Net passes instead of one FiLM-net pass.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from robotrl.agents.video_world_model import LatentVAEModel


class DiffusionWorldModel(LatentVAEModel):
    """AutoencoderKL latents + a conditional latent denoiser; a :class:`robotrl.world.WorldModel`."""

    def __init__(self, image_size: int, action_dim: int, proprio_dim: int, context: int = 2,
                 latent_channels: int = 4, block_channels: tuple[int, ...] = (16, 32, 32), hidden: int = 64,
                 denoise_steps: int = 4, seed: int = 0, context_noise: float = 0.0,
                 device: str | torch.device = "cpu"):
        super().__init__(image_size, action_dim, proprio_dim, context, latent_channels, block_channels, hidden)
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

        self.config.update({"dynamics": "diffusion", "denoise_steps": denoise_steps, "seed": seed,
                            "context_noise": context_noise})
        self.denoise_steps, self.context_noise = denoise_steps, context_noise
        emb = 4 * hidden  # UNet2DModel's timestep-embedding width for block_out_channels[0] == hidden
        self.cond = nn.Sequential(nn.Linear(action_dim + proprio_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        # two resolutions, no attention: a couple of blocks is what a 2-core CPU affords per denoising pass
        self.denoiser = UNet2DModel(sample_size=self.latent_size, in_channels=latent_channels * (context + 1),
                                    out_channels=latent_channels, block_out_channels=(hidden, 2 * hidden),
                                    down_block_types=("DownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                                    add_attention=False, norm_num_groups=min(32, hidden // 2),
                                    class_embed_type="identity")
        self.proprio_head = nn.Sequential(nn.Linear(latent_channels + action_dim + proprio_dim, emb), nn.SiLU(),
                                          nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, proprio_dim))
        self.train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                             prediction_type="v_prediction")
        self.sampler = DDIMScheduler.from_config(self.train_scheduler.config, timestep_spacing="trailing")
        self.register_buffer("delta_scale", torch.ones(()))
        self.register_buffer("scale_updates", torch.zeros((), dtype=torch.long))
        self.seed = seed
        self.device = torch.device(device)
        self.to(self.device)

    # -------------------------------------------------------------------------------------- pieces
    def denoise(self, noisy: torch.Tensor, t: torch.Tensor, window: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The v-prediction for noisy scaled changes [N, C, h, w] at timesteps ``t`` given the context latents
        [N, context, C, h, w] and the conditioning embedding [N, 4 * hidden]."""
        x = torch.cat([noisy, window.flatten(1, 2)], dim=1)
        return self.denoiser(x, t, class_labels=cond).sample

    def corrupt(self, window: torch.Tensor) -> torch.Tensor:
        """In training, gaussian noise on the context latents, of std U(0, ``context_noise``) x the change's RMS per
        item: the errors the model's own rollouts put in its context, so it learns to pull back from them (the
        anti-drift augmentation of GameNGen-style diffusion world models; off at 0)."""
        if not self.training or self.context_noise <= 0:
            return window
        level = torch.rand(len(window), 1, 1, 1, 1, device=window.device) * self.context_noise * self.delta_scale
        return window + level * torch.randn_like(window)

    def next_proprio(self, window: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        pooled = window[:, -1].mean(dim=(2, 3))
        return proprio + self.proprio_head(torch.cat([pooled, action, proprio], dim=-1))

    # -------------------------------------------------------------------------------------- training
    def loss(self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor, kl_weight: float):
        """Same batch layout as :meth:`VideoWorldModel.loss`: frames uint8 [B, T+1, 3, H, W], actions [B, T, A]
        (``actions[:, t]`` leads from frame t to t+1), proprio [B, T+1, P]. Returns (loss, metrics)."""
        T1, c = frames.shape[1], self.context
        recon, kl, z = self.vae_losses(frames)
        z = z.detach()
        p = (proprio - self.p_mean) / self.p_std
        ts = range(c - 1, T1 - 1)  # every step with a full context of true latents
        window = torch.stack([z[:, t - c + 1:t + 1] for t in ts], 1).flatten(0, 1)
        delta = torch.stack([z[:, t + 1] - z[:, t] for t in ts], 1).flatten(0, 1)
        act = torch.stack([actions[:, t] for t in ts], 1).flatten(0, 1)
        cur_p = torch.stack([p[:, t] for t in ts], 1).flatten(0, 1)
        next_p = torch.stack([p[:, t + 1] for t in ts], 1).flatten(0, 1)
        if self.training:  # running RMS of the change (the first batch sets it): the scale of the unit-variance noise
            rate = 1.0 if self.scale_updates == 0 else 0.05
            self.delta_scale.lerp_(delta.pow(2).mean().sqrt().clamp(min=1e-4), rate)
            self.scale_updates += 1
        x0 = delta / self.delta_scale
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (len(x0),), device=x0.device)
        noisy = self.train_scheduler.add_noise(x0, noise, t)
        target = self.train_scheduler.get_velocity(x0, noise, t)
        cond = self.cond(torch.cat([act, cur_p], dim=-1))
        denoise = F.mse_loss(self.denoise(noisy, t, self.corrupt(window), cond), target)
        prop_loss = F.mse_loss(self.next_proprio(window, act, cur_p), next_p)
        loss = recon + kl_weight * kl.mean() + denoise + prop_loss
        return loss, {"recon": recon.item(), "denoise": denoise.item(), "proprio": prop_loss.item()}

    # -------------------------------------------------------------------------------------- WorldModel
    @torch.no_grad()
    def init(self, frames: np.ndarray, proprio: np.ndarray) -> dict[str, Any]:
        state = super().init(frames, proprio)
        digest = hashlib.blake2b(np.asarray(frames).tobytes() + np.asarray(proprio, np.float32).tobytes(),
                                 digest_size=8, key=str(self.seed).encode()).digest()
        # a CPU generator: the same noise on any device
        state["generator"] = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        return state

    @torch.no_grad()
    def sample(self, window: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """The next latent [B, C, h, w]: ``denoise_steps`` DDIM steps (eta 0) from the generator's noise."""
        last = window[:, -1]
        cond = self.cond(torch.cat([action, proprio], dim=-1))
        x = torch.randn(last.shape, generator=generator).to(last.device)
        self.sampler.set_timesteps(self.denoise_steps, device=last.device)
        for t in self.sampler.timesteps:
            v = self.denoise(x, t.expand(len(x)), window, cond)
            x = self.sampler.step(v, t, x).prev_sample
        return last + x * self.delta_scale

    @torch.no_grad()
    def step(self, state: dict[str, Any], action: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        a = torch.as_tensor(np.asarray(action, np.float32), device=self.device)
        window, p = state["window"], state["proprio"]
        return self.emit(state, self.sample(window, a, p, state["generator"]), self.next_proprio(window, a, p))


__all__ = ["DiffusionWorldModel"]
