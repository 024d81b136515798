"""Image augmentation shared by agents and reward models: DrQ-v2's random shift.

It lives in the core so that a reward model (LfVoid's discriminator) and an agent (DrQ-v2, TD-MPC2) use the same
code without a plug-in importing another plug-in's internals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_shifts(n: int, pad: int, device: torch.device | str, generator: torch.Generator | None = None):
    """Integer shifts (n, 2) in [0, 2*pad], column 0 along width (x), column 1 along height (y)."""
    return torch.randint(0, 2 * pad + 1, (n, 2), device=device, generator=generator)


def random_shift(x: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """Random-shift augmentation: replicate-pad by ``pad``, then each image cropped back to (H, W) at its shift.

    Equivalent to DrQ-v2's bilinear ``grid_sample`` version (whose sample points land exactly on pixel centres) but
    works on uint8 too. ``shifts`` is (N, 2) as from :func:`sample_shifts`. The result is channels-last (what the
    conv stacks run on). On a GPU it is one integer gather; on a CPU one slice copy per image, which
    ``bench/random_shift.py`` measured faster than the gather (whose generic index kernel moves one element at a
    time).
    """
    if x.device.type == "cpu":
        return _shift_by_copies(x, pad, shifts)
    return _shift_by_gather(x, pad, shifts)


def _shift_by_gather(x: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """One integer gather: the replicate padding is folded into the index by clamping (no padded copy)."""
    n, _, h, w = x.shape
    rows = (shifts[:, 1:2] - pad + torch.arange(h, device=x.device)).clamp_(0, h - 1)  # (N, H)
    cols = (shifts[:, 0:1] - pad + torch.arange(w, device=x.device)).clamp_(0, w - 1)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing with the channel slice in the middle puts channels last: (N, H, W, C) -> permute.
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def _shift_by_copies(x: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """A replicate-padded copy, then one crop per image copied into a channels-last result."""
    _, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    out = torch.empty_like(x, memory_format=torch.channels_last)
    for i, (dx, dy) in enumerate(shifts.tolist()):
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def random_shift_grid_sample(x: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """The reference formulation (replicate pad, bilinear grid_sample at shifted pixel centres), for tests."""
    n, _, h, w = x.shape
    assert h == w, "the grid_sample formulation assumes square images"
    x = F.pad(x.float(), (pad,) * 4, mode="replicate")
    size = h + 2 * pad
    eps = 1.0 / size
    line = torch.linspace(-1.0 + eps, 1.0 - eps, size, device=x.device)[:h]
    grid = torch.stack(torch.meshgrid(line, line, indexing="xy"), dim=-1)  # (H, W, 2), [..., 0] = x
    grid = grid[None] + shifts[:, None, None, :].to(x.dtype) * (2.0 / size)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
