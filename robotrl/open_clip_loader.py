"""Loading open_clip models (core: the CLIP rewards, the reflector and the VLA agent all build their backbone here).

``pretrained`` is an open_clip tag (resolved from the local Hugging Face cache, ``cache_dir`` or HF_HOME, before any
download is tried) or a local checkpoint file. Without weights loading fails with one line saying how to provide
them, unless ``allow_random_weights`` (smoke tests only: then the weights are random, and a warning says so).
``key`` is the config group the settings came from (``reward``, ``agent``), named in the error messages.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from robotrl.errors import ConfigError

log = logging.getLogger(__name__)


def register_model_cfg(model_name: str, model_cfg: dict[str, Any], key: str = "reward") -> None:
    """Register a custom open_clip architecture (e.g. a tiny test model) under ``model_name``."""
    import open_clip

    if model_name in open_clip.list_models() and open_clip.get_model_config(model_name) != model_cfg:
        raise ConfigError(f"{key}.model_cfg would redefine open_clip's built-in model {model_name!r}; "
                          f"give the custom architecture another {key}.model_name")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ConfigError(f"{key}.model_cfg for {model_name!r} lacks {missing} (an open_clip model config)")
    # open_clip reads the json once into its registry (later rescans merge), so the folder need not outlive the call
    with tempfile.TemporaryDirectory(prefix="robotrl_open_clip_cfg_") as folder:
        (Path(folder) / f"{model_name}.json").write_text(json.dumps(model_cfg))
        open_clip.add_model_config(folder)


def hub_reachable(timeout: float = 2.0) -> bool:
    """False offline (HF_HUB_OFFLINE or no route to the hub): open_clip's own download retries for ~50 s."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cached_weights(pretrained_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local file open_clip would download for a tag, if it is already cached (HF cache or url cache)."""
    if "file" in pretrained_cfg and os.path.isfile(pretrained_cfg["file"]):
        return pretrained_cfg["file"]
    hub = pretrained_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename]
        if filename.endswith(".bin"):  # open_clip prefers the safetensors alternative
            candidates.insert(0, filename.replace("pytorch_model.bin", "model.safetensors"))
        for name in candidates:
            path = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    url = pretrained_cfg.get("url", "")
    if url:
        root = cache_dir or os.path.expanduser("~/.cache/clip")
        path = os.path.join(root, os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def how_to_provide(model_name: str, pretrained: Any, pretrained_cfg: dict[str, Any] | None,
                   key: str = "reward") -> str:
    where = ""
    if pretrained_cfg and pretrained_cfg.get("hf_hub"):
        where = f" (Hugging Face repo {pretrained_cfg['hf_hub'].rstrip('/')})"
    return (f"provide weights for open_clip model {model_name!r}, pretrained={pretrained!r}{where}: "
            f"{key}.pretrained=/path/to/open_clip_model.safetensors (a local checkpoint), or pre-download the tag "
            f"into the Hugging Face cache (HF_HOME, or {key}.cache_dir=<dir>), or {key}.allow_random_weights=true "
            f"for smoke tests (random weights, meaningless outputs)")


def resolve_weights(model_name: str, pretrained: str | None, cache_dir: str | None = None,
                    allow_random_weights: bool = False, key: str = "reward",
                    ) -> tuple[str | None, dict[str, Any], dict[str, Any] | None]:
    """(weights file or tag to load, open_clip kwargs, the tag's pretrained config) without building the model, or
    the one-line ConfigError that loading would raise (so a workflow can fail before minutes of other work)."""
    import open_clip

    schema = model_name.startswith(("hf-hub:", "local-dir:"))
    if not schema and model_name not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {key}.model_name={model_name!r}; open_clip.list_models() has "
                          f"e.g. ViT-B-32, ViT-L-14, ViT-H-14, ViT-bigG-14 (or pass {key}.model_cfg)")
    kwargs: dict[str, Any] = {}
    weights, missing = None, None
    pretrained_cfg: dict[str, Any] | None = None
    if schema:
        weights, kwargs = None, {"pretrained": pretrained, "cache_dir": cache_dir}
    elif not pretrained:
        missing = f"{key}.pretrained is null"
    elif os.path.isfile(str(pretrained)):
        weights = str(pretrained)
    else:
        pretrained_cfg = open_clip.get_pretrained_cfg(model_name, str(pretrained))
        if not pretrained_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            missing = f"{key}.pretrained={pretrained!r} is neither a file nor an open_clip tag of {model_name!r} " \
                      f"(tags: {tags})"
            if not allow_random_weights:
                raise ConfigError(f"{missing}; " + how_to_provide(model_name, pretrained, None, key))
    if pretrained_cfg:
        kwargs["force_preprocess_cfg"] = {k: pretrained_cfg[k] for k in
                                          ("mean", "std", "interpolation", "resize_mode") if k in pretrained_cfg}
        kwargs["force_quick_gelu"] = bool(pretrained_cfg.get("quick_gelu", False))
        weights = cached_weights(pretrained_cfg, cache_dir)
        if weights is None:
            if hub_reachable():
                weights = str(pretrained)  # let open_clip download the tag
                kwargs["cache_dir"] = cache_dir
            else:
                missing = "not in the local cache and the hub is unreachable (offline)"
    if missing is not None:
        if not allow_random_weights:
            raise ConfigError(f"no weights for {key} model {model_name!r}: {missing}; "
                              + how_to_provide(model_name, pretrained, pretrained_cfg, key))
        log.warning("%s model %s: %s; using RANDOM weights (%s.allow_random_weights=true): its outputs are "
                    "meaningless, for smoke tests only", key, model_name, missing, key)
    return weights, kwargs, pretrained_cfg


def load_open_clip(model_name: str, pretrained: str | None, cache_dir: str | None = None,
                   allow_random_weights: bool = False, key: str = "reward") -> tuple[torch.nn.Module, Any, str]:
    """(model in eval mode on cpu, tokenizer, description of the weights loaded) or a one-line ConfigError."""
    import open_clip

    weights, kwargs, pretrained_cfg = resolve_weights(model_name, pretrained, cache_dir, allow_random_weights, key)
    schema = model_name.startswith(("hf-hub:", "local-dir:"))
    try:
        if schema:
            model = open_clip.create_model(model_name, **kwargs)
        else:
            model = open_clip.create_model(model_name, pretrained=weights, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if not allow_random_weights or weights is None:
            raise ConfigError(f"could not load weights for {key} model {model_name!r} ({first}); "
                              + how_to_provide(model_name, pretrained, pretrained_cfg, key)) from e
        log.warning("%s model %s: %s; using RANDOM weights (%s.allow_random_weights=true)", key, model_name, first, key)
        kwargs.pop("cache_dir", None)
        model, weights = open_clip.create_model(model_name, pretrained=None, **kwargs), None
    model.eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(model_name), str(weights) if weights else "random"


def build_clip(model_name: str, pretrained: str | None, model_cfg: dict | None = None, cache_dir: str | None = None,
               allow_random_weights: bool = False, key: str = "reward") -> tuple[torch.nn.Module, Any, str]:
    """(open_clip model, tokenizer, what weights were loaded), registering ``model_cfg`` as ``model_name`` first."""
    if model_cfg:
        register_model_cfg(model_name, dict(model_cfg), key)
    return load_open_clip(model_name, pretrained, cache_dir, allow_random_weights, key)


def check_clip_weights(model_name: str, pretrained: str | None, model_cfg: dict | None = None,
                       cache_dir: str | None = None, allow_random_weights: bool = False, key: str = "reward") -> None:
    """Raise the one-line ConfigError :func:`build_clip` would raise for missing weights, without building it."""
    if model_cfg:
        register_model_cfg(model_name, dict(model_cfg), key)
    resolve_weights(model_name, pretrained, cache_dir, allow_random_weights, key)


def vision_size(clip: torch.nn.Module) -> int:
    """The square input size of an open_clip model's vision tower."""
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


__all__ = ["build_clip", "cached_weights", "check_clip_weights", "how_to_provide", "hub_reachable", "load_open_clip",
           "register_model_cfg", "resolve_weights", "vision_size"]
