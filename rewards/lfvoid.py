"""LfVoid (Gao et al. 2023, "Can Pre-Trained Text-to-Image Models Generate Visual Goals for RL?"): a reward from
goal images that a pre-trained text-to-image editing model makes out of the env's own initial observations.

Two parts, as in the paper:

1. **Goal generation** (:func:`generate_goals`, ``robotrl goals generate``): render N real initial observations of
   the env (:func:`initial_frames`), edit each with a text instruction through a diffusers image-editing pipeline
   (default InstructPix2Pix, ``timbrooks/instruct-pix2pix``; the paper edits with prompt-to-prompt / DreamBooth, which
   this repo does not ship), and save the *goal set*: one npz (``goals`` uint8 [N, H, W, 3], the ``sources`` they were
   edited from, ``meta`` JSON with the instruction, model id and settings) plus PNGs to look at.
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

Weights for the editing model are never downloaded silently offline: a local pipeline directory (``save_pretrained``
layout) or a repo id already in the Hugging Face cache is loaded with ``local_files_only``; otherwise
:func:`load_edit_pipeline` fails in one line naming the model id and how to provide it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from robotrl.agents.nets import random_shift, sample_shifts
from robotrl.rewards.base import check_frames, render_rgb
from robotrl.rewards.clip import _hub_reachable

from robotrl.atomic import atomic_write
from robotrl.config import resolve_device
from robotrl.errors import CheckpointError, ConfigError
from robotrl.npz import read_npz

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
GOALS_FILE = "goals.npz"
GOAL_KEYS = ("goals", "sources", "meta")
DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
REWARD_TYPES = ("prob", "logprob")
SOURCES = ("diffusion", "demos", "images")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


# ------------------------------------------------------------------------------------------------ real frames
def initial_frames(env_cfg: Any, n: int, seed: int, size: int) -> np.ndarray:
    """uint8 [n, size, size, 3]: the env's initial observation after ``reset(seed=seed + i)``, rendered RGB.

    These are the "real initial observations" LfVoid edits; they are rendered with the same camera
    (``render_rgb``) that :class:`~robotrl.rewards.base.RewardWrapper` later shows the reward model.
    """
    from robotrl.envs import make_env

    if int(n) < 1:
        raise ConfigError(f"n={n!r} initial frames requested, expected n >= 1")
    env = make_env(env_cfg, seed)
    try:
        frames = []
        for i in range(int(n)):
            env.reset(seed=int(seed) + i)
            frames.append(render_rgb(env, int(size)))
    finally:
        env.close()
    return np.stack(frames).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ diffusion editing
@dataclass(frozen=True)
class EditSettings:
    """InstructPix2Pix sampling settings (diffusers' defaults: 100 steps, image guidance 1.5, text guidance 7.5).

    ``resolution`` is the square size the frames are resized to for editing (a multiple of 8; the model was trained
    at 256 and is used at 512); goals are resized back to the source frame size.
    """

    num_inference_steps: int = 100
    image_guidance_scale: float = 1.5
    guidance_scale: float = 7.5
    seed: int = 0
    resolution: int = 512

    def validate(self) -> None:
        if int(self.num_inference_steps) < 1:
            raise ConfigError(f"steps={self.num_inference_steps!r}, expected >= 1 diffusion steps")
        if int(self.resolution) < 8 or int(self.resolution) % 8:
            raise ConfigError(f"resolution={self.resolution!r}, expected a positive multiple of 8")
        if float(self.image_guidance_scale) < 0 or float(self.guidance_scale) < 0:
            raise ConfigError(f"guidance scales ({self.image_guidance_scale}, {self.guidance_scale}) must be >= 0")


def _how_to_provide_pipeline(model: str) -> str:
    return (f"provide weights for image-editing model {model!r}: model=/path/to/pipeline_dir (a diffusers "
            f"save_pretrained directory), or pre-download the repo into the Hugging Face cache "
            f"(`huggingface-cli download {model}`; HF_HOME, or cache_dir=DIR), or run where huggingface.co is "
            f"reachable; without weights use source=demos or source=images (offline goals, not LfVoid's method)")


def _looks_like_path(model: str) -> bool:
    """A Hugging Face repo id is ``name`` or ``owner/name``; anything else is meant as a local path."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.path.exists(os.path.expanduser(model))


def load_edit_pipeline(model: str = DEFAULT_MODEL, cache_dir: str | None = None, device: str = "auto") -> Any:
    """A ``StableDiffusionInstructPix2PixPipeline`` from a local directory or a Hugging Face repo id, or ConfigError.

    Offline (``HF_HUB_OFFLINE`` or no route to the hub) a repo id is looked up with ``local_files_only=True`` in
    ``cache_dir`` / HF_HOME, so a missing model fails in one line instead of retrying downloads. fp16 on CUDA.
    """
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from diffusers.utils import is_accelerate_available

    model = str(model)
    local = Path(model).expanduser()
    if _looks_like_path(model) and not local.is_dir():
        raise ConfigError(f"image-editing model path {model!r} is not a directory; "
                          + _how_to_provide_pipeline(model))
    is_local = local.is_dir()
    offline = not is_local and not _hub_reachable()
    dev = resolve_device(str(device), key="device")
    half = {"torch_dtype": torch.float16} if dev.type == "cuda" else {}  # fp32 (the default) on CPU
    try:
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            str(local) if is_local else model, cache_dir=cache_dir, local_files_only=is_local or offline,
            low_cpu_mem_usage=is_accelerate_available(), **half)  # explicit: no multi-line warning without it
    except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        where = "not in the local cache and the hub is unreachable (offline)" if offline else first
        raise ConfigError(f"no weights for image-editing model {model!r}: {where}; "
                          + _how_to_provide_pipeline(model)) from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size[0], size[1], 3] (bicubic); a no-op at the same size."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC), dtype=np.uint8)


def edit_frames(pipe: Any, frames: np.ndarray, instruction: str, settings: EditSettings) -> np.ndarray:
    """Edit each frame with ``instruction``; uint8 goals of the frames' shape.

    Frame ``i`` is sampled with its own generator seeded ``settings.seed + i``, so a goal does not depend on how many
    other frames are edited, and the whole set is reproducible on the same device.
    """
    from PIL import Image

    settings.validate()
    frames = _check_images(frames, "frames to edit")
    res = int(settings.resolution)
    device = getattr(pipe, "device", torch.device("cpu"))
    goals = []
    for i, frame in enumerate(frames):
        image = Image.fromarray(_resize(frame, (res, res)))
        generator = torch.Generator(device=device).manual_seed(int(settings.seed) + i)
        out = pipe(prompt=instruction, image=image, num_inference_steps=int(settings.num_inference_steps),
                   image_guidance_scale=float(settings.image_guidance_scale),
                   guidance_scale=float(settings.guidance_scale), generator=generator, output_type="np")
        edited = np.clip(np.asarray(out.images[0], np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        goals.append(_resize(edited, frame.shape[:2]))
    return np.stack(goals)


def generate_goals(frames: np.ndarray, instruction: str, out_dir: str | Path, pipeline: Any | None = None,
                   model: str = DEFAULT_MODEL, cache_dir: str | None = None, device: str = "auto",
                   settings: EditSettings | None = None, extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Edit real initial frames uint8 [N, H, W, 3] with ``instruction`` and save the goal set; return the npz path.

    ``pipeline`` is a loaded diffusers editing pipeline; without one, ``model`` (repo id or local directory) is
    loaded with :func:`load_edit_pipeline`. The metadata records the instruction, model id and every setting.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError(f"instruction={instruction!r}, expected non-empty text describing the goal edit")
    frames = _check_images(frames, "initial frames")
    settings = settings or EditSettings()
    settings.validate()
    pipe = pipeline if pipeline is not None else load_edit_pipeline(model, cache_dir, device)
    goals = edit_frames(pipe, frames, instruction, settings)
    meta = {"source": "diffusion", "method": "LfVoid goal generation (text-guided editing of initial frames)",
            "instruction": instruction, "model": str(model), "pipeline": type(pipe).__name__,
            "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            **dict(extra_meta or {})}
    return save_goal_set(out_dir, goals, frames, meta)


# ------------------------------------------------------------------------------------------------ offline sources
def demo_goals(demo_dir: str | Path, frames_per_demo: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(goals, sources) from successful expert demos: the last ``frames_per_demo`` frames reached after a successful
    step of each episode, and each episode's first frame. Not LfVoid's method (true goal observations).
    """
    from robotrl.envs.demos import load_demos

    if int(frames_per_demo) < 1:
        raise ConfigError(f"frames_per_demo={frames_per_demo!r}, expected >= 1")
    goals, sources = [], []
    for episode in load_demos(demo_dir):
        pixels = np.asarray(episode.obs["pixels"])  # (T+1, 3, H, W); pixels[t+1] follows step t
        after_success = np.nonzero(np.asarray(episode.success))[0] + 1
        goals.extend(pixels[after_success[-int(frames_per_demo):]].transpose(0, 2, 3, 1))
        sources.append(pixels[0].transpose(1, 2, 0))
    return np.ascontiguousarray(np.stack(goals)), np.ascontiguousarray(np.stack(sources))


def image_goals(path: str | Path) -> np.ndarray:
    """uint8 [N, H, W, 3] goal images from a folder of PNG/JPEG files (sorted by name, all one size) or an npz with
    a ``goals`` array. Not LfVoid's method unless the images were generated by an editing model."""
    from PIL import Image

    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        return load_goal_set(p).goals if _has_key(p, "meta") else _npz_goals(p)
    if not p.is_dir():
        raise ConfigError(f"images={str(path)!r} is neither a directory of images nor an .npz file")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"images={str(path)!r} holds no {'/'.join(_IMAGE_SUFFIXES)} files")
    images = [np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ConfigError(f"images={str(path)!r} holds images of several sizes {sorted(shapes)}, expected one size")
    return np.stack(images)


def _has_key(path: Path, key: str) -> bool:
    return key in read_npz(path, ConfigError, "goal npz")


def _npz_goals(path: Path) -> np.ndarray:
    data = read_npz(path, ConfigError, "goal npz")
    if "goals" not in data:
        raise ConfigError(f"{path}: no 'goals' array (keys {list(data)}), expected uint8 [N, H, W, 3] goals")
    return _check_images(data["goals"], f"{path}: 'goals'")


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

    def __init__(self, goals: str | None = None, ensemble_size: int = 5, image_size: int = 64, channels: int = 32,
                 lr: float = 3e-4, train_batch_size: int = 64, updates_per_call: int = 1, update_every: int = 2,
                 min_negatives: int = 64, buffer_size: int = 5000, shift_pad: int = 4, bootstrap: bool = True,
                 reward_type: str = "prob", success_threshold: float | None = None, batch_size: int = 64,
                 seed: int = 0, device: str = "cpu"):
        self._validate_args(ensemble_size, image_size, train_batch_size, updates_per_call, update_every,
                            buffer_size, shift_pad, reward_type, min_negatives)
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
    def _validate_args(ensemble_size: int, image_size: int, train_batch_size: int, updates_per_call: int,
                       update_every: int, buffer_size: int, shift_pad: int, reward_type: str,
                       min_negatives: int) -> None:
        positive = {"ensemble_size": ensemble_size, "image_size": image_size, "train_batch_size": train_batch_size,
                    "update_every": update_every, "buffer_size": buffer_size, "min_negatives": min_negatives}
        for key, value in positive.items():
            if isinstance(value, bool) or int(value) < 1:
                raise ConfigError(f"reward.{key}={value!r}, expected a positive int")
        if int(train_batch_size) < 2:
            raise ConfigError(f"reward.train_batch_size={train_batch_size!r}, expected >= 2 (goals and negatives)")
        if int(updates_per_call) < 0 or int(shift_pad) < 0:
            raise ConfigError(f"reward.updates_per_call={updates_per_call!r} / shift_pad={shift_pad!r}, expected >= 0")
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
    def predicts_success(self) -> bool:
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


# ------------------------------------------------------------------------------------------------ CLI
GOALS_USAGE = ("robotrl goals generate env=metaworld/<task> instruction=\"...\" [n=8 seed=0 out=DIR "
               "model=timbrooks/instruct-pix2pix steps=100 image_guidance_scale=1.5 guidance_scale=7.5 "
               "resolution=512 size=256 cache_dir=DIR device=auto] | source=demos [demos=DIR frames_per_demo=1] | "
               "source=images images=DIR_OR_NPZ")
GOALS_DEFAULTS: dict[str, Any] = {
    "env": None, "instruction": None, "n": 8, "seed": 0, "out": None, "source": "diffusion",
    "model": DEFAULT_MODEL, "cache_dir": None, "steps": 100, "image_guidance_scale": 1.5, "guidance_scale": 7.5,
    "resolution": 512, "size": 256, "device": "auto", "demos": None, "images": None, "frames_per_demo": 1,
    "camera": None,
}


def _env_cfg(opts: dict[str, Any]) -> Any:
    """The composed ``env`` config for ``env=<suite>/<task>`` (same path as ``robotrl train``)."""
    from hydra import compose, initialize_config_module

    from robotrl.cli import check_group_choices

    if not opts["env"]:
        raise ConfigError(f"robotrl goals generate source={opts['source']} needs env=<suite>/<task>; usage: "
                          + GOALS_USAGE)
    check_group_choices([f"env={opts['env']}"])
    overrides = [f"env={opts['env']}"] + ([f"env.camera={opts['camera']}"] if opts["camera"] else [])
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        return compose("config", overrides=overrides).env


def _generate_diffusion(opts: dict[str, Any], out: Path) -> Path:
    if not opts["instruction"]:
        raise ConfigError("robotrl goals generate source=diffusion needs instruction=\"...\" (the goal edit)")
    env_cfg = _env_cfg(opts)
    settings = EditSettings(opts["steps"], opts["image_guidance_scale"], opts["guidance_scale"], opts["seed"],
                            opts["resolution"])
    settings.validate()
    pipe = load_edit_pipeline(opts["model"], opts["cache_dir"], opts["device"])  # fail before rendering
    frames = initial_frames(env_cfg, opts["n"], opts["seed"], opts["size"])
    return generate_goals(frames, opts["instruction"], out, pipeline=pipe, model=opts["model"], settings=settings,
                          extra_meta={"env": opts["env"], "env_seed": opts["seed"], "render_size": opts["size"]})


def _generate_offline(opts: dict[str, Any], out: Path) -> Path:
    note = "NOT LfVoid: true goal observations, an upper-bound/ablation goal source"
    meta: dict[str, Any] = {"source": opts["source"], "instruction": opts["instruction"], "note": note}
    if opts["source"] == "images":
        if not opts["images"]:
            raise ConfigError("robotrl goals generate source=images needs images=DIR (PNG/JPEG files) or FILE.npz")
        goals = image_goals(opts["images"])
        sources = np.zeros((0, *goals.shape[1:]), np.uint8)
        meta.update(method="user-supplied goal images", images=str(opts["images"]))
        return save_goal_set(out, goals, sources, meta)
    demo_dir = opts["demos"]
    if not demo_dir:
        from robotrl.envs.demos import generate_demos

        demo_dir = generate_demos(_env_cfg(opts), opts["n"], opts["seed"], out / "demos")
    goals, sources = demo_goals(demo_dir, opts["frames_per_demo"])
    meta.update(method="final successful frames of scripted-expert demos", demos=str(demo_dir), env=opts["env"],
                frames_per_demo=opts["frames_per_demo"])
    return save_goal_set(out, goals, sources, meta)


def goals_main(args: list[str]) -> int:
    """``robotrl goals generate key=value ...``: write a goal set (see :data:`GOALS_USAGE`); 0 on success."""
    from robotrl.cli import parse_kv

    if not args or args[0] != "generate":
        raise ConfigError(f"robotrl goals needs the subcommand 'generate', got {args[:1]}; usage: {GOALS_USAGE}")
    opts = parse_kv(args[1:], GOALS_DEFAULTS)
    if opts["source"] not in SOURCES:
        raise ConfigError(f"source={opts['source']!r} is not one of {', '.join(SOURCES)}")
    name = (opts["env"] or "images").replace("/", "-")
    out = Path(opts["out"] or f"goals/{name}-{opts['source']}")
    path = _generate_diffusion(opts, out) if opts["source"] == "diffusion" else _generate_offline(opts, out)
    goal_set = load_goal_set(path)
    print(f"wrote {len(goal_set.goals)} goal images {goal_set.goals.shape[1:]} ({opts['source']}) to {path} "
          f"(PNGs in {path.parent / 'png'})")
    return 0


__all__ = ["DEFAULT_MODEL", "EditSettings", "EnsembleDiscriminator", "GoalSet", "LfVoidReward", "demo_goals",
           "edit_frames", "generate_goals", "goals_main", "image_goals", "initial_frames", "load_edit_pipeline",
           "load_goal_set", "save_goal_set"]
