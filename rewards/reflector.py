"""The instant reflector of World-Env: a CLIP backbone + a small head judging "is the instruction done in this
frame", trained with BCE on frames labelled by the simulator's ``info["success"]``.

It is a :class:`robotrl.world.Reflector` (``score(frames, instructions)``, ``threshold``) for ``WorldEnv``, and a
``RewardModel`` (``reward=reflector reward.checkpoint=DIR/reflector.pt reward.instruction="..."``) whose reward is
the success probability, ``predict_success`` being ``score > threshold``. World-Env's reflector is a frozen VLM + a
reward head; here the CLIP vision tower may be fine-tuned too (``finetune_visual``), the text tower stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from robotrl.rewards.base import check_frames
from robotrl.rewards.capabilities import RewardCapabilities

from robotrl.config import resolve_device
from robotrl.errors import CheckpointError, ConfigError
from robotrl.open_clip_loader import build_clip, vision_size
from robotrl.world import check_instruction

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPReflector(nn.Module):
    """CLIP image features x instruction text features -> success logit."""

    def __init__(self, clip: nn.Module, tokenizer: Any, hidden: int = 128, threshold: float = 0.5,
                 finetune_visual: bool = True, consecutive: int = 1):
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"reflector threshold={threshold!r}, expected a probability in (0, 1)")
        if int(consecutive) < 1:
            raise ConfigError(f"reflector consecutive={consecutive!r}, expected frames in a row >= 1")
        self.clip, self.tokenizer, self.threshold = clip, tokenizer, float(threshold)
        self.consecutive = int(consecutive)  # frames above threshold in a row that end an episode (robotrl.world)
        self.finetune_visual = finetune_visual
        for p in self.clip.parameters():
            p.requires_grad_(False)
        if finetune_visual:
            for p in self.clip.visual.parameters():
                p.requires_grad_(True)
        dim = int(clip.text_projection.shape[1]) if hasattr(clip, "text_projection") else clip.visual.output_dim
        self.head = nn.Sequential(nn.Linear(3 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self._text: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def text_features(self, instructions: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(instructions) if t not in self._text]
        if missing:
            with torch.no_grad():
                emb = F.normalize(self.clip.encode_text(self.tokenizer(missing).to(self.device)).float(), dim=-1)
            self._text.update(zip(missing, emb, strict=True))
        return torch.stack([self._text[t] for t in instructions])

    def logits(self, frames: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        """frames uint8 [B, H, W, 3] tensor on the model's device -> logits [B]."""
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        size = vision_size(self.clip)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]) / torch.tensor(CLIP_STD, device=x.device)[
            :, None, None]
        img = F.normalize(self.clip.encode_image(x).float(), dim=-1)
        txt = self.text_features(instructions)
        return self.head(torch.cat([img, txt, img * txt], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def score(self, frames: np.ndarray | torch.Tensor, instructions: Sequence[str]) -> np.ndarray:
        """Success probability per frame (uint8 [B, H, W, 3]) and instruction."""
        b, _, _ = check_frames(frames)
        if len(instructions) != b:
            raise ConfigError(f"reflector got {len(instructions)} instructions for {b} frames, expected one per frame")
        instructions = [check_instruction(t) for t in instructions]
        was = self.training
        self.eval()
        x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames, device=self.device)
        out = torch.sigmoid(self.logits(x, instructions)).cpu().numpy().astype(np.float32)
        self.train(was)
        return out


class ReflectorReward:
    """``reward=reflector``: a trained reflector checkpoint as a ``RewardModel`` for one instruction."""

    capabilities = RewardCapabilities(predicts_success=True)

    def __init__(self, checkpoint: str, instruction: str, device: str = "auto", threshold: float | None = None):
        self.instruction = check_instruction(instruction)
        self.reflector = load_reflector(checkpoint, resolve_device(str(device), "reward.device"))
        if threshold is not None:
            self.reflector.threshold = float(threshold)

    def __call__(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        return self.reflector.score(frames, [self.instruction] * len(frames))

    def predict_success(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None):
        return self(frames, info) > self.reflector.threshold


def save_payload(reflector: CLIPReflector, clip_cfg: dict[str, Any], hidden: int) -> dict[str, Any]:
    """What a reflector checkpoint holds: weights, the CLIP config to rebuild it, head size, threshold."""
    return {"kind": "reflector", "clip_cfg": clip_cfg, "hidden": hidden, "threshold": reflector.threshold,
            "consecutive": reflector.consecutive, "finetune_visual": reflector.finetune_visual,
            "model": reflector.state_dict()}


def load_reflector(path: str | Path, device: torch.device | str = "cpu") -> CLIPReflector:
    """A reflector from ``reflector.pt`` (written by ``robotrl worldenv train-reflector``) or a CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / "reflector.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: reflector checkpoint not found (run `robotrl worldenv train-reflector`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: one line, not a pickle traceback
        raise CheckpointError(f"{path}: not a readable reflector checkpoint ({type(e).__name__})") from None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind != "reflector":
        raise CheckpointError(f"{path}: not a reflector checkpoint (kind={kind!r})")
    cfg = dict(payload["clip_cfg"])
    cfg["allow_random_weights"] = True  # every weight is overwritten by the checkpoint just below
    clip, tok, _ = build_clip(**cfg)
    reflector = CLIPReflector(clip, tok, payload["hidden"], payload["threshold"], payload["finetune_visual"],
                              payload.get("consecutive", 1))  # checkpoints before `consecutive` ended on one frame
    reflector.load_state_dict(payload["model"])
    return reflector.to(device)


__all__ = ["CLIPReflector", "ReflectorReward", "build_clip", "load_reflector", "save_payload", "vision_size"]
