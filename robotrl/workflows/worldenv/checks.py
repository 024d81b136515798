"""The World-Env settings a later stage would trip over, checked by ``load_config`` before any of them is saved to
``config.yaml`` (a bad value kept there would fail every following command): types and ranges, and changes
against what the run directory already holds (collected episodes, a checkpoint of another shape, a stage state
past the requested steps), judged against the settings that folder recorded (``<folder>/config.yaml``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robotrl.errors import ConfigError

# key -> the smallest allowed integer (None: any integer)
INTS: dict[str, int | None] = {
    "seed": None, "torch_threads": 0, "image_size": 16, "max_episode_steps": 1, "action_repeat": 1,
    "collect.demos_per_task": 1, "collect.noisy_per_task": 0, "collect.policy_per_task": 0,
    "collect.random_per_task": 0, "vla.chunk": 1, "vla.hidden": 1, "vla.steps": 1, "vla.batch_size": 1,
    "vla.snapshot_every": 0, "model.denoise_steps": 1, "model.context": 1, "model.latent_channels": 1,
    "model.hidden": 1, "model.horizon": 1, "model.steps": 1, "model.batch_size": 1, "model.holdout_every": 0,
    "reflector.hidden": 1, "reflector.steps": 1, "reflector.batch_size": 2, "post_train.iterations": 0,
    "post_train.group": 2, "post_train.starts_per_iter": 1, "post_train.horizon": 1, "post_train.epochs": 1,
    "eval.episodes": 1, "eval.eval_seed": 0, "fidelity.episodes": 1, "fidelity.bootstrap": 1,
}
WHY = {"post_train.group": "the leave-one-out baseline needs another rollout of the same start",
       "collect.demos_per_task": "the VLA learns from the expert demos"}
# key -> (low, high, low allowed, high allowed); None: unbounded
FLOATS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "collect.noise_std": (0, None, True, False), "vla.lr": (0, None, False, False),
    "vla.init_log_scale": (None, None, False, False), "model.context_noise": (0, None, True, False),
    "model.lr": (0, None, False, False), "model.kl_weight": (0, None, True, False),
    "reflector.lr": (0, None, False, False),
    "reflector.imagined": (0, 1, True, True), "post_train.clip_eps": (0, None, False, False),
    "post_train.lr": (0, None, False, False), "post_train.bc_weight": (0, None, True, False),
    "fidelity.min_r": (-1, 1, False, True),
    **{f"{s}.grad_clip": (0, None, True, False) for s in ("vla", "model", "reflector", "post_train")},
}
LISTS: dict[str, tuple[float, float, bool, bool]] = {"fidelity.noise": (0, math.inf, True, False),
                                                    "fidelity.degrade": (0, 1, True, False)}


DYNAMICS = ("latent", "diffusion")  # model.dynamics: the world models train-model can build
TRIVIAL_KINDS = ("random", "zero")  # the trivial policies beside every World-Env success number (TrivialActor)

def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if hasattr(node, "get") else None
    return node


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _range(low: float | None, high: float | None, low_ok: bool, high_ok: bool) -> str:
    parts = ([f"{'>=' if low_ok else '>'} {low:g}"] if low is not None else []) + (
        [f"{'<=' if high_ok else '<'} {high:g}"] if high is not None and math.isfinite(high) else [])
    return " and ".join(parts) or "finite"


def _in_range(v: float, low: float | None, high: float | None, low_ok: bool, high_ok: bool) -> bool:
    return ((low is None or v > low or (low_ok and v == low))
            and (high is None or v < high or (high_ok and v == high)))


def check_numbers(cfg: Any) -> None:
    """Every integer setting an integer in range, every real one a finite number in range (one line each)."""
    for key, low in INTS.items():
        v = _get(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or (low is not None and v < low):
            want = "an integer" + (f" >= {low}" if low is not None else "")
            raise ConfigError(f"{key}={v!r}, expected {want}" + (f" ({WHY[key]})" if key in WHY else ""))
    if cfg.model.holdout_every == 1:
        raise ConfigError("model.holdout_every=1 would hold out every episode, leaving none to train the world model "
                          "on; expected 0 (none held out) or >= 2 (every N-th episode held out)")
    for key, (low, high, low_ok, high_ok) in FLOATS.items():
        v = _get(cfg, key)
        if not _is_number(v) or not _in_range(float(v), low, high, low_ok, high_ok):
            shown = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
            raise ConfigError(f"{key}={shown!r}, expected a number {_range(low, high, low_ok, high_ok)}")
    for key, (low, high, low_ok, high_ok) in LISTS.items():
        v = _get(cfg, key)
        items = list(v) if hasattr(v, "__len__") and not isinstance(v, str) else None
        if items is None or not all(_is_number(x) and _in_range(float(x), low, high, low_ok, high_ok) for x in items):
            raise ConfigError(f"{key}={items if items is not None else v!r}, expected a list of numbers "
                              f"{_range(low, high, low_ok, high_ok)}")
    blocks = cfg.model.block_channels
    if not len(blocks) or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in blocks):
        raise ConfigError(f"model.block_channels={list(blocks)}, expected a list of channel counts >= 1")


def check_config(cfg: Any) -> None:
    """The settings' types and ranges, then the ones named after choices (consecutive, trivial, dynamics)."""
    check_numbers(cfg)
    r = cfg.reflector
    if str(r.consecutive) != "auto" and not (str(r.consecutive).isdigit() and int(r.consecutive) >= 1):
        raise ConfigError(f"reflector.consecutive={r.consecutive!r}, expected auto or frames in a row >= 1")
    if str(r.threshold) != "auto" and not (_is_number(r.threshold) and 0 < float(r.threshold) < 1):
        raise ConfigError(f"reflector.threshold={r.threshold!r}, expected auto or a number > 0 and < 1")
    for key in ("eval.trivial", "fidelity.trivial"):
        section, name = key.split(".")
        bad = [k for k in cfg[section][name] if k not in TRIVIAL_KINDS]
        if bad:
            raise ConfigError(f"{key}={bad}, expected trivial policies among {list(TRIVIAL_KINDS)}")
    if cfg.model.get("dynamics", "latent") not in DYNAMICS:
        raise ConfigError(f"model.dynamics={cfg.model.dynamics!r}, expected one of {list(DYNAMICS)}")
    for task in cfg.tasks:  # the VLA and the reflector read it: an empty one fails them only stages later
        text = cfg.instructions[task]
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"instructions.{task}={text!r}, expected the task's instruction (a non-empty text)")


# what a run directory already holds (its folder, files that mark it made) -> the settings it was made with
FROZEN: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("data", ("data/*/*/meta.json",), ("image_size", "max_episode_steps", "action_repeat", "camera")),
    ("vla", ("vla/checkpoints/*", "vla/vla.pt"), ("vla.chunk", "vla.hidden", "clip.model_name", "clip.model_cfg")),
    ("model", ("model/checkpoints/*", "model/model.pt"),
     ("model.dynamics", "model.context", "model.latent_channels", "model.block_channels", "model.hidden")),
    ("reflector", ("reflector/checkpoints/*", "reflector/reflector.pt"),
     ("reflector.hidden", "reflector.finetune_visual", "clip.model_name", "clip.model_cfg")),
)
# the folder of each kind of collected episodes and the setting that counts them per task
COLLECTED = (("expert", "collect.demos_per_task"), ("noisy", "collect.noisy_per_task"),
             ("random", "collect.random_per_task"), ("policy", "collect.policy_per_task"))
# the step counter of each stage's state and the setting that ends the stage
COUNTERS = (("vla.steps", "vla", "step"), ("model.steps", "model", "step"), ("reflector.steps", "reflector", "step"),
            ("post_train.iterations", "post", "iteration"))


def check_against_run(out: Path, saved: Any, after: Any, recorded: Callable[[Path, str], Any]) -> None:
    """Refuse a changed setting that what ``out`` holds was made with (the settings its folder recorded, else
    ``saved``: the run's carried ones), and a step count below a stage's state: both used to fail later with a
    traceback or silently mix runs. ``recorded(out, folder)``: what a folder recorded (``settings.recorded_settings``,
    handed in: it composes through ``settings``, which imports this module)."""
    from omegaconf import OmegaConf

    from robotrl.workflows.worldenv.fit import stage_counter

    def plain(v: Any) -> Any:
        return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v

    for folder, marks, keys in FROZEN:
        before = recorded(out, folder) or saved
        if before is None or not any(any(out.glob(m)) for m in marks):
            continue
        for key in keys:
            old, new = plain(_get(before, key)), plain(_get(after, key))
            if old != new:
                where = f"the episodes collected under {out / folder}" if folder == "data" else str(out / folder)
                raise ConfigError(f"{key}={new!r} differs from {old!r}, with which {where} was made; set it back, "
                                  f"or use a new out=DIR (or delete {out / folder})")
    for kind, key in COLLECTED:  # a finished collection is never redone: another count would silently keep it
        for meta in sorted(out.glob(f"data/{kind}/*/meta.json")):
            had, new = _collected_count(meta), _get(after, key)
            if had is not None and had != new:
                raise ConfigError(f"{key}={new}, but {meta.parent} holds {had} episodes, collected with {key}="
                                  f"{had}; set it back, delete {meta.parent.parent} to collect that kind again, or "
                                  f"use a new out=DIR")
    for key, folder, counter in COUNTERS:
        done = stage_counter(out / folder, counter)
        new = _get(after, key)
        if done is not None and done > new:
            raise ConfigError(f"{key}={new}, but {out / folder} is already at {counter} {done}; expected >= {done} "
                              f"(the stage continues from there) or a new out=DIR")


def _collected_count(meta: Path) -> int | None:
    """How many episodes a finished collection's ``meta.json`` says it holds (None: unreadable, not counted)."""
    try:
        n = json.loads(meta.read_text()).get("num_episodes")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) else None
