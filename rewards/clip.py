"""VLM-RM: CLIP as a zero-shot reward model (Rocamonde et al., "Vision-Language Models are Zero-Shot Reward Models").

With normalised image embedding x, goal embedding g (mean of the normalised goal-prompt embeddings), baseline
embedding b (same for the baseline prompts) and direction d = g - b::

    P = alpha * d d^T / ||d||^2 + (1 - alpha) * I          (goal-baseline projection, strength alpha)
    reward(x) = 1 - 1/2 * ||(x - g) P||^2

alpha = 0 is the plain CLIP reward 1 - ||x - g||^2 / 2 = cos(x, g) (for a single goal prompt); alpha = 1 keeps only
the component of x - g along d. This follows the paper's Section 3 and the reference implementation's
``CLIPReward.compute_projection``/``forward`` and ``embed_prompts`` (prompt embeddings are normalised, then averaged,
not renormalised) in ``src/vlmrm/reward_model.py`` of AlignmentResearch/vlmrm. Since P is symmetric,
``(x - g) P = (1 - alpha)(x - g) + alpha ((x - g) . u) u`` with u = d / ||d||, which is what is computed (no D x D
matrix). Preprocessing is batched in torch on the model's device, with the mean/std of the model's open_clip
preprocess config and one of two resizes (``resize_mode``):

* ``crop``: open_clip's eval transform: resize the short side to the model's input size, then centre-crop;
* ``squash``: resize the whole frame to the input size, aspect ratio not kept, as vlmrm does
  (``vlmrm/contrib/open_clip/transform.py``: ``Resize((s, s), bicubic)`` then a no-op ``CenterCrop``).

They agree on square frames; on a 400x600 frame ``crop`` drops the sides and ``squash`` keeps them squeezed, so the
rewards (and the ranking of frames) differ. Both clamp the resized pixels to [0, 255] (bicubic overshoots; vlmrm
does not clamp, which is the only difference from its transform, a few 1e-3 at sharp edges).

Weights: ``pretrained`` is an open_clip tag (resolved from the local Hugging Face cache, ``cache_dir`` or HF_HOME,
before any download is tried) or a local checkpoint file. Without weights this fails with one line saying how to
provide them, unless ``allow_random_weights`` (smoke tests only: the rewards are then meaningless).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from robotrl.rewards.base import EmbeddingCache, check_frames
from robotrl.rewards.capabilities import RewardCapabilities

from robotrl.config import resolve_device
from robotrl.errors import ConfigError
from robotrl.open_clip_loader import cached_weights, hub_reachable, load_open_clip, register_model_cfg
from robotrl.params import given, require

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
RESIZE_MODES = {"crop": "shortest", "squash": "squash"}  # reward.resize_mode -> open_clip's name for it
_INTERP = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "random": "bicubic"}


# the loader lives in the core (robotrl.open_clip_loader) so that agent=vla builds its backbone the same way; the
# old private names stay importable from here
_register_model_cfg = register_model_cfg
_hub_reachable = hub_reachable
_cached_weights = cached_weights


# ------------------------------------------------------------------------------------------------ the model
class CLIPReward:
    """VLM-RM reward: ``1 - 1/2 ||(x - g) P||^2`` on CLIP embeddings (see the module docstring).

    Args:
        model_name: open_clip architecture (``ViT-B-32`` ... ``ViT-bigG-14``), or a name for ``model_cfg``.
        pretrained: open_clip tag (e.g. ``laion2b_s34b_b79k``) or a local checkpoint path; null = no weights.
        cache_dir: where tag weights are cached (default: the Hugging Face cache, HF_HOME).
        goal_prompts / baseline_prompts: text describing the goal state / the environment in general.
        alpha: projection strength in [0, 1] (0: plain CLIP cosine reward, 1: only the goal-baseline direction).
        allow_random_weights: build random weights when none can be loaded (smoke tests; rewards are meaningless).
        device: ``auto`` | ``cpu`` | ``cuda[:N]``. precision: ``auto`` (fp32 on CPU, bf16 -- or fp16 without bf16
            support -- on GPU), ``fp32``, ``fp16``, ``bf16`` (autocast; embeddings and rewards are float32).
        model_cfg: an open_clip model config dict registered as ``model_name`` (tiny test models).
        resize_mode: ``crop`` (short side to the input size, centre crop: open_clip's eval transform) or ``squash``
            (whole frame to the input size: vlmrm's); null: the model's own open_clip preprocess setting.
        cache_embeddings: keep text/goal embeddings (off only to measure what the cache saves).
        batch_size: frames per forward pass. success_threshold: reward at/above which ``predict_success`` is True.
    """

    capabilities = RewardCapabilities(predicts_success=True)  # on with success_threshold

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k",
                 cache_dir: str | None = None, goal_prompts: Sequence[str] = ("a humanoid robot kneeling",),
                 baseline_prompts: Sequence[str] = ("a humanoid robot",), alpha: float = 0.5,
                 allow_random_weights: bool = False, device: str = "auto", precision: str = "auto",
                 model_cfg: dict[str, Any] | None = None, cache_embeddings: bool = True, batch_size: int = 64,
                 success_threshold: float | None = None, resize_mode: str | None = "crop"):
        if resize_mode is not None and resize_mode not in RESIZE_MODES:
            raise ConfigError(f"reward.resize_mode={resize_mode!r}, expected one of {', '.join(RESIZE_MODES)} or null")
        require("reward", probability={"alpha": alpha}, positive_int={"batch_size": batch_size},
                finite=given(success_threshold=success_threshold))
        if precision not in PRECISIONS:
            raise ConfigError(f"reward.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        self.goal_prompts, self.baseline_prompts = self._prompts(goal_prompts, "goal"), self._prompts(
            baseline_prompts, "baseline")
        self.alpha, self.batch_size = float(alpha), int(batch_size)
        self.success_threshold = None if success_threshold is None else float(success_threshold)
        self.device = resolve_device(str(device), key="reward.device")
        if precision == "auto":
            bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            precision = "fp32" if self.device.type == "cpu" else "bf16" if bf16 else "fp16"
        self.precision = precision
        if model_cfg is not None:
            _register_model_cfg(str(model_name), dict(model_cfg))
        self.model_name = str(model_name)
        model, self.tokenizer, self.weights = load_open_clip(self.model_name, pretrained, cache_dir,
                                                             bool(allow_random_weights))
        self.model = model.to(self.device)
        preprocess_cfg = dict(getattr(self.model.visual, "preprocess_cfg", {}))
        if resize_mode is not None:
            preprocess_cfg["resize_mode"] = RESIZE_MODES[resize_mode]
        self._init_preprocess(preprocess_cfg)
        self.cache_embeddings = bool(cache_embeddings)
        self.text_cache = EmbeddingCache()
        self.goal_image_cache = EmbeddingCache()
        self._direction_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.goal_direction()  # embed the prompts once now (and fail here on a bad prompt)

    @staticmethod
    def _prompts(prompts: Sequence[str] | str, which: str) -> tuple[str, ...]:
        prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ConfigError(f"reward.{which}_prompts={list(prompts)!r}, expected a non-empty list of non-empty text")
        return prompts

    # ---------------------------------------------------------------- preprocessing
    def _init_preprocess(self, cfg: dict[str, Any]) -> None:
        size = cfg.get("size", self.model.visual.image_size)
        self.image_size = tuple(size) if isinstance(size, list | tuple) else (int(size), int(size))
        self.resize_mode = cfg.get("resize_mode", "shortest")
        if self.resize_mode not in ("shortest", "squash", "longest"):
            raise ConfigError(f"unsupported open_clip resize_mode {self.resize_mode!r} for {self.model_name}")
        self.interpolation = _INTERP.get(cfg.get("interpolation", "bicubic"), "bicubic")
        self.fill_color = float(cfg.get("fill_color", 0))
        mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32)
        # (x / 255 - mean) / std == x * scale + shift, applied to 0..255 pixels
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        antialias = self.interpolation in ("bilinear", "bicubic")
        return F.interpolate(x, size=size, mode=self.interpolation, antialias=antialias,
                             **({} if self.interpolation == "nearest" else {"align_corners": False}))

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> normalised float32 [B, 3, S, S] on the model's device: resize per ``resize_mode``
        (crop: as open_clip's eval transform does per PIL image; squash: as vlmrm's), clamp to [0, 255], mean/std."""
        check_frames(frames)
        if isinstance(frames, np.ndarray):  # renderers may return flipped views (negative strides)
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        (h, w), (th, tw) = x.shape[-2:], self.image_size
        if (h, w) != (th, tw):
            if self.resize_mode == "squash":
                x = self._resize(x, (th, tw))
            elif self.resize_mode == "shortest":  # torchvision Resize(int): short side -> size, then CenterCrop
                short, long = (h, w) if h <= w else (w, h)
                new_short, new_long = max(th, tw), int(max(th, tw) * long / short)
                x = self._resize(x, (new_short, new_long) if h <= w else (new_long, new_short))
                top, left = int(round((x.shape[-2] - th) / 2.0)), int(round((x.shape[-1] - tw) / 2.0))
                x = x[..., top:top + th, left:left + tw]
            else:  # longest: long side -> size, pad with fill_color
                scale = min(th / h, tw / w)
                nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
                x = self._resize(x, (nh, nw))
                pt, pl = (th - nh) // 2, (tw - nw) // 2
                x = F.pad(x, (pl, tw - nw - pl, pt, th - nh - pt), value=self.fill_color)
            x = x.clamp_(0.0, 255.0)
        return x * self._scale + self._shift

    # ---------------------------------------------------------------- embeddings
    def _autocast(self):
        if self.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    @torch.inference_mode()
    def embed_images(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised float32 image embeddings [B, D] of uint8 [B, H, W, 3] frames."""
        n, _, _ = check_frames(frames)
        out = []
        for i in range(0, n, self.batch_size):
            x = self.preprocess(frames[i:i + self.batch_size])
            with self._autocast():
                emb = self.model.encode_image(x)
            out.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(out)

    @torch.inference_mode()
    def _embed_text(self, prompts: tuple[str, ...]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with self._autocast():
            emb = self.model.encode_text(tokens)
        return F.normalize(emb.float(), dim=-1).mean(dim=0)  # normalise each prompt, then average (vlmrm)

    def text_embedding(self, prompts: Sequence[str]) -> torch.Tensor:
        """Mean of the normalised embeddings of ``prompts`` [D] (cached by prompt tuple)."""
        prompts = tuple(prompts)
        if not self.cache_embeddings:
            return self._embed_text(prompts)
        return self.text_cache.get(prompts, lambda: self._embed_text(prompts))

    def goal_image_embedding(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised embedding [D] of one goal image uint8 [H, W, 3] (cached by content; for image goals)."""
        return self.goal_image_cache.get(frame, lambda: self.embed_images(np.asarray(frame)[None])[0])

    def goal_direction(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, u): the goal embedding and the unit goal-baseline direction (d / ||d||)."""
        key = (self.goal_prompts, self.baseline_prompts)
        if self.cache_embeddings and key in self._direction_cache:
            return self._direction_cache[key]
        g = self.text_embedding(self.goal_prompts)
        d = g - self.text_embedding(self.baseline_prompts)
        norm = float(d.norm())
        if self.alpha > 0 and norm < 1e-12:
            raise ConfigError(f"reward goal and baseline prompts embed identically ({self.goal_prompts} vs "
                              f"{self.baseline_prompts}); the projection needs them to differ (or alpha=0)")
        out = (g, d / max(norm, 1e-12))
        if self.cache_embeddings:
            self._direction_cache[key] = out
        return out

    def set_prompts(self, goal_prompts: Sequence[str] | None = None, baseline_prompts: Sequence[str] | None = None,
                    alpha: float | None = None) -> None:
        """Change the task text (embeddings of prompts seen before come from the cache)."""
        if goal_prompts is not None:
            self.goal_prompts = self._prompts(goal_prompts, "goal")
        if baseline_prompts is not None:
            self.baseline_prompts = self._prompts(baseline_prompts, "baseline")
        if alpha is not None:
            self.alpha = float(alpha)
        self.goal_direction()

    # ---------------------------------------------------------------- rewards
    def reward_from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """VLM-RM reward [B] for normalised image embeddings x [B, D]."""
        g, u = self.goal_direction()
        diff = x - g
        along = diff @ u
        projected = (1.0 - self.alpha) * diff + self.alpha * along[:, None] * u[None, :]
        return 1.0 - 0.5 * projected.pow(2).sum(-1)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """float32 [B] rewards for uint8 [B, H, W, 3] RGB frames."""
        check_frames(frames, info)
        return self.reward_from_embeddings(self.embed_images(frames)).cpu().numpy().astype(np.float32)

    @property
    def success_enabled(self) -> bool:  # see RewardCapabilities.predicts_success
        return self.success_threshold is not None

    def predict_success(self, frames: np.ndarray | torch.Tensor,
                        info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """bool [B]: reward >= ``success_threshold`` (all False when no threshold is configured)."""
        if self.success_threshold is None:
            n, _, _ = check_frames(frames, info)
            return np.zeros(n, dtype=bool)
        return self(frames, info) >= self.success_threshold
