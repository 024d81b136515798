"""``robotrl train``: hydra runs one training job (or a sweep's jobs) after every override is checked; its help lists
the config groups, their choices and the main keys with their defaults (configs/config.yaml's comments).

The command is exported as :data:`COMMAND` at the end (the registry is ``robotrl.cli``).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from robotrl.commands import Args, Command, print_error, shown, torchrun_rank
from robotrl.config import register_hydra
from robotrl.errors import ConfigError, RobotRLError, RunDirBusyError, SweepJobError
from robotrl.overrides import GROUPS, check_overrides, config_dir, group_options
from robotrl.run_lock import hold, release

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
    """``key`` / ``section.key`` -> its trailing comment in configs/config.yaml, then ``env.key`` -> its doc in the
    structured config (the keys' documentation)."""
    from robotrl.config_schema import EnvDefaults, docs_of

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
    return {**comments, **{f"env.{k}": doc for k, doc in docs_of(EnvDefaults).items()}}


def _group_line(group: str, default: Any) -> str:
    names = group_options(group)
    if group == "env":
        counts = Counter(n.split("/")[0] for n in names if "/" in n)
        choices = ", ".join(f"{suite}/<task> ({n})" for suite, n in sorted(counts.items()))
        choices += "; `robotrl envs` lists them"
        if "libero" in names:  # one config for the optional suite: the task is chosen by keys
            choices += "; libero (optional: env.benchmark, env.task; `robotrl envs libero`)"
    else:
        choices = ", ".join(names)
    return f"  {group:<12}{choices} (default {shown(default)})"


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
        keys.append((f"{name}={shown(node[key])}", comment))
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


def train_task(cfg: Any, plan: Any = None) -> None:
    """One training job as hydra runs it (a single run, or each job of a sweep). ``plan``: the
    ``robotrl.lifecycle.TrainPlan`` of a single (non-multirun) ``robotrl train``, None for a sweep job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from robotrl.config import validate_config
    from robotrl.lifecycle import check_same_point, plan_job, remove_failed_start, resume_command
    from robotrl.workflows.sweep_launchers import submitit_resume
    from robotrl.workflows.train import Trainer

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    trainer = None
    try:
        # resume=true|auto on a finished run changes nothing (a sweep job, or a single run with hydra flags: the
        # single run's pre-start check did this already); resume=auto starts a run that has no checkpoint
        validate_config(cfg)
        if torchrun_rank() == 0:  # torchrun's ranks share the run dir; rank 0 writes it
            hold(run_dir, "run dir")  # while this job runs
        resume = submitit_resume(run_dir, cfg.resume)
        if hydra_cfg.mode == RunMode.MULTIRUN and str(resume).lower() in ("true", "auto"):
            check_same_point(run_dir, list(hydra_cfg.overrides.task), cfg)
        job = plan_job(run_dir, resume, cfg.frames, cfg.env.action_repeat)
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
        busy = isinstance(e, RunDirBusyError)  # another process's run: nothing here is this start's to remove
        if plan is not None and not busy and not (run_dir / "run.json").exists():  # failed before training started
            remove_failed_start(plan)
        print_error(e, refusal=trainer is None)
        sys.exit(2)
    except KeyboardInterrupt:
        if (run_dir / "checkpoints" / "latest").exists():
            hint = f"the last checkpoint is intact; continue this run with: {resume_command(run_dir)}"
        elif plan is not None:
            again = shlex.join(["robotrl", "train", *plan.overrides])
            hint = f"no checkpoint was written yet; start this run again from scratch with: {again}"
        else:
            hint = f"no checkpoint was written yet in {run_dir}; the same command starts it again from scratch"
        print(f"robotrl: interrupted; {hint}", file=sys.stderr)
        sys.exit(130)
    finally:
        release(run_dir, remove=True)  # the job is over (a sweep's next job in this process writes another dir)


class TrainJob:
    """hydra's task: :func:`train_task` with the single run's plan (hydra calls its task with the config alone).

    A sweep job of submitit or Ray runs in another process that unpickles this task and then resolves the job's
    dir (``run_tag``) before calling it; unpickling registers what that needs (:func:`_train_job`), since
    importing robotrl registers nothing."""

    def __init__(self, plan: Any = None) -> None:
        self.plan = plan

    def __call__(self, cfg: Any) -> None:
        train_task(cfg, self.plan)

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return _train_job, (self.plan,)


def _train_job(plan: Any) -> TrainJob:
    register_hydra()
    return TrainJob(plan)


def train(parsed: Args) -> int:
    """``robotrl train [key=value ...] [hydra flags]``: checks every override, refuses a start that would overwrite
    a run before Hydra writes anything, then runs hydra with :func:`train_task`."""
    import hydra

    from robotrl.lifecycle import plan_train

    args = list(parsed.raw)
    plan = None
    if not args:
        print("robotrl train: no arguments, running the embedded CPU quickstart (experiment=quickstart)")
        args = ["experiment=quickstart"]
    # hydra's own flags (-m, --cfg job, ...) pass through; every key=value is checked here, in one line
    check_overrides([a for a in args if "=" in a and not a.startswith("-")])
    if any(a in ("-m", "--multirun") for a in args):
        from robotrl.workflows.sweep_points import check_sweep

        check_sweep([a for a in args if "=" in a and not a.startswith("-")])
    if any(a.startswith("hydra/launcher=") for a in args):
        from robotrl.workflows.sweep_launchers import check_launcher

        args = check_launcher(args)  # e.g. hydra/launcher=slurm without SLURM: before Hydra writes anything
    if not any(a.startswith(("-", "hydra.")) for a in args):  # multirun/hydra flags: the Trainer checks each job
        plan = plan_train(args)  # refuses a start before Hydra writes anything in the run dir
        if plan.complete:
            print(plan.complete)
            return 0
        args = plan.overrides
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0:
        # torchrun: rank 0 alone writes the run dir's .hydra/
        args = [*args, "hydra.output_subdir=null"]
    sys.argv = ["robotrl train", *args]
    # Hydra prints a job's exception as a traceback and exits 1; with HYDRA_FULL_ERROR it re-raises it instead, so a
    # RobotRLError of a sweep job (in this process, a submitit job or a Ray task) reaches main()'s one-line handler
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    register_hydra()  # hydra resolves the run dir (run_tag) before it calls the task
    try:
        hydra.main(config_path="pkg://robotrl.configs", config_name="config", version_base="1.3")(TrainJob(plan))()
    except Exception as e:
        from hydra.errors import HydraException

        if isinstance(e, HydraException):  # e.g. hydra/launcher=<unknown>: Hydra's message, on one line
            message = " ".join(str(e).split("Config search path")[0].split())
            raise ConfigError(f"hydra: {message}") from None
        failure = launcher_failure(e)
        if failure is None:
            raise
        raise failure from e
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    return 0


def launcher_failure(error: Exception) -> SweepJobError | None:
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


# ------------------------------------------------------------------------------------------------ the command
COMMAND = Command(
    name="train", summary="train an agent on an env (hydra config; -m for sweeps)",
    usage="robotrl train [group=choice ...] [key=value ...] [-m] [hydra flags]",
    about="Train an agent on an env (hydra config).", run=train, text=train_help)
