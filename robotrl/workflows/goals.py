"""``robotrl goals generate``: make an LfVoid goal set from an env's real initial frames (diffusion editing) or
from offline sources (scripted-expert demos, an image folder).

The workflow renders the env (:func:`initial_frames`), generates demos when asked, and hands the frames to the goal
sources in :mod:`robotrl.rewards.lfvoid_goals`; the goal set format is :mod:`robotrl.rewards.lfvoid`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robotrl.commands import Args, Command, options
from robotrl.errors import ConfigError
from robotrl.overrides import check_group_choices, compose_config
from robotrl.rewards.base import render_rgb
from robotrl.rewards.lfvoid import GOALS_FILE, load_goal_set, save_goal_set
from robotrl.rewards.lfvoid_goals import (
    DEFAULT_MODEL,
    SOURCES,
    EditSettings,
    demo_goals,
    generate_goals,
    image_goals,
    load_edit_pipeline,
)


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


# ------------------------------------------------------------------------------------------------ command
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
    if not opts["env"]:
        raise ConfigError(f"robotrl goals generate source={opts['source']} needs env=<suite>/<task>; usage: "
                          + GOALS_USAGE)
    check_group_choices([f"env={opts['env']}"])
    overrides = [f"env={opts['env']}"] + ([f"env.camera={opts['camera']}"] if opts["camera"] else [])
    return compose_config(overrides).env


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


def generate_goal_set(opts: dict[str, Any]) -> Path:
    """``robotrl goals generate``: write a goal set from ``opts`` (the keys of :data:`GOALS_DEFAULTS`, parsed by
    the CLI), print where, and return the npz path."""
    if opts["source"] not in SOURCES:
        raise ConfigError(f"source={opts['source']!r} is not one of {', '.join(SOURCES)}")
    name = (opts["env"] or "images").replace("/", "-")
    out = Path(opts["out"] or f"goals/{name}-{opts['source']}")
    if (out / GOALS_FILE).is_file():  # checked before any (diffusion) work; a goal set is never written over
        count = load_goal_set(out).goals.shape[0]
        raise ConfigError(f"out={out} already holds a goal set ({count} goals, {out / GOALS_FILE}); a new one is "
                          f"never written over it: choose another out= or move that one")
    path = _generate_diffusion(opts, out) if opts["source"] == "diffusion" else _generate_offline(opts, out)
    goal_set = load_goal_set(path)
    print(f"wrote {len(goal_set.goals)} goal images {goal_set.goals.shape[1:]} ({opts['source']}) to {path} "
          f"(PNGs in {path.parent / 'png'})")
    return path


# ------------------------------------------------------------------------------------------------ the command
GOALS_DOCS = {
    "env": "<suite>/<task> whose initial frames are edited (source=diffusion) or whose expert makes demos",
    "instruction": "the goal edit, e.g. \"open the drawer\" (required for source=diffusion)",
    "n": "number of goal images (initial frames, or demos to generate)",
    "seed": "reset seed of the first frame / demo (frame i uses seed + i)",
    "out": "output dir for goals.npz and png/ (default goals/<env>-<source>)",
    "source": "diffusion (LfVoid) | demos (expert success frames) | images (a folder or npz): not LfVoid",
    "model": "diffusers InstructPix2Pix pipeline: a local dir or a Hugging Face repo id in the local cache",
    "cache_dir": "Hugging Face cache dir to look the model up in (default HF_HOME)",
    "steps": "diffusion steps",
    "image_guidance_scale": "how closely the edit follows the source frame",
    "guidance_scale": "how closely the edit follows the instruction",
    "resolution": "edit resolution (a multiple of 8); goals are resized back to size",
    "size": "rendered frame size (pixels)",
    "device": "auto | cpu | cuda | cuda:N",
    "demos": "source=demos: an existing demo dir (default: generate n demos into out/demos)",
    "images": "source=images: a folder of PNG/JPEG files or an npz with 'goals'",
    "frames_per_demo": "source=demos: last successful frames taken from each demo",
    "camera": "env.camera for rendering (null: the suite's default)",
}


def run_goals(args: Args) -> int:
    """``robotrl goals generate key=value ...``: write an LfVoid goal set."""
    if args.positional != ["generate"]:
        raise ConfigError(f"robotrl goals needs the subcommand 'generate', got {args.positional[:1]}; usage: "
                          f"{GOALS_USAGE}")
    generate_goal_set(args.opts)
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
GOALS_RANGES = {
    "n": "positive_int", "seed": "nonneg_int", "steps": "positive_int", "image_guidance_scale": "nonneg",
    "guidance_scale": "nonneg", "resolution": "positive_int", "size": "positive_int", "frames_per_demo": "positive_int"
}


COMMAND = Command(
    name="goals", summary="LfVoid goal images (a diffusers editing model, or offline sources)",
    usage="robotrl goals generate [key=value ...]",
    about="Make LfVoid goal images: edit an env's real initial frames with a text instruction through a diffusers "
          "editing model,\nor take goals from scripted-expert demos / an image folder (offline sources, not the "
          "paper's method).",
    run=run_goals, options=options(GOALS_DEFAULTS, GOALS_DOCS, GOALS_RANGES), positional="generate",
    examples=("robotrl goals generate env=metaworld/drawer-open instruction=\"open the drawer\" n=8 out=goals/drawer",
              "robotrl goals generate env=metaworld/reach source=demos n=4",
              "robotrl goals generate source=images images=my_goals/ out=goals/mine"))
