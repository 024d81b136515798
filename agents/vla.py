"""A small vision-language-action policy: open_clip image features + the instruction's text embedding +
proprioception -> a chunk of ``chunk`` actions, as OpenVLA-OFT does it (continuous actions, action chunking, L1
regression), at toy scale.

The backbone (an open_clip model: ``visual`` is fine-tuned, the text tower is only used to embed instructions once)
is handed in by the workflow that loads it, so this plug-in never reaches into the reward layer's CLIP loader.
For RL the deterministic head is made stochastic as in World-Env: a Laplace distribution whose location is the head's
output and whose log-scale is a trained parameter per chunk entry.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Laplace

from robotrl.errors import ObservationError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> the normalised [B, 3, size, size] float input of an open_clip vision tower."""
    x = frames.float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


class VLAPolicy(nn.Module):
    """image uint8 [B, 3, H, W] + instruction embedding [B, D] + proprio [B, P] -> action chunk [B, chunk, A]."""

    def __init__(self, visual: nn.Module, vision_size: int, feat_dim: int, text_dim: int, proprio_dim: int,
                 action_dim: int, chunk: int = 4, hidden: int = 256, init_log_scale: float = -1.6):
        super().__init__()
        self.visual, self.vision_size = visual, vision_size
        self.chunk, self.action_dim, self.proprio_dim = chunk, action_dim, proprio_dim
        self.head = nn.Sequential(nn.Linear(feat_dim + text_dim + proprio_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                  nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, chunk * action_dim))
        self.log_scale = nn.Parameter(torch.full((chunk, action_dim), float(init_log_scale)))
        self.register_buffer("p_mean", torch.zeros(proprio_dim))
        self.register_buffer("p_std", torch.ones(proprio_dim))

    def fit_normaliser(self, proprio: np.ndarray) -> None:
        self.p_mean.copy_(torch.as_tensor(proprio.mean(0)))
        self.p_std.copy_(torch.as_tensor(proprio.std(0) + 1e-3))

    def forward(self, frames: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """The chunk's mean actions in [-1, 1]."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ObservationError(f"VLA frames have dtype {frames.dtype} shape {tuple(frames.shape)}, expected "
                                   f"uint8 [B, 3, H, W]")
        feat = self.visual(clip_pixels(frames, self.vision_size))
        p = (proprio - self.p_mean) / self.p_std
        out = self.head(torch.cat([feat, text, p], dim=-1))
        return torch.tanh(out).view(-1, self.chunk, self.action_dim)

    def dist(self, frames: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor) -> Laplace:
        return Laplace(self(frames, text, proprio), self.log_scale.exp().expand(frames.shape[0], -1, -1))

    def bc_loss(self, frames: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor, chunks: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """L1 regression to the demo's next ``chunk`` actions (``mask`` drops steps past the episode end)."""
        err = (self(frames, text, proprio) - chunks).abs().mean(-1)
        return (err * mask).sum() / mask.sum().clamp(min=1)


__all__ = ["VLAPolicy", "clip_pixels"]
