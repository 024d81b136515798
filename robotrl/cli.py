"""`robotrl` command line: train (hydra), eval, envs, plot, report, demos, goals, reward-eval, deploy, serve,
sim2real, check-frame, record, replay, worldenv.

    robotrl train [key=value ...]            e.g. agent=drqv2 env=dmc/cartpole_swingup seed=1; -m for sweeps
    robotrl train                            (no arguments) the embedded CPU quickstart: experiment=quickstart
    robotrl eval checkpoint=PATH [episodes=10 seed=1000000 min_success=0.8 min_return=... video=true out=DIR
                                             baselines=true]
    robotrl envs [SUITE]                     list every env name
    robotrl plot RUN_DIR... [--out PNG] [--metric episode_return]
    robotrl report SWEEP_DIR... [out=DIR]     per task and agent: IQM + 95% CI over seeds, frames, wall-clock (MD + PNG)
    robotrl demos env=metaworld/reach [episodes=5 seed=0 out=DIR image_size=84 ...]
    robotrl demos libero_dataset=PATH/<task>_demo.hdf5 out=DIR [image_size=128 camera=agentview ...]
    robotrl goals generate env=metaworld/<task> instruction="..." [source=diffusion|demos|images n=8 out=DIR ...]
                                             LfVoid goal images (a diffusers editing model, or offline sources)
    robotrl reward-eval env=metaworld/<task> reward=clip,kagi [episodes=... out=DIR]
                                             reward quality report: expert/noisy/near-miss/random rollouts
    robotrl deploy checkpoint=PATH robot=sim [hz=20 episodes=1 steps=N dry_run=false record=DIR robot.KEY=VALUE]
                                             run a policy on a robot through the safety layer (--help: details)
    robotrl worldenv collect|train-vla|train-model|train-reflector|post-train|fidelity out=DIR [key=value ...]
                                             World-Env: a VLA post-trained inside a learned video world model
    robotrl serve checkpoint=PATH [host=127.0.0.1 port=50051 token=... max_message_bytes=4194304 device=auto]
                                             gRPC policy server for `robotrl deploy server=HOST:PORT`
    robotrl sim2real checkpoint=PATH [robots=sim,franka ROBOT.KEY=VALUE episodes=3 ...]
                                             sim-to-real gap report: one policy, same seeds, several robots
    robotrl check-frame robot=NAME [robot.KEY=VALUE distance_m=0.03 ...]
                                             check robot.frame_map on the arm (home + a move along each axis)
    robotrl record robot=NAME teleop=DEVICE task="..." episodes=N out=DIR [resume=true export=DIR ...]
                                             teleoperated demos through the safety layer (demo format + LeRobot v3)
    robotrl replay episode=DIR/episode_000000.npz robot=NAME
                                             play a recorded episode back; report the proprioception drift


`robotrl <command> --help` lists a command's keys with their defaults and examples. Bad input exits with code 2 and
one line `robotrl: error: ...`; a failed `eval` gate exits with 1.

This is the only module that parses a command line: it turns arguments into typed options and calls a workflow
(`robotrl.workflows.*`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

from robotrl.errors import ConfigError, RobotRLError, SweepJobError
from robotrl.overrides import GROUPS, check_group_choices, check_overrides, config_dir, group_options, parse_kv

HELP_FLAGS = ("-h", "--help")


def wants_help(args: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in args)


def key_help(usage: str, about: str, defaults: dict[str, Any], docs: dict[str, str], examples: list[str]) -> str:
    """Help text of a key=value command: usage, what it does, every key with its default, examples."""
    missing = set(defaults) - set(docs)
    assert not missing, f"undocumented keys {missing}"  # a key added without help is a bug caught by the tests
    width = max(len(f"{k}={_fmt(v)}") for k, v in defaults.items()) + 2
    keys = [f"  {f'{k}={_fmt(v)}':<{width}}{docs[k]}" for k, v in defaults.items()]
    return "\n".join([f"usage: {usage}", "", about, "", "keys (key=value, shown with their defaults):", *keys, "",
                      "examples:", *(f"  {e}" for e in examples)])


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ------------------------------------------------------------------------------------------------ train
TRAIN_EXAMPLES = [
    "robotrl train                                       # the CPU quickstart (experiment=quickstart)",
    "robotrl train agent=drqv2 env=dmc/walker_walk seed=1 # paper settings for the task",
    "robotrl train env=metaworld/reach env.image_size=64 agent.batch_size=128 torch_threads=1",
    "robotrl train -m env=dmc/cartpole_swingup seed=1,2,3  # hydra multirun: one run per seed",
    "robotrl train -m seed=1,2,3 hydra/launcher=slurm    # one SLURM job per seed; then: robotrl report runs",
    "robotrl train env=dmc/walker_walk seed=1 resume=true # continue from the last checkpoint",
    "robotrl train agent=drm --cfg job                    # print the composed config (every key) and exit",
]


def _yaml_comments() -> dict[str, str]:
    """``key`` / ``section.key`` -> its trailing comment in configs/config.yaml (the keys' documentation)."""
    comments, section = {}, None
    for line in (config_dir() / "config.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z_]\w*):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if not match:
            continue
        indent, key, value, comment = match.groups()
        if not indent:
            section = key if not value else None
            name = key
        elif section in ("env", "replay"):
            name = f"{section}.{key}"
        else:
            continue
        comments[name] = comment or ""
    return comments


def _group_line(group: str, default: Any) -> str:
    names = group_options(group)
    if group == "env":
        counts = Counter(n.split("/")[0] for n in names if "/" in n)
        choices = ", ".join(f"{suite}/<task> ({n})" for suite, n in sorted(counts.items()))
        choices += "; `robotrl envs` lists them"
        if "libero" in names:  # one config for the optional suite: the task is chosen by keys
            choices += "; libero (optional: env.benchmark, env.task; `robotrl envs libero`)"
    else:
        choices = ", ".join(n for n in names if "/" not in n)  # reward/kagi/<plan>.yaml are KAGI plans, not rewards
    return f"  {group:<12}{choices} (default {_fmt(default)})"


def train_help() -> str:
    """``robotrl train --help``: the config groups and their choices, the main keys with defaults, examples."""
    from omegaconf import OmegaConf

    from robotrl.overrides import compose_config

    defaults: dict[str, Any] = {}
    for item in OmegaConf.load(config_dir() / "config.yaml").defaults:
        if not isinstance(item, str):
            defaults.update(OmegaConf.to_container(item))
    raw = OmegaConf.to_container(compose_config([]), resolve=False)  # keeps ${...} interpolations as written
    keys = []
    for name, comment in _yaml_comments().items():
        section, _, key = name.rpartition(".")
        node = raw.get(section, {}) if section else raw
        if name in GROUPS or key not in node or isinstance(node[key], dict):
            continue  # groups are listed above; `defaults`, `hydra`, `replay` are not keys to set
        keys.append((f"{name}={_fmt(node[key])}", comment))
    width = min(max(len(k) for k, _ in keys), 30) + 2
    keys = [f"  {k:<{width}}{c}".rstrip() for k, c in keys]
    return "\n".join([
        "usage: robotrl train [group=choice ...] [key=value ...] [-m] [hydra flags]", "",
        "Train an agent on an env (hydra config: configs/config.yaml plus one file per group choice). With no",
        "arguments it runs the embedded CPU quickstart (experiment=quickstart).", "",
        "groups (group=choice):", *(_group_line(g, defaults.get(g)) for g in GROUPS), "",
        "main keys (key=value, shown with their defaults):", *keys,
        "  agent.<key>=...  the agent's hyperparameters (e.g. agent.lr, agent.batch_size; see --cfg job)",
        "  reward.<key>=... the reward model's settings (e.g. reward.alpha for reward=clip)", "",
        "examples:", *(f"  {e}" for e in TRAIN_EXAMPLES), "",
        "hydra flags: -m/--multirun (sweeps over a,b,c values), --cfg job (print the config), --hydra-help.",
        "Launchers for -m: hydra/launcher=slurm|slurm_cpu|submitit_local|ray_local|ray_cluster (resources per job).",
        "A partly failed sweep: the same command with resume=auto (finished runs untouched, the others continued).",
        "Several GPUs for one run: torchrun --standalone --nproc_per_node=N -m robotrl.cli train agent=tdmpc2 ...",
        "Unknown keys and values of the wrong type stop the run before anything is built (exit code 2).",
    ])


_TRAIN_PLAN: Any = None  # robotrl.lifecycle.TrainPlan of a single (non-multirun) `robotrl train`


def _train_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from robotrl.config import validate_config
    from robotrl.lifecycle import plan_job, remove_failed_start, resume_command
    from robotrl.workflows.sweep_launchers import submitit_resume
    from robotrl.workflows.train import Trainer

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    trainer = None
    try:
        # resume=true|auto on a finished run changes nothing (a sweep job, or a single run with hydra flags: the
        # single run's pre-start check did this already); resume=auto starts a run that has no checkpoint
        validate_config(cfg)
        job = plan_job(run_dir, submitit_resume(run_dir, cfg.resume), cfg.frames, cfg.env.action_repeat)
        if job.complete:
            print(job.complete)
            return
        with open_dict(cfg):
            cfg.resume = job.resume
        trainer = Trainer(cfg, run_dir)
        trainer.train()
    except RobotRLError as e:
        if hydra_cfg.mode == RunMode.MULTIRUN and not str(hydra_cfg.launcher._target_).endswith("BasicLauncher"):
            # this sweep job runs in another process or on another host (submitit, Ray): its error goes back to
            # `robotrl train` in the job's result and is printed there in one line; the job's own log gets it too
            print(f"robotrl: error: {e}", file=sys.stderr)
            raise SweepJobError(f"sweep job #{hydra_cfg.job.num} ({run_dir}): {e}") from None
        if _TRAIN_PLAN is not None and not (run_dir / "run.json").exists():  # failed before training started
            remove_failed_start(_TRAIN_PLAN)
        print_error(e, refusal=trainer is None)
        sys.exit(2)
    except KeyboardInterrupt:
        if (run_dir / "checkpoints" / "latest").exists():
            hint = f"the last checkpoint is intact; continue this run with: {resume_command(run_dir)}"
        elif _TRAIN_PLAN is not None:
            again = shlex.join(["robotrl", "train", *_TRAIN_PLAN.overrides])
            hint = f"no checkpoint was written yet; start this run again from scratch with: {again}"
        else:
            hint = f"no checkpoint was written yet in {run_dir}; the same command starts it again from scratch"
        print(f"robotrl: interrupted; {hint}", file=sys.stderr)
        sys.exit(130)


def torchrun_rank() -> int:
    """This process's rank under torchrun (0 without it)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def print_error(error: Exception, refusal: bool = True) -> None:
    """``robotrl: error: ...`` on stderr. Under torchrun every rank meets the same refusal (a bad config, an agent
    without a data-parallel learner): rank 0 alone prints it; an error during training names its rank."""
    rank = torchrun_rank()
    if rank > 0 and refusal:
        return
    print(f"robotrl: error: {f'rank {rank}: ' if rank else ''}{error}", file=sys.stderr)


def train(args: list[str]) -> int:
    import hydra

    from robotrl.lifecycle import plan_train

    global _TRAIN_PLAN
    if wants_help(args):
        print(train_help())
        return 0
    if not args:
        print("robotrl train: no arguments, running the embedded CPU quickstart (experiment=quickstart)")
        args = ["experiment=quickstart"]
    # hydra's own flags (-m, --cfg job, ...) pass through; every key=value is checked here, in one line
    check_overrides([a for a in args if "=" in a and not a.startswith("-")])
    if any(a.startswith("hydra/launcher=") for a in args):
        from robotrl.workflows.sweep_launchers import check_launcher

        args = check_launcher(args)  # e.g. hydra/launcher=slurm without SLURM: before Hydra writes anything
    if not any(a.startswith(("-", "hydra.")) for a in args):  # multirun/hydra flags: the Trainer checks each job
        _TRAIN_PLAN = plan_train(args)  # refuses a start before Hydra writes anything in the run dir
        if _TRAIN_PLAN.complete:
            print(_TRAIN_PLAN.complete)
            return 0
        args = _TRAIN_PLAN.overrides
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0:
        # torchrun: rank 0 alone writes the run dir's .hydra/
        args = [*args, "hydra.output_subdir=null"]
    sys.argv = ["robotrl train", *args]
    # Hydra prints a job's exception as a traceback and exits 1; with HYDRA_FULL_ERROR it re-raises it instead, so a
    # RobotRLError of a sweep job (in this process, a submitit job or a Ray task) reaches main()'s one-line handler
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(config_path="pkg://robotrl.configs", config_name="config", version_base="1.3")(_train_task)()
    except Exception as e:
        from hydra.errors import HydraException

        if isinstance(e, HydraException):  # e.g. hydra/launcher=<unknown>: Hydra's message, on one line
            message = " ".join(str(e).split("Config search path")[0].split())
            raise ConfigError(f"hydra: {message}") from None
        failure = _launcher_failure(e)
        if failure is None:
            raise
        raise failure from e
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    return 0


def _launcher_failure(error: Exception) -> SweepJobError | None:
    """A job that died without a result (killed, out of memory, past its time limit) under the submitit or Ray
    launcher, as one line; None for any other exception."""
    engine = type(error).__module__.split(".")[0]
    if engine not in ("submitit", "ray"):
        return None
    if engine == "submitit":
        from robotrl.workflows.sweep_launchers import submitit_failure

        named = submitit_failure(error)  # its job number, run dir and real log file
        if named is not None:
            return named
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    where = "hydra.sweep.dir/.submitit/<job id>/ (stderr, stdout)" if engine == "submitit" else "Ray's driver output"
    return SweepJobError(f"a sweep job failed under the {engine} launcher: {type(error).__name__}: "
                         f"{lines[0] if lines else 'no message'}; its log: {where}")


# ------------------------------------------------------------------------------------------------ eval
EVAL_DEFAULTS: dict[str, Any] = {"checkpoint": None, "episodes": 10, "seed": 1_000_000, "min_success": -1.0,
                                 "min_return": float("-inf"), "video": True, "out": None, "device": "auto",
                                 "baselines": True}
EVAL_DOCS = {
    "checkpoint": "a run dir, its checkpoints/ dir or one checkpoint dir (required)",
    "episodes": "evaluation episodes; episode i resets with seed + i",
    "seed": "first episode's seed (the trainer's eval seeds start at 1000000)",
    "min_success": "exit 1 if the success rate is below this (tasks with a success signal only)",
    "min_return": "exit 1 if the mean return is below this",
    "video": "write an mp4 of the first episode",
    "baselines": "also play uniform random and constant actions on the same seeds, and warn if they are not beaten",
    "out": "output dir for episodes.jsonl, summary.json, video.mp4 (default <checkpoint>/eval)",
    "device": "auto | cpu | cuda | cuda:N",
}


def evaluate(args: list[str]) -> int:
    """Evaluate a checkpoint on seeded episodes; exit code 1 if below ``min_success``/``min_return``."""
    if wants_help(args):
        print(key_help("robotrl eval checkpoint=PATH [key=value ...]",
                       "Play a checkpoint's policy on seeded episodes and gate on success rate or return.",
                       EVAL_DEFAULTS, EVAL_DOCS,
                       ["robotrl eval checkpoint=runs/metaworld/reach/drqv2/seed3 episodes=20 min_success=0.8",
                        "robotrl eval checkpoint=runs/dmc/walker_walk/drqv2/seed1 min_return=900 video=false"]))
        return 0
    from robotrl.workflows.evaluate import evaluate_checkpoint

    opts = parse_kv(args, EVAL_DEFAULTS)
    if opts["checkpoint"] is None:
        raise ConfigError("robotrl eval needs checkpoint=PATH (a run dir, its checkpoints/ dir or one checkpoint)")
    summary = evaluate_checkpoint(**opts)
    print(json.dumps(summary, indent=1))
    print(f"wrote {summary['out']}/summary.json, episodes.jsonl" + (", video.mp4" if opts["video"] else ""))
    if "vs_baselines" in summary and not summary["vs_baselines"]["beats_all"]:
        print(f"robotrl: warning: the policy's return ({summary['return_mean']:.1f}) is not clearly above "
              f"{', '.join(summary['vs_baselines']['not_beaten'])} on the same seeds (see \"baselines\"): it may "
              f"be saturated or stuck, not learning", file=sys.stderr)
    if not summary["passed"]:
        print(f"robotrl eval: below the gate: {'; '.join(summary['failed_gates'])}", file=sys.stderr)
    return 0 if summary["passed"] else 1


# ------------------------------------------------------------------------------------------------ others
SUITES = ("dmc", "metaworld", "gym")


def envs(args: list[str]) -> int:
    if wants_help(args):
        print("usage: robotrl envs [SUITE ...]\n\nList the env names (the choices of env=), all suites or only "
              f"SUITE ({', '.join(SUITES)}, or libero: the optional LIBERO suite's tasks, env=libero "
              "env.benchmark=B env.task=T; needs pip install 'robotrl[libero]')."
              "\n\nexamples:\n  robotrl envs\n  robotrl envs metaworld\n  robotrl envs libero")
        return 0
    from robotrl.envs import list_envs

    names = [n for n in list_envs() if not args or n.split("/")[0] in args] if set(args) != {"libero"} else []
    if "libero" in args:
        from robotrl.envs.libero import list_tasks

        names += list_tasks()
    if not names:
        raise ConfigError(f"unknown suite {args}; expected one of {', '.join(SUITES)}, libero")
    print("\n".join(names))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with robotrl's error style: one ConfigError line (exit 2 in main) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def plot(args: list[str]) -> int:
    from robotrl.workflows.plot import SOURCES, plot_runs

    parser = OneLineParser(prog="robotrl plot", description="IQM learning curves over seeds (rliable)",
                            epilog="example: robotrl plot runs/dmc/cartpole_swingup/drqv2/seed* --out curves.png")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    parser.add_argument("--metric", default="episode_return")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (0: no CI)")
    parser.add_argument("--source", choices=SOURCES, default="eval",
                        help="eval.csv (evaluations) or train.csv (per training episode, e.g. actor_dormant_ratio)")
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:  # --help printed its text
        return int(e.code or 0)
    try:
        numbers = plot_runs(ns.runs, ns.out, ns.metric, ns.reps, ns.source)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for label, n in numbers.items():
        print(f"{label}: {n['count']}, final IQM {n['iqm'][-1]:.4g} "
              f"[{n['ci_low'][-1]:.4g}, {n['ci_high'][-1]:.4g}] at {n['frames'][-1]:.0f} frames")
    print(f"wrote {ns.out}")
    return 0


def report(args: list[str]) -> int:
    """``robotrl report SWEEP_DIR...``: Markdown + PNG summary of a sweep's runs."""
    from robotrl.workflows.report import write_report

    parser = OneLineParser(prog="robotrl report",
                            description="One table per task over the runs found under SWEEP_DIR (multirun dirs or run "
                                        "dirs): per agent, the IQM over seeds of the final eval return and success "
                                        "with 95% bootstrap CIs (rliable), frames and wall-clock; plus plots.",
                            epilog="example: robotrl train -m seed=1,2,3 hydra/launcher=slurm && robotrl report runs")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default SWEEP_DIR/report); or out=DIR")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (0: no CI); or reps=N")
    # out=DIR and reps=N, as every other robotrl command takes its options
    args = [a for arg in args for a in ([f"--{arg.partition('=')[0]}", arg.partition("=")[2]]
                                          if arg.startswith(("out=", "reps=")) else [arg])]
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:  # --help printed its text
        return int(e.code or 0)
    result = write_report(ns.sweep_dirs, ns.out, ns.reps)
    for row in result["groups"]:
        ret = row["return"]
        print(f"{row['env']} / {row['agent']}: {row['runs']} runs (seeds {', '.join(map(str, row['seeds']))}), "
              f"final return IQM {ret['iqm']:.4g} [{ret['ci_low']:.4g}, {ret['ci_high']:.4g}]")
    for point in result["missing"]:
        print(f"missing sweep point: {point['overrides']} ({point['state']}: {point['run_dir']})")
    print(f"wrote {result['out']}/report.md, report.json, final.png, curves_*.png")
    return 0


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


def _libero_demos(args: list[str], opts: dict[str, Any]) -> int:
    """``robotrl demos libero_dataset=PATH``: LIBERO's demo file -> robotrl's demo format (with its instruction)."""
    from robotrl.libero_dataset import import_libero, task_name

    given = {a.partition("=")[0] for a in args}
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


def demos(args: list[str]) -> int:
    if wants_help(args):
        print(key_help("robotrl demos env=metaworld/<task> | libero_dataset=FILE [key=value ...]",
                       "Write Meta-World scripted-expert demonstrations, or convert LIBERO's own demo file, "
                       "in robotrl's demo format.",
                       DEMO_DEFAULTS, DEMO_DOCS, ["robotrl demos env=metaworld/reach episodes=5",
                                                  "robotrl demos env=metaworld/push image_size=64 out=demos/push",
                                                  "robotrl demos libero_dataset=libero_goal/"
                                                  "open_the_middle_drawer_of_the_cabinet_demo.hdf5 out=demos/drawer"]))
        return 0
    from robotrl.envs.demos import generate_demos
    from robotrl.overrides import compose_config

    opts = parse_kv(args, DEMO_DEFAULTS)
    if opts["libero_dataset"] is not None:
        return _libero_demos(args, opts)
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


def goals(args: list[str]) -> int:
    """``robotrl goals generate key=value ...``: write an LfVoid goal set."""
    from robotrl.workflows.goals import GOALS_DEFAULTS, GOALS_USAGE, generate_goal_set

    if wants_help(args):
        print(key_help("robotrl goals generate [key=value ...]",
                       "Make LfVoid goal images: edit an env's real initial frames with a text instruction through a "
                       "diffusers editing model,\nor take goals from scripted-expert demos / an image folder "
                       "(offline sources, not the paper's method).", GOALS_DEFAULTS, GOALS_DOCS,
                       ["robotrl goals generate env=metaworld/drawer-open instruction=\"open the drawer\" n=8 "
                        "out=goals/drawer",
                        "robotrl goals generate env=metaworld/reach source=demos n=4",
                        "robotrl goals generate source=images images=my_goals/ out=goals/mine"]))
        return 0
    if not args or args[0] != "generate":
        raise ConfigError(f"robotrl goals needs the subcommand 'generate', got {args[:1]}; usage: {GOALS_USAGE}")
    generate_goal_set(parse_kv(args[1:], GOALS_DEFAULTS))
    return 0


REPORT_DOCS = {
    "env": "metaworld/<task> (required: the scripted expert needs Meta-World)",
    "reward": "comma-separated reward configs to score (env, the simulator's reward, is always the reference row)",
    "episodes": "episodes per policy (expert, noisy, near-miss, random)",
    "seed": "first reset seed",
    "max_steps": "simulator steps per episode",
    "render_size": "frame size shown to the models (0: the largest reward.render_size asked for, else 64)",
    "noise": "comma-separated action-noise stddevs of the noisy experts",
    "gamma": "discount of the EPIC canonicalisation",
    "out": "output dir for report.json and report.png (default reward_eval/<env>)",
    "recordings": "comma-separated recorded episode dirs (demo format, e.g. robot runs): score those instead of "
                  "simulator rollouts",
}


def reward_eval(args: list[str]) -> int:
    """``robotrl reward-eval``: the reward quality report."""
    from robotrl.workflows.reward_eval.command import PASSTHROUGH, REPORT_DEFAULTS, run_reward_eval

    if wants_help(args):
        text = key_help("robotrl reward-eval env=metaworld/<task> reward=a[,b] [key=value ...] [env.*=... "
                        "reward.*=... device=...]",
                        "Score reward models on rollouts of known quality (scripted expert, noisy experts, near-miss, "
                        "random):\nvalue-order Spearman, Kendall tau, EPIC distance, success F1, near-miss gap.",
                        REPORT_DEFAULTS, REPORT_DOCS,
                        ["robotrl reward-eval env=metaworld/push reward=kagi,clip_tiny episodes=20 out=reports/push",
                         "robotrl reward-eval env=metaworld/reach reward=clip_tiny reward.alpha=0.5 env.camera=corner"])
        print(text + "\n\nenv.KEY=..., reward.KEY=... and device=... are passed to the composed configs.")
        return 0
    passthrough = [a for a in args if a.startswith(PASSTHROUGH)]
    opts = parse_kv([a for a in args if not a.startswith(PASSTHROUGH)], REPORT_DEFAULTS)
    run_reward_eval(opts, passthrough, ["robotrl", "reward-eval", *args])
    return 0


def deploy(args: list[str]) -> int:
    """Run a policy on a robot; ``robot.KEY=VALUE`` arguments override the robot config."""
    from robotrl.workflows.deploy import DEPLOY_DEFAULTS, DEPLOY_HELP
    from robotrl.workflows.deploy import deploy as run_deploy

    if wants_help(args):
        print(DEPLOY_HELP)
        return 0
    robot = {a.split("=", 1)[0].removeprefix("robot."): a.partition("=")[2] for a in args if a.startswith("robot.")}
    opts = parse_kv([a for a in args if not a.startswith("robot.")], DEPLOY_DEFAULTS)
    try:
        print(json.dumps(run_deploy(**opts, robot_overrides=robot), indent=1))
    except KeyboardInterrupt as exc:  # the arm was stopped and disconnected first; the line says so (or what failed)
        print(f"robotrl: {exc or 'deploy interrupted (Ctrl-C)'}", file=sys.stderr)
        return 130
    return 0


def check_frame(args: list[str]) -> int:
    """``robotrl check-frame``: the robot's frame map checked on the arm (home, then a move along each axis)."""
    from robotrl.workflows.frame_check import FRAME_CHECK_DEFAULTS, FRAME_CHECK_DOCS, run_frame_check

    if wants_help(args):
        print(key_help("robotrl check-frame robot=NAME [robot.KEY=VALUE ...] [key=value ...]",
                       "Check robot.frame_map (the training env's frame on the arm's) before a policy runs: the\n"
                       "measured home in the policy frame, and a move along each policy axis read back.",
                       FRAME_CHECK_DEFAULTS, FRAME_CHECK_DOCS,
                       ["robotrl check-frame robot=franka robot.hostname=172.16.0.2",
                        "robotrl check-frame robot=sim robot.task=push distance_m=0.05"]))
        return 0
    robot = {a.split("=", 1)[0].removeprefix("robot."): a.partition("=")[2] for a in args if a.startswith("robot.")}
    opts = parse_kv([a for a in args if not a.startswith("robot.")], FRAME_CHECK_DEFAULTS)
    run_frame_check(**opts, robot_overrides=robot)
    return 0


def _split_prefixed(args: list[str], prefixes: tuple[str, ...]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """``PREFIX.KEY=VALUE`` arguments grouped by prefix, and the rest."""
    grouped: dict[str, dict[str, str]] = {p: {} for p in prefixes}
    plain = []
    for arg in args:
        key, _, value = arg.partition("=")
        prefix, dot, rest = key.partition(".")
        if dot and prefix in grouped:
            grouped[prefix][rest] = value
        else:
            plain.append(arg)
    return plain, grouped


def record(args: list[str]) -> int:
    """``robotrl record``: teleoperated demonstrations through the safety layer."""
    from robotrl.workflows.record import EXAMPLES, RECORD_DEFAULTS, RECORD_DOCS
    from robotrl.workflows.record import record as run_record

    if wants_help(args):
        print(key_help('robotrl record robot=NAME teleop=DEVICE task="..." episodes=N out=DIR [robot.KEY=VALUE '
                       "teleop.KEY=VALUE env.KEY=VALUE ...]",
                       "Record teleoperated demonstrations on an arm, every command through its safety layer: a reset\n"
                       "phase, labels (success/failure keys), re-record and discard keys, crash-safe episodes in the\n"
                       "robotrl demo format, resume=true after Ctrl-C, a LeRobotDataset v3 export at the end.",
                       RECORD_DEFAULTS, RECORD_DOCS, EXAMPLES))
        return 0
    plain, grouped = _split_prefixed(args, ("robot", "teleop", "env"))
    opts = parse_kv(plain, RECORD_DEFAULTS)
    try:
        print(json.dumps(run_record(**opts, overrides=grouped), indent=1))
    except KeyboardInterrupt as exc:  # the arm is held and disconnected, the completed episodes are on disk
        print(f"robotrl: {exc or 'record interrupted (Ctrl-C)'}", file=sys.stderr)
        return 130
    return 0


def replay(args: list[str]) -> int:
    """``robotrl replay``: a recorded episode played back through the safety layer; the drift report."""
    from robotrl.workflows.replay_episode import REPLAY_DEFAULTS, REPLAY_DOCS, ReplayDriftError
    from robotrl.workflows.replay_episode import replay as run_replay

    if wants_help(args):
        print(key_help("robotrl replay episode=DIR/episode_NNNNNN.npz robot=NAME [robot.KEY=VALUE ...]",
                       "Play a recorded episode's executed actions back on a robot through its safety layer (same\n"
                       "env settings and reset seed) and report how far its proprioception drifts from the recording.",
                       REPLAY_DEFAULTS, REPLAY_DOCS,
                       ["robotrl replay episode=demos/sim-reach/episode_000000.npz robot=sim max_drift_m=0.005"]))
        return 0
    plain, grouped = _split_prefixed(args, ("robot",))
    try:
        run_replay(**parse_kv(plain, REPLAY_DEFAULTS), robot_overrides=grouped["robot"])
    except ReplayDriftError as exc:
        print(f"robotrl: {exc}", file=sys.stderr)
        return 1
    return 0


def sim2real(args: list[str]) -> int:
    """``robotrl sim2real``: one policy and the same seeds on several robots, side by side."""
    from robotrl.workflows.sim2real import GAP_DEFAULTS, GAP_DOCS
    from robotrl.workflows.sim2real import sim2real as run_sim2real

    if wants_help(args):
        print(key_help("robotrl sim2real checkpoint=RUN [robots=sim,franka] [ROBOT.KEY=VALUE ...] [key=value ...]",
                       "The sim-to-real gap report: success, action statistics, hand motion, safety interventions "
                       "and\ntiming per robot, through RobotEnv, from the same reset seeds. ROBOT.KEY=VALUE overrides "
                       "configs/robot/ROBOT.yaml.", GAP_DEFAULTS, GAP_DOCS,
                       ["robotrl sim2real checkpoint=runs/metaworld/reach/drqv2/seed1 robots=sim,franka "
                        "franka.hostname=172.16.0.2 episodes=5"]))
        return 0
    plain = [a for a in args if "." not in a.split("=", 1)[0]]
    opts = parse_kv(plain, GAP_DEFAULTS)
    names = {n.strip() for n in str(opts["robots"]).split(",")}
    overrides: dict[str, dict[str, str]] = {}
    for arg in args:
        key, _, value = arg.partition("=")
        robot, dot, rest = key.partition(".")
        if not dot:
            continue
        if robot not in names:
            raise ConfigError(f"{key}: {robot!r} is not one of robots={opts['robots']} (override as ROBOT.KEY=VALUE)")
        overrides.setdefault(robot, {})[rest] = value
    run_sim2real(**opts, robot_overrides=overrides)
    return 0


SERVE_DOCS = {
    "checkpoint": "a run dir, its checkpoints/ dir or one checkpoint dir (required)",
    "host": "address to bind (loopback unless you mean to expose it; beyond loopback the token needs >= 16 characters)",
    "port": "TCP port",
    "token": "shared secret clients must send (default $ROBOTRL_POLICY_TOKEN)",
    "max_message_bytes": "largest request/response accepted, both ways",
    "device": "auto | cpu | cuda | cuda:N",
}


def serve(args: list[str]) -> int:
    """``robotrl serve``: a gRPC policy server for ``robotrl deploy server=HOST:PORT``."""
    from robotrl.workflows.policy_server import SERVE_DEFAULTS, run_server

    if wants_help(args):
        print(key_help("robotrl serve checkpoint=PATH [key=value ...]",
                       "Serve a checkpointed policy over gRPC (action chunks for `robotrl deploy server=HOST:PORT`).",
                       SERVE_DEFAULTS, {k: SERVE_DOCS.get(k, "") for k in SERVE_DEFAULTS},
                       ["ROBOTRL_POLICY_TOKEN=secret robotrl serve checkpoint=runs/metaworld/reach/drqv2/seed1",
                        "robotrl deploy server=127.0.0.1:50051 token=secret robot=sim   # the policy's checkpoint "
                        "is the server's"]))
        return 0
    run_server(**parse_kv(args, SERVE_DEFAULTS))
    return 0


def worldenv(args: list[str]) -> int:
    """``robotrl worldenv STAGE out=DIR key=value ...``."""
    import importlib

    from robotrl.workflows.worldenv.help import STAGES as WORLDENV_STAGES
    from robotrl.workflows.worldenv.help import worldenv_help

    if not args or wants_help(args):
        print(worldenv_help())
        return 0
    stage, rest = args[0], args[1:]
    if stage not in WORLDENV_STAGES:
        raise ConfigError(f"unknown worldenv stage {stage!r}; expected one of {', '.join(WORLDENV_STAGES)}")
    outs = [a.partition("=")[2] for a in rest if a.startswith("out=")]
    if len(outs) != 1 or not outs[0]:
        raise ConfigError(f"robotrl worldenv {stage} needs exactly one out=DIR (the World-Env run directory)")
    bad = [a for a in rest if "=" not in a]
    if bad:
        raise ConfigError(f"unexpected argument {bad[0]!r}; expected key=value (see robotrl worldenv --help)")
    module, func, _ = WORLDENV_STAGES[stage]
    run = getattr(importlib.import_module(f"robotrl.workflows.worldenv.{module}"), func)
    try:
        run(outs[0], [a for a in rest if not a.startswith("out=")])
    except KeyboardInterrupt:  # every stage checkpoints as it goes (state.pt, rows.json, one folder per collection)
        print(f"robotrl: interrupted; the last checkpoint in {outs[0]} is intact; continue with: "
              f"{shlex.join(['robotrl', 'worldenv', *args])}", file=sys.stderr)
        return 130
    return 0


COMMANDS = {"train": train, "eval": evaluate, "envs": envs, "plot": plot, "report": report, "demos": demos,
            "goals": goals, "reward-eval": reward_eval, "deploy": deploy, "serve": serve, "sim2real": sim2real,
            "check-frame": check_frame, "record": record, "replay": replay, "worldenv": worldenv}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach logs and pipes as they happen
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        print(__doc__)
        sys.exit(0)
    command, args = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise ConfigError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
        sys.exit(COMMANDS[command](args))
    except RobotRLError as e:
        print_error(e)
        sys.exit(2)


if __name__ == "__main__":
    main()
