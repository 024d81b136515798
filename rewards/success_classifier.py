"""``reward=success_classifier``: a learned success detector on camera frames (KAGI's sparse reward, rewards without a
simulator).

Trained at construction from episodes in the robotrl demo format (``robotrl/demos.py``):

- ``demos``: successful demonstrations (teleoperation recordings, scripted experts, an imported LeRobotDataset).
  Their last ``final_frames`` frames are positives and their first ``initial_frames`` frames negatives (a demo
  starts away from success), as KAGI and SERL's reward classifiers use demo final frames;
- ``rollouts``: labelled rollouts (``robotrl deploy record=`` episodes, or any episode with a ``success`` array,
  e.g. labelled by a person): frame ``t + 1`` carries the label ``success[t]`` and frame 0 is a negative.

The model is a small conv net (3 conv layers + a linear head) on one RGB view resized to ``image_size``, trained with
binary cross-entropy, random-shift augmentation and class-balanced batches, deterministically from ``seed``.
It is a :class:`~robotrl.rewards.base.RewardModel`: ``__call__`` gives the sparse reward 1.0 / 0.0 at ``threshold``
(``output: sparse``, KAGI's) or the probability (``output: probability``); ``predict_success`` gives the detector's
decision, and :func:`separation` measures held-out frames. Its weights go into the run's checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from robotrl.rewards.base import check_frames
from robotrl.rewards.capabilities import RewardCapabilities
from torch import nn

from robotrl.augment import random_shift, sample_shifts
from robotrl.demos import load_demos
from robotrl.errors import ConfigError
from robotrl.params import require

log = logging.getLogger(__name__)
OUTPUTS = ("sparse", "probability")


def _paths(value: Any, key: str) -> list[Path]:
    if value is None:
        return []
    paths = [Path(str(value))] if isinstance(value, str | Path) else [Path(str(v)) for v in value]
    for path in paths:
        if not (path / "meta.json").is_file():
            raise ConfigError(f"reward.{key}={str(path)!r} is not a demo directory (no meta.json); expected episodes "
                              f"in the robotrl demo format (robotrl demos, robotrl deploy record=, import_lerobot)")
    return paths


def first_view(pixels: np.ndarray) -> np.ndarray:
    """(T, 3 * views, H, W) stored frames -> (T, H, W, 3) RGB of the first camera."""
    return np.ascontiguousarray(np.asarray(pixels)[:, :3].transpose(0, 2, 3, 1))


def labelled_frames(demos: Sequence[Path], rollouts: Sequence[Path], final_frames: int,
                    initial_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W, 3) uint8 and labels (N,) float32 from demo and rollout directories (module docstring)."""
    frames, labels = [], []
    for path in demos:
        for ep in load_demos(path):
            rgb = first_view(ep.obs["pixels"])
            k_pos, k_neg = min(final_frames, len(rgb)), min(initial_frames, max(len(rgb) - final_frames, 0))
            frames += [rgb[len(rgb) - k_pos:], rgb[:k_neg]]
            labels += [np.ones(k_pos, np.float32), np.zeros(k_neg, np.float32)]
    for path in rollouts:
        for ep in load_demos(path):
            frames.append(first_view(ep.obs["pixels"]))
            labels.append(np.concatenate([[0.0], np.asarray(ep.success, np.float32)]).astype(np.float32))
    if not frames:
        raise ConfigError("reward=success_classifier needs reward.demos and/or reward.rollouts with episodes")
    sizes = {f.shape[1:] for f in frames if len(f)}
    if len(sizes) > 1:
        raise ConfigError(f"reward=success_classifier: episodes have frames of different sizes {sorted(sizes)}")
    x, y = np.concatenate(frames), np.concatenate(labels)
    if y.min() == y.max():
        raise ConfigError(f"reward=success_classifier: all {len(y)} training frames are labelled {bool(y[0])}; it "
                          f"needs success and failure frames (demos give both, or add labelled rollouts)")
    return x, y


class SuccessNet(nn.Module):
    """(B, 3, S, S) float in [0, 1] -> (B,) success logits."""

    def __init__(self, image_size: int, channels: int = 16) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels * 2, channels * 2, 3, stride=2, padding=1), nn.ReLU())
        with torch.no_grad():
            n = self.convs(torch.zeros(1, 3, image_size, image_size)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(n, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x)).squeeze(-1)


class SuccessClassifier:
    """A success detector trained from demo final frames and labelled rollouts (module docstring)."""

    capabilities = RewardCapabilities(trainable=True, predicts_success=True)

    def __init__(self, demos: Any = None, rollouts: Any = None, image_size: int = 64, final_frames: int = 5,
                 initial_frames: int = 10, steps: int = 300, batch_size: int = 64, lr: float = 1e-3,
                 threshold: float = 0.5, output: str = "sparse", seed: int = 0, device: str = "cpu") -> None:
        if output not in OUTPUTS:
            raise ConfigError(f"reward.output={output!r}, expected one of {list(OUTPUTS)}")
        require("reward", positive_int={"image_size": image_size, "steps": steps, "batch_size": batch_size,
                                        "final_frames": final_frames},
                nonneg_int={"initial_frames": initial_frames, "seed": seed}, positive={"lr": lr})
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"reward.threshold={threshold!r}, expected a probability in (0, 1)")
        self.image_size, self.threshold, self.output = image_size, float(threshold), output
        self.device = torch.device(device)
        torch.manual_seed(seed)  # make_reward forks the RNG around construction: the run's RNG is untouched
        self.net = SuccessNet(image_size).to(self.device)
        frames, labels = labelled_frames(_paths(demos, "demos"), _paths(rollouts, "rollouts"), final_frames,
                                         initial_frames)
        self.train_stats = self.fit(frames, labels, steps, batch_size, lr, seed)

    # ------------------------------------------------------------------------------------------ training
    def _prepare(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        x = x.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def fit(self, frames: np.ndarray, labels: np.ndarray, steps: int, batch_size: int, lr: float,
            seed: int) -> dict[str, float]:
        """Class-balanced minibatch BCE with random shifts; returns the final training loss and accuracy."""
        x_all, y_all = self._prepare(frames), torch.as_tensor(labels, device=self.device)
        pos, neg = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
        rng = np.random.default_rng(seed)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.net.train()
        loss = torch.zeros(())
        for _ in range(steps):
            idx = np.concatenate([rng.choice(pos, batch_size // 2), rng.choice(neg, batch_size - batch_size // 2)])
            x = random_shift(x_all[idx], 4, sample_shifts(len(idx), 4, "cpu", gen).to(self.device))
            loss = F.binary_cross_entropy_with_logits(self.net(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.net.eval()
        predicted = self.probability(frames) > self.threshold
        accuracy = float((predicted == (labels > 0.5)).mean())
        # per class: with few success frames the plain accuracy of a detector that says "failure" everywhere is high
        balanced = float((predicted[pos].mean() + (~predicted[neg]).mean()) / 2)
        log.info("success classifier: %d frames (%d success), final loss %.4f, train accuracy %.3f (balanced %.3f)",
                 len(labels), len(pos), float(loss.detach()), accuracy, balanced)
        if predicted.all() or not predicted.any():
            log.warning("success classifier predicts %s on all %d of its own training frames (final loss %.4f): "
                        "its %s reward is the same on every step; train it longer (reward.steps=%d now) or label more "
                        "distinct success frames", "success" if predicted.all() else "failure", len(labels),
                        float(loss.detach()), self.output, steps)
        return {"frames": float(len(labels)), "positives": float(len(pos)), "loss": float(loss.detach()),
                "train_accuracy": accuracy, "train_balanced_accuracy": balanced}

    # ------------------------------------------------------------------------------------------ RewardModel
    @torch.no_grad()
    def probability(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(success) per frame, float32 [B]."""
        check_frames(frames)
        out = [torch.sigmoid(self.net(self._prepare(frames[i:i + 256]))) for i in range(0, len(frames), 256)]
        return torch.cat(out).cpu().numpy().astype(np.float32)

    def predict_success(self, frames: Any, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        return self.probability(frames) > self.threshold

    def __call__(self, frames: Any, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        p = self.probability(frames)
        return p if self.output == "probability" else (p > self.threshold).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])


def separation(probabilities: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Held-out quality of a detector: ROC AUC (rank statistic), accuracy and F1 at ``threshold``."""
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels) > 0.5
    ranks = np.argsort(np.argsort(p, kind="stable"), kind="stable") + 1.0
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1)
    pred = p > threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    return {"auc": float(auc), "accuracy": float((pred == y).mean()), "f1": float(f1), "positives": float(n_pos),
            "negatives": float(n_neg)}
