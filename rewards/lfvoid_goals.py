"""LfVoid's goal sources: goal images edited from real frames by a diffusers pipeline, or offline goals.

**Diffusion editing** (:func:`generate_goals`): each real initial frame is edited with a text instruction through a
diffusers image-editing pipeline (default InstructPix2Pix, ``timbrooks/instruct-pix2pix``) and the result saved as a
goal set (:func:`robotrl.rewards.lfvoid.save_goal_set`). Weights for the editing model are never downloaded silently
offline: a local pipeline directory (``save_pretrained`` layout) or a repo id already in the Hugging Face cache is
loaded with ``local_files_only``; otherwise :func:`load_edit_pipeline` fails in one line naming the model id and how
to provide it.

**Offline sources (NOT the paper's method)**: :func:`demo_goals` (final successful frames of demos in robotrl's demo
format) and :func:`image_goals` (a folder or npz of images). The ``robotrl goals generate`` command that renders the
frames and picks a source is :mod:`robotrl.workflows.goals`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from robotrl.rewards.clip import _hub_reachable
from robotrl.rewards.lfvoid import _check_images, load_goal_set, save_goal_set

from robotrl.config import resolve_device
from robotrl.demos import load_demos
from robotrl.errors import ConfigError
from robotrl.readers import read_npz

DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
SOURCES = ("diffusion", "demos", "images")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
