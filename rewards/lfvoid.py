"""LfVoid (Gao et al. 2023, "Can Pre-Trained Text-to-Image Models Generate Visual Goals for RL?"): a reward from
goal images that a pre-trained text-to-image editing model makes out of the env's own initial observations.

Two parts, as in the paper:

1. **Goal generation** (:mod:`robotrl.rewards.lfvoid_goals`, run by ``robotrl goals generate`` from
   :mod:`robotrl.workflows.goals`): render N real initial observations of the env, edit each with a text
   instruction through a diffusers image-editing pipeline (default InstructPix2Pix, ``timbrooks/instruct-pix2pix``;
   the paper edits with prompt-to-prompt / DreamBooth, which this repo does not ship), and save the *goal set*: one
   npz (``goals`` uint8 [N, H, W, 3], the ``sources`` they were edited from, ``meta`` JSON with the instruction,
   model id and settings) plus PNGs to look at.
2. **Example-based RL with an ensembled goal discriminator** (:class:`LfVoidReward`): K small CNNs, each trained online
   with binary cross-entropy to tell the goal images (positives) from the frames the agent itself produces (negatives,
   kept in a bounded FIFO buffer of the frames the model was asked to score), with DrQ-style random-shift augmentation.
   Each member gets its own initialisation, its own bootstrap resample of the goal set and its own negatives, so the
   members disagree away from the data and their average is smoother than any one of them (the paper's reason for
   the ensemble: one discriminator overfits a handful of goal images and gives a peaky, exploitable reward).
   The reward is the ensemble mean of the members' goal probabilities ``mean_k sigmoid(D_k(x))`` in [0, 1]
   (``reward_type="prob"``); ``reward_type="logprob"`` gives ``mean_k log sigmoid(D_k(x))`` (the GAIL/VICE-style
   log D reward). The paper's RL code is not public (github.com/gaojl19/LfVoid holds only the editing code), so the
   probability form, K and the training schedule here are our reading of the paper's text, not a checked port.

**Offline goal sources (NOT the paper's method).** ``source=demos`` takes the final successful frames of Meta-World
scripted-expert demos (``robotrl demos``) as goals, and ``source=images`` takes a user-supplied folder or npz of
images. They give the discriminator reward real goal images without any diffusion weights: an upper bound / ablation
of LfVoid (the goals are true goal observations rather than generated ones), useful to test the RL side here.

This module holds the goal set file format and the discriminator reward; the goal sources (diffusion editing,
demos, image folders) are in :mod:`robotrl.rewards.lfvoid_goals`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from robotrl.rewards.base import check_frames
from robotrl.rewards.capabilities import RewardCapabilities

from robotrl.atomic import atomic_write
from robotrl.augment import random_shift, sample_shifts
from robotrl.config import resolve_device
from robotrl.errors import CheckpointError, ConfigError
from robotrl.params import given, require
from robotrl.readers import read_npz

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
GOALS_FILE = "goals.npz"
GOAL_KEYS = ("goals", "sources", "meta")
REWARD_TYPES = ("prob", "logprob")


# ------------------------------------------------------------------------------------------------ goal set file
@dataclass(frozen=True)
class GoalSet:
    """Goal images uint8 [N, H, W, 3], the frames they came from uint8 [M, H', W', 3] (M may be 0), metadata."""

    goals: np.ndarray
    sources: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _check_images(images: Any, what: str, allow_empty: bool = False) -> np.ndarray:
    """uint8 [N, H, W, 3] or a one-line ConfigError naming ``what`` and the shape/dtype found."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ConfigError(f"{what} has dtype {arr.dtype}, expected uint8 RGB images [N, H, W, 3]")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ConfigError(f"{what} has shape {arr.shape}, expected [N, H, W, 3] (RGB, channels last)")
    if arr.shape[1] < 1 or arr.shape[2] < 1 or (arr.shape[0] < 1 and not allow_empty):
        raise ConfigError(f"{what} has shape {arr.shape}, expected at least one non-empty image")
    return arr


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_write(path) as f:
        Image.fromarray(image).save(f, format="PNG")


def save_goal_set(out_dir: str | Path, goals: np.ndarray, sources: np.ndarray, meta: Mapping[str, Any]) -> Path:
    """Write ``out_dir/goals.npz`` (goals, sources, meta JSON) and ``out_dir/png/`` views; return the npz path.

    PNGs are written first and the npz last, each atomically, so a crash never leaves a goals.npz that does not load.
    """
    goals = _check_images(goals, "goal images")
    sources = _check_images(sources, "source frames", allow_empty=True)
    out = Path(out_dir)
    (out / "png").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(goals):
        _write_png(out / "png" / f"goal_{i:03d}.png", image)
    for i, image in enumerate(sources):
        _write_png(out / "png" / f"source_{i:03d}.png", image)
    meta = {"format_version": FORMAT_VERSION, **dict(meta), "num_goals": int(len(goals))}
    path = out / GOALS_FILE
    with atomic_write(path) as f:
        np.savez_compressed(f, goals=goals, sources=sources, meta=np.array(json.dumps(meta)))
    return path


def _goal_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / GOALS_FILE
    if not p.is_file():
        raise ConfigError(f"goal set {str(path)!r} not found (expected a goals.npz written by `robotrl goals "
                          f"generate`, or its directory)")
    return p


def load_goal_set(path: str | Path) -> GoalSet:
    """Load and validate a goal set (the npz or its directory); any problem is a one-line ConfigError."""
    p = _goal_path(path)
    arrays = read_npz(p, ConfigError, "goal set")
    missing = [k for k in GOAL_KEYS if k not in arrays]
    if missing:
        raise ConfigError(f"goal set {p}: missing key(s) {missing}, expected keys {list(GOAL_KEYS)}")
    goals = _check_images(arrays["goals"], f"goal set {p}: 'goals'")
    sources = _check_images(arrays["sources"], f"goal set {p}: 'sources'", allow_empty=True)
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as e:
        raise ConfigError(f"goal set {p}: 'meta' is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ConfigError(f"goal set {p}: 'meta' is a JSON {type(meta).__name__}, expected an object")
    return GoalSet(goals=goals, sources=sources, meta=meta)


# ------------------------------------------------------------------------------------------------ discriminator
def _member(image_size: int, channels: int) -> nn.Sequential:
    """One discriminator: 3 stride-2 3x3 convs (ReLU) and a linear head to one logit (a goal-vs-agent classifier)."""
    side = image_size
    for _ in range(3):
        side = (side + 1) // 2
    c = int(channels)
    return nn.Sequential(
        nn.Conv2d(3, c, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(c * side * side, 1),
    )


class EnsembleDiscriminator(nn.Module):
    """K independent small CNNs (no shared weights, each its own random init), run channels-last.

    A loop over members measured 3.5x faster on one CPU thread than one grouped convolution over all of them.
    ``forward`` takes member-wise batches float [K, B, 3, S, S]; ``forward_shared`` scores the same frames
    [B, 3, S, S] with every member. Both return logits [K, B].
    """

    def __init__(self, ensemble_size: int, image_size: int, channels: int = 32):
        super().__init__()
        self.members = nn.ModuleList(_member(image_size, channels) for _ in range(int(ensemble_size)))
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x[k].contiguous(memory_format=torch.channels_last))[:, 0]
                            for k, m in enumerate(self.members)])

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.stack([m(x)[:, 0] for m in self.members])


class LfVoidReward:
    """Ensembled goal-discriminator reward (LfVoid), trained online on the frames it scores (see module docstring).

    Every call stores the frames (resized to ``image_size``) in a FIFO buffer of ``buffer_size`` negatives; every
    ``update_every`` calls, once the buffer holds ``min_negatives`` frames, it takes ``updates_per_call`` Adam steps
    on BCE(goal=1, agent frame=0) with ``train_batch_size`` images per member (half goals, half negatives), random
    shifts of ``shift_pad`` pixels, each member on its own bootstrap resample of the goals and its own negatives.
    Then it scores the frames with the updated ensemble: ``mean_k sigmoid(D_k)`` (``reward_type="prob"``, in [0, 1])
    or ``mean_k log sigmoid(D_k)`` (``"logprob"``, <= 0). ``online = False`` (or :meth:`score`) scores without
    storing or training, e.g. for evaluation or replay relabelling.

    Everything random (init, bootstrap, batches, shifts) comes from ``seed``, so the same seed and the same calls give
    the same rewards; :meth:`state_dict` / :meth:`load_state_dict` checkpoint the networks, optimiser, buffer and RNG.

    Args:
        goals: a goal set (``goals.npz`` or its directory) from ``robotrl goals generate``.
        ensemble_size: K discriminators. bootstrap: resample the goal set with replacement per member.
        image_size: frames and goals are resized to this square size (64: fast on CPU). channels: conv width.
        lr: Adam learning rate. train_batch_size: images per member per step. batch_size: frames per scoring forward
            pass (the wrapper's relabelling chunk). success_threshold: reward at/above which ``predict_success``.
        device: ``auto`` | ``cpu`` | ``cuda[:N]``.
    """

    capabilities = RewardCapabilities(trainable=True, predicts_success=True)  # success: with success_threshold

    def __init__(self, goals: str | None = None, ensemble_size: int = 5, image_size: int = 64, channels: int = 32,
                 lr: float = 3e-4, train_batch_size: int = 64, updates_per_call: int = 1, update_every: int = 2,
                 min_negatives: int = 64, buffer_size: int = 5000, shift_pad: int = 4, bootstrap: bool = True,
                 reward_type: str = "prob", success_threshold: float | None = None, batch_size: int = 64,
                 seed: int = 0, device: str = "cpu"):
        require("reward", positive_int={"ensemble_size": ensemble_size, "image_size": image_size, "channels": channels,
                                        "train_batch_size": train_batch_size, "update_every": update_every,
                                        "min_negatives": min_negatives, "buffer_size": buffer_size,
                                        "batch_size": batch_size},
                nonneg_int={"updates_per_call": updates_per_call, "shift_pad": shift_pad, "seed": seed},
                positive={"lr": lr}, finite=given(success_threshold=success_threshold))
        self._check_relations(train_batch_size, min_negatives, buffer_size, reward_type)
        if not goals:
            raise ConfigError("reward.goals is null, expected a goal set: make one with `robotrl goals generate "
                              "env=<suite>/<task> instruction=\"...\" out=DIR` and pass reward.goals=DIR")
        self.goal_path = str(goals)
        goal_set = load_goal_set(goals)
        self.goal_meta = goal_set.meta
        self.k, self.image_size, self.reward_type = int(ensemble_size), int(image_size), reward_type
        self.train_batch_size, self.updates_per_call = int(train_batch_size), int(updates_per_call)
        self.update_every, self.min_negatives = int(update_every), int(min_negatives)
        self.buffer_size, self.shift_pad, self.batch_size = int(buffer_size), int(shift_pad), int(batch_size)
        self.success_threshold = None if success_threshold is None else float(success_threshold)
        self.device = resolve_device(str(device), key="reward.device")
        self.online = True
        self.config = {"ensemble_size": self.k, "image_size": self.image_size, "channels": int(channels),
                       "bootstrap": bool(bootstrap), "buffer_size": self.buffer_size, "seed": int(seed)}
        self.goals = self._prepare(goal_set.goals)  # uint8 [N, 3, S, S] on device
        self.goals_sha1 = hashlib.sha1(self.goals.cpu().numpy().tobytes()).hexdigest()
        with torch.random.fork_rng(devices=[]):  # the init depends on ``seed`` only, not on the global RNG
            torch.manual_seed(int(seed))
            self.net = EnsembleDiscriminator(self.k, self.image_size, int(channels)).to(self.device)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=float(lr))
        n = len(self.goals)
        self.bootstrap_idx = (torch.randint(0, n, (self.k, n), generator=self.generator) if bootstrap
                              else torch.arange(n).expand(self.k, n).clone())
        self.buffer = torch.zeros((self.buffer_size, 3, self.image_size, self.image_size), dtype=torch.uint8)
        self.buffer_pos = self.buffer_count = self.calls = self.updates = 0
        self.last_loss = float("nan")

    @staticmethod
    def _check_relations(train_batch_size: int, min_negatives: int, buffer_size: int, reward_type: str) -> None:
        if train_batch_size < 2:
            raise ConfigError(f"reward.train_batch_size={train_batch_size!r}, expected >= 2 (goals and negatives)")
        if int(min_negatives) > int(buffer_size):
            raise ConfigError(f"reward.min_negatives={min_negatives} > buffer_size={buffer_size}, expected <= "
                              f"(training would never start)")
        if reward_type not in REWARD_TYPES:
            raise ConfigError(f"reward.reward_type={reward_type!r} is not one of {', '.join(REWARD_TYPES)}")

    # ---------------------------------------------------------------- preprocessing
    def _prepare(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> uint8 [B, 3, S, S] on the model's device (antialiased bilinear resize)."""
        if isinstance(frames, np.ndarray):  # renderers may return flipped views (negative strides)
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        x = frames.to(self.device).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x.float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        return x.contiguous()

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0 - 0.5

    # ---------------------------------------------------------------- training
    def _store(self, x: torch.Tensor) -> None:
        x = x.cpu()[-self.buffer_size:]
        n = len(x)
        idx = (self.buffer_pos + torch.arange(n)) % self.buffer_size
        self.buffer[idx] = x
        self.buffer_pos = (self.buffer_pos + n) % self.buffer_size
        self.buffer_count = min(self.buffer_count + n, self.buffer_size)

    def _sample_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Member-wise batches uint8 [K, b, 3, S, S] (goals first, then negatives) and labels float [K, b]."""
        n_pos = self.train_batch_size // 2
        n_neg = self.train_batch_size - n_pos
        g = self.generator
        pos = torch.gather(self.bootstrap_idx, 1, torch.randint(0, self.bootstrap_idx.shape[1], (self.k, n_pos),
                                                                generator=g))
        neg = torch.randint(0, self.buffer_count, (self.k, n_neg), generator=g)
        x = torch.cat([self.goals[pos.to(self.device)], self.buffer[neg].to(self.device)], dim=1)
        labels = torch.cat([torch.ones(self.k, n_pos), torch.zeros(self.k, n_neg)], dim=1).to(self.device)
        return x, labels

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift_pad == 0:
            return x
        flat = x.reshape(-1, *x.shape[2:])
        shifts = sample_shifts(len(flat), self.shift_pad, "cpu", self.generator).to(self.device)
        return random_shift(flat, self.shift_pad, shifts).reshape(x.shape)

    def update(self) -> float:
        """One Adam step of all K members; returns the mean BCE loss. Members' losses are summed, not averaged, so
        each member's step does not depend on K (they share no parameters)."""
        x, labels = self._sample_batch()
        logits = self.net(self._normalise(self._augment(x)))
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        self.last_loss = float(loss.detach()) / self.k
        return self.last_loss

    def _maybe_train(self, x: torch.Tensor) -> None:
        self._store(x)
        self.calls += 1
        if self.calls % self.update_every == 0 and self.buffer_count >= self.min_negatives:
            for _ in range(self.updates_per_call):
                self.update()

    # ---------------------------------------------------------------- rewards
    @torch.no_grad()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B] of prepared uint8 frames [B, 3, S, S], in chunks of ``batch_size``."""
        out = []
        for i in range(0, len(x), self.batch_size):
            chunk = self._normalise(x[i:i + self.batch_size])
            out.append(self.net.forward_shared(chunk))
        return torch.cat(out, dim=1)

    def _reward_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        per_member = torch.sigmoid(logits) if self.reward_type == "prob" else F.logsigmoid(logits)
        return per_member.mean(dim=0).cpu().numpy().astype(np.float32)

    def goal_probability(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """float32 [B]: ensemble mean of the members' goal probabilities (never stores or trains)."""
        check_frames(frames)
        return torch.sigmoid(self._logits(self._prepare(frames))).mean(dim=0).cpu().numpy().astype(np.float32)

    def score(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """float32 [B] rewards without storing the frames or training (evaluation, relabelling)."""
        check_frames(frames, info)
        return self._reward_from_logits(self._logits(self._prepare(frames)))

    def __call__(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """float32 [B] rewards for uint8 [B, H, W, 3] agent frames; stores them as negatives and trains if online."""
        check_frames(frames, info)
        x = self._prepare(frames)
        if self.online:
            self._maybe_train(x)
        return self._reward_from_logits(self._logits(x))

    @property
    def success_enabled(self) -> bool:  # see RewardCapabilities.predicts_success
        return self.success_threshold is not None

    def predict_success(self, frames: np.ndarray | torch.Tensor,
                        info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """bool [B]: ensemble goal probability >= ``success_threshold`` (all False without a threshold)."""
        n, _, _ = check_frames(frames, info)
        if self.success_threshold is None:
            return np.zeros(n, dtype=bool)
        return self.goal_probability(frames) >= self.success_threshold

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser, negatives buffer, counters and RNG: tensors and plain types only."""
        return {"format_version": FORMAT_VERSION, "config": dict(self.config), "goals_sha1": self.goals_sha1,
                "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "bootstrap_idx": self.bootstrap_idx.clone(),
                "buffer": self.buffer[:self.buffer_count].clone(), "buffer_pos": self.buffer_pos,
                "buffer_count": self.buffer_count, "calls": self.calls, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another goal set or architecture is a CheckpointError."""
        if state.get("config") != self.config:
            raise CheckpointError(f"LfVoid reward checkpoint was made with {state.get('config')}, this model is "
                                  f"{self.config}")
        if state.get("goals_sha1") != self.goals_sha1:
            raise CheckpointError(f"LfVoid reward checkpoint was trained on another goal set than {self.goal_path}")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.bootstrap_idx = state["bootstrap_idx"].clone()
        count = int(state["buffer_count"])
        self.buffer.zero_()
        self.buffer[:count] = state["buffer"]
        self.buffer_pos, self.buffer_count = int(state["buffer_pos"]), count
        self.calls, self.updates = int(state["calls"]), int(state["updates"])


__all__ = ["EnsembleDiscriminator", "GoalSet", "LfVoidReward", "load_goal_set", "save_goal_set"]
