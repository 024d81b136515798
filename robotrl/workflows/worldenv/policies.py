"""The World-Env policies: the VLA (built as ``agent=vla`` builds it, saved as a ``vla`` checkpoint file), its actor
in a contract env, the trivial baselines, and a reflector's scores of many frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.checks import TRIVIAL_KINDS
from robotrl.workflows.worldenv.fit import load_ckpt
from robotrl.workflows.worldenv.settings import clip_cfg


def build_vla(cfg: Any, device: torch.device, proprio_dim: int, action_dim: int):
    """(VLA policy, its CLIP model, tokenizer) on ``device`` (built as ``agent=vla`` builds it)."""
    from robotrl.agents.vla import build_vla as build

    v = cfg.vla
    policy, clip, tokenizer, _ = build(clip_cfg(cfg), proprio_dim, action_dim, int(v.chunk), int(v.hidden),
                                       float(v.init_log_scale))
    return policy.to(device), clip.to(device), tokenizer


def text_embeddings(clip: Any, tokenizer: Any, instructions: Sequence[str]) -> dict[str, torch.Tensor]:
    from robotrl.agents.vla import text_embeddings as embed

    return embed(clip, tokenizer, instructions)


def vla_payload(cfg: Any, policy: Any, text: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    return {"kind": "vla", "cfg": {"clip": clip_cfg(cfg), "chunk": int(cfg.vla.chunk), "hidden": int(cfg.vla.hidden),
                                   "proprio_dim": policy.proprio_dim, "action_dim": policy.action_dim},
            "model": policy.state_dict(), "text": text, **extra}


def load_vla(path: Path, device: torch.device) -> tuple[Any, dict[str, torch.Tensor]]:
    """(policy, instruction -> text embedding) from a ``vla`` checkpoint."""
    from omegaconf import OmegaConf

    payload = load_ckpt(path, "vla")
    c = payload["cfg"]
    cfg = OmegaConf.create({"clip": {**c["clip"], "allow_random_weights": True},  # overwritten by the state dict
                            "vla": {"chunk": c["chunk"], "hidden": c["hidden"], "init_log_scale": 0.0}})
    policy, _, _ = build_vla(cfg, device, c["proprio_dim"], c["action_dim"])
    policy.load_state_dict(payload["model"])
    return policy, payload["text"]


class VLAActor:
    """Acts with a VLA in a contract env: one chunk per call, the Laplace sample or its mean, plus extra noise."""

    def __init__(self, policy: Any, text: dict[str, torch.Tensor], instruction: str, proprio_index: np.ndarray,
                 sample: bool = False, noise: float = 0.0, seed: int = 0):
        from robotrl.world import check_instruction

        self.policy, self.sample, self.noise = policy, sample, noise
        check_instruction(instruction, list(text))
        self.device = next(policy.parameters()).device
        self.text = text[instruction]
        self.pidx = proprio_index
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], proprio: np.ndarray | None = None) -> np.ndarray:
        p = obs["state"][self.pidx] if proprio is None else proprio
        mean = self.policy.plan(obs["pixels"][-3:], self.text, p)  # as agent=vla plans
        if self.sample:
            scale = self.policy.log_scale.exp()
            u = torch.rand(mean.shape, generator=self.gen).to(self.device) - 0.5  # Laplace by inverse CDF
            mean = mean - scale * torch.sign(u) * torch.log1p(-2 * u.abs())
        chunk = mean.cpu().numpy()
        if self.noise:
            chunk = chunk + self.noise * self.rng.standard_normal(chunk.shape)
        return np.clip(chunk, -1.0, 1.0).astype(np.float32)


def score_frames(reflector: Any, frames: np.ndarray, instructions: Sequence[str], batch: int = 256) -> np.ndarray:
    """A reflector's scores of any number of frames (uint8 [N, H, W, 3]), ``batch`` at a time."""
    return np.concatenate([reflector.score(frames[i:i + batch], instructions[i:i + batch])
                           for i in range(0, len(frames), batch)]) if len(frames) else np.zeros(0, np.float32)


class TrivialActor:
    """The baselines beside every World-Env success number: ``random`` (uniform actions in [-1, 1], seeded) or
    ``zero`` (the arm holds still), one chunk of ``chunk`` actions per call like a VLA."""

    KINDS = TRIVIAL_KINDS

    def __init__(self, kind: str, action_dim: int, chunk: int, seed: int = 0):
        if kind not in self.KINDS:
            raise ConfigError(f"trivial policy {kind!r}, expected one of {list(self.KINDS)}")
        self.kind, self.shape = kind, (chunk, action_dim)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray], proprio: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "zero":
            return np.zeros(self.shape, np.float32)
        return self.rng.uniform(-1.0, 1.0, self.shape).astype(np.float32)
