"""``robotrl demos``: Meta-World scripted-expert demonstrations, or LIBERO's own demo file converted, in robotrl's
demo format (``robotrl/demos.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robotrl.commands import Args, Command, options
from robotrl.errors import ConfigError
from robotrl.overrides import check_group_choices, compose_config

DEMO_DEFAULTS: dict[str, Any] = {"env": None, "episodes": 5, "seed": 0, "out": None, "image_size": 84,
                                 "frame_stack": 3, "action_repeat": 2, "camera": None, "libero_dataset": None,
                                 "image_convention": None}
DEMO_DOCS = {
    "env": "metaworld/<task> (required unless libero_dataset=; `robotrl envs metaworld` lists them)",
    "episodes": "successful episodes to save (failed attempts are retried with the next seed); "
                "libero_dataset: the first N demos (default all)",
    "seed": "first attempt's reset seed (attempt j uses seed + j)",
    "out": "output dir (default demos/<suite>-<task>)",
    "image_size": "pixel size of the saved frames (env.image_size)",
    "frame_stack": "env.frame_stack recorded in meta.json (frames are stored once, stacks rebuilt on load)",
    "action_repeat": "env.action_repeat: the expert acts once per agent step",
    "camera": "env.camera (null: the suite's default); libero_dataset: agentview and/or robot0_eye_in_hand, "
              "comma-separated",
    "libero_dataset": "convert LIBERO's own <task>_demo.hdf5 (downloaded separately) instead of running an expert; "
                      "image_size defaults to the file's (LIBERO's 128) (robotrl.libero_dataset)",
    "image_convention": "libero_dataset: opengl | opencv, overrides the file's macros_image_convention",
}



def _libero_demos(args: Args) -> int:
    """``robotrl demos libero_dataset=PATH``: LIBERO's demo file -> robotrl's demo format (with its instruction)."""
    from robotrl.libero_dataset import import_libero, task_name

    opts, given = args.opts, args.given()
    unused = sorted(given & {"env", "seed", "frame_stack", "action_repeat"})
    if unused:
        raise ConfigError(f"libero_dataset= converts recorded demos; {', '.join(unused)}= does not apply to it")
    path = Path(opts["libero_dataset"])
    out = Path(opts["out"] or f"demos/libero-{task_name(path)}")
    meta = import_libero(path, out, cameras=opts["camera"].split(",") if opts["camera"] else None,
                         image_size=opts["image_size"] if "image_size" in given else None,
                         episodes=opts["episodes"] if "episodes" in given else None,
                         image_convention=opts["image_convention"])
    print(f"wrote {meta['num_episodes']} LIBERO demos of {meta['task']!r} ({meta['instruction']!r}) to {out}")
    return 0


def write_demos(args: Args) -> int:
    """``robotrl demos env=metaworld/<task>``: scripted-expert demos (or ``libero_dataset=``: a conversion)."""
    from robotrl.envs.demos import generate_demos

    opts = args.opts
    if opts["libero_dataset"] is not None:
        return _libero_demos(args)
    if opts["image_convention"] is not None:
        raise ConfigError("image_convention= applies only to libero_dataset=")
    if opts["env"] is None:
        raise ConfigError("robotrl demos needs env=metaworld/<task> (see `robotrl envs metaworld`)")
    check_group_choices([f"env={opts['env']}"])
    overrides = [f"env={opts['env']}"] + [f"env.{k}={opts[k]}" for k in ("image_size", "frame_stack",
                                                                          "action_repeat")]
    if opts["camera"]:
        overrides.append(f"env.camera={opts['camera']}")
    cfg = compose_config(overrides)
    out = Path(opts["out"] or f"demos/{opts['env'].replace('/', '-')}")
    path = generate_demos(cfg.env, opts["episodes"], opts["seed"], out)
    print(f"wrote {opts['episodes']} successful demos to {path}")
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
DEMO_RANGES = {
    "episodes": "positive_int", "seed": "nonneg_int", "image_size": "positive_int", "frame_stack": "positive_int",
    "action_repeat": "positive_int"
}


COMMAND = Command(
    name="demos", summary="scripted-expert demos, or LIBERO's demo file converted",
    usage="robotrl demos env=metaworld/<task> | libero_dataset=FILE [key=value ...]",
    about="Write Meta-World scripted-expert demonstrations, or convert LIBERO's own demo file, in robotrl's demo "
          "format.",
    run=write_demos, options=options(DEMO_DEFAULTS, DEMO_DOCS, DEMO_RANGES),
    examples=("robotrl demos env=metaworld/reach episodes=5",
              "robotrl demos env=metaworld/push image_size=64 out=demos/push",
              "robotrl demos libero_dataset=libero_goal/open_the_middle_drawer_of_the_cabinet_demo.hdf5 "
              "out=demos/drawer"))
