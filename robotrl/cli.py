"""`robotrl` command line: train (hydra), eval, envs, plot, demos.

    robotrl train [hydra overrides]          e.g. agent=drqv2 env=dmc/cartpole_swingup seed=1; -m for sweeps
    robotrl train                            (no arguments) the embedded CPU quickstart: experiment=quickstart
    robotrl eval checkpoint=PATH [episodes=10 seed=1000000 min_success=0.8 min_return=... video=true out=DIR]
    robotrl envs [SUITE]                     list every env name
    robotrl plot RUN_DIR... [--out PNG] [--metric episode_return]
    robotrl demos env=metaworld/reach [episodes=5 seed=0 out=DIR image_size=84 ...]
    robotrl goals generate env=metaworld/<task> instruction="..." [source=diffusion|demos|images n=8 out=DIR ...]
                                             LfVoid goal images (a diffusers editing model, or offline sources)
    robotrl reward-eval env=metaworld/<task> reward=clip,kagi [episodes=... out=DIR]
                                             reward quality report: expert/noisy/near-miss/random rollouts
    robotrl deploy checkpoint=PATH robot=sim [hz=20 episodes=1 steps=N dry_run=false record=DIR robot.KEY=VALUE]
                                             run a policy on a robot through the safety layer (--help: details)
    robotrl serve checkpoint=PATH [host=127.0.0.1 port=50051 token=... max_message_bytes=4194304 device=auto]
                                             gRPC policy server for `robotrl deploy server=HOST:PORT`
"""

from __future__ import annotations

import difflib
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from robotrl.errors import ConfigError, RobotRLError

GROUPS = ("agent", "env", "reward", "robot", "experiment")


def config_dir() -> Path:
    return Path(str(resources.files("robotrl.configs")))


def group_options(group: str) -> list[str]:
    root = config_dir() / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def check_group_choices(overrides: list[str]) -> None:
    """Fail early, in one line, on `group=name` overrides naming a config that does not exist."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        valid = group_options(key)
        for name in value.split(","):
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"unknown {key} {name!r}; {hint}valid {key} names: {', '.join(valid)}")


def parse_kv(args: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Parse key=value arguments into ``defaults``' keys, converting to the default's type."""
    out = dict(defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"unexpected argument {arg!r}; expected key=value with key in {', '.join(defaults)}")
        kind = type(defaults[key]) if defaults[key] is not None else str
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{key}={value!r}, expected true or false")
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = kind(value)
            except ValueError:
                raise ConfigError(f"{key}={value!r}, expected a {kind.__name__}") from None
    return out


# ------------------------------------------------------------------------------------------------ train
def _train_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from robotrl.trainer import Trainer

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        Trainer(cfg, run_dir).train()
    except RobotRLError as e:
        print(f"robotrl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if (run_dir / "checkpoints" / "latest").exists():
            hint = f"the last checkpoint in {run_dir / 'checkpoints'} is intact, continue with resume=true"
        else:
            hint = "no checkpoint was written yet, so there is nothing to resume; start again with"
        print(f"robotrl: interrupted; {hint} run_dir={run_dir}", file=sys.stderr)
        sys.exit(130)


def train(args: list[str]) -> None:
    import hydra

    check_group_choices(args)
    if not args:
        print("robotrl train: no arguments, running the embedded CPU quickstart (experiment=quickstart)")
        args = ["experiment=quickstart"]
    sys.argv = ["robotrl train", *args]
    hydra.main(config_path="pkg://robotrl.configs", config_name="config", version_base="1.3")(_train_task)()


# ------------------------------------------------------------------------------------------------ eval
EVAL_DEFAULTS: dict[str, Any] = {"checkpoint": None, "episodes": 10, "seed": 1_000_000, "min_success": -1.0,
                                 "min_return": float("-inf"), "video": True, "out": None, "device": "auto"}


def evaluate(args: list[str]) -> int:
    """Evaluate a checkpoint on seeded episodes; exit code 1 if below ``min_success``/``min_return``."""
    from robotrl.evaluate import evaluate_checkpoint

    opts = parse_kv(args, EVAL_DEFAULTS)
    if opts["checkpoint"] is None:
        raise ConfigError("robotrl eval needs checkpoint=PATH (a run dir, its checkpoints/ dir or one checkpoint)")
    summary = evaluate_checkpoint(**opts)
    print(json.dumps(summary, indent=1))
    return 0 if summary["passed"] else 1


# ------------------------------------------------------------------------------------------------ others
def envs(args: list[str]) -> int:
    from robotrl.envs import list_envs

    names = [n for n in list_envs() if not args or n.split("/")[0] in args]
    if not names:
        raise ConfigError(f"unknown suite {args}; expected one of dmc, metaworld, gym")
    print("\n".join(names))
    return 0


def plot(args: list[str]) -> int:
    import argparse

    from robotrl.plot import SOURCES, plot_runs

    parser = argparse.ArgumentParser(prog="robotrl plot", description="IQM learning curves over seeds (rliable)")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    parser.add_argument("--metric", default="episode_return")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (0: no CI)")
    parser.add_argument("--source", choices=SOURCES, default="eval",
                        help="eval.csv (evaluations) or train.csv (per training episode, e.g. actor_dormant_ratio)")
    ns = parser.parse_args(args)
    try:
        numbers = plot_runs(ns.runs, ns.out, ns.metric, ns.reps, ns.source)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for label, n in numbers.items():
        print(f"{label}: {n['seeds']} seeds, final IQM {n['iqm'][-1]:.4g} "
              f"[{n['ci_low'][-1]:.4g}, {n['ci_high'][-1]:.4g}] at {n['frames'][-1]:.0f} frames")
    print(f"wrote {ns.out}")
    return 0


DEMO_DEFAULTS: dict[str, Any] = {"env": None, "episodes": 5, "seed": 0, "out": None, "image_size": 84,
                                 "frame_stack": 3, "action_repeat": 2, "camera": None}


def demos(args: list[str]) -> int:
    from hydra import compose, initialize_config_module

    from robotrl.envs.demos import generate_demos

    opts = parse_kv(args, DEMO_DEFAULTS)
    if opts["env"] is None:
        raise ConfigError("robotrl demos needs env=metaworld/<task> (see `robotrl envs metaworld`)")
    check_group_choices([f"env={opts['env']}"])
    overrides = [f"env={opts['env']}"] + [f"env.{k}={opts[k]}" for k in ("image_size", "frame_stack",
                                                                          "action_repeat") ]
    if opts["camera"]:
        overrides.append(f"env.camera={opts['camera']}")
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    out = Path(opts["out"] or f"demos/{opts['env'].replace('/', '-')}")
    path = generate_demos(cfg.env, opts["episodes"], opts["seed"], out)
    print(f"wrote {opts['episodes']} successful demos to {path}")
    return 0


def goals(args: list[str]) -> int:
    from robotrl.rewards.lfvoid import goals_main

    return goals_main(args)


def reward_eval(args: list[str]) -> int:
    from robotrl.reward_eval import reward_eval_main

    return reward_eval_main(args)


def deploy(args: list[str]) -> int:
    """Run a policy on a robot; ``robot.KEY=VALUE`` arguments override the robot config."""
    from robotrl.deploy import DEPLOY_DEFAULTS, DEPLOY_HELP
    from robotrl.deploy import deploy as run_deploy

    if any(a in ("-h", "--help") for a in args):
        print(DEPLOY_HELP)
        return 0
    robot = {a.split("=", 1)[0].removeprefix("robot."): a.partition("=")[2] for a in args if a.startswith("robot.")}
    opts = parse_kv([a for a in args if not a.startswith("robot.")], DEPLOY_DEFAULTS)
    print(json.dumps(run_deploy(**opts, robot_overrides=robot), indent=1))
    return 0


def serve(args: list[str]) -> int:
    from robotrl.policy_server import SERVE_DEFAULTS, run_server

    run_server(**parse_kv(args, SERVE_DEFAULTS))
    return 0


COMMANDS = {"eval": evaluate, "envs": envs, "plot": plot, "demos": demos, "goals": goals, "reward-eval": reward_eval,
            "deploy": deploy, "serve": serve}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach logs and pipes as they happen
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        sys.exit(0)
    command, args = argv[0], argv[1:]
    try:
        if command == "train":
            train(args)
            return
        if command not in COMMANDS:
            raise ConfigError(f"unknown command {command!r}; expected one of train, {', '.join(COMMANDS)}")
        sys.exit(COMMANDS[command](args))
    except RobotRLError as e:
        print(f"robotrl: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
