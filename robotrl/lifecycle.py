"""The run directory's lifecycle around `robotrl train`, decided before Hydra writes anything.

- ``resume=true`` composes from the run's own saved overrides (``<run>/.hydra/overrides.yaml``), so
  ``robotrl train resume=true run_dir=DIR`` continues the run that is there (``experiment=quickstart`` included)
  whatever the original command was; overrides given now win (``frames=...`` trains longer).
- A start where checkpoints exist is refused before Hydra creates or rewrites anything in the run dir.
- ``resume=true`` on a run whose checkpoint already reached ``frames`` says it is complete and changes nothing, in a
  sweep job (:func:`plan_job`) as in a single run.
- ``resume=auto`` does what each run needs: a finished run is left as it is, a run with a checkpoint resumes, a run
  without one (never started, or stopped before its first checkpoint) starts from scratch. One command continues a
  partly failed sweep: ``robotrl train -m <the sweep's arguments> resume=auto``.
- A start that fails before training leaves no ``.hydra/`` or empty log behind in a run dir it created.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig

import robotrl.config  # noqa: F401  (registers the resolvers that run_dir uses)
from robotrl.checkpoint import resolve_checkpoint
from robotrl.commands import torchrun_rank
from robotrl.errors import CheckpointError, ConfigError
from robotrl.readers import read_yaml
from robotrl.run_lock import check_free, release

_FRAME_NAME = re.compile(r"frame_(\d+)$")


@dataclass
class TrainPlan:
    """What `robotrl train` runs: the Hydra overrides and run dir, or a message when there is nothing to do."""

    overrides: list[str]
    run_dir: Path
    created: Path | None  # the topmost dir this command will create (None: the run dir exists already)
    complete: str | None = None  # set when resume=true found the run already finished: print it, run nothing


def override_key(item: str) -> str:
    return item.lstrip("+~").partition("=")[0]


def merge_overrides(saved: list[str], new: list[str]) -> list[str]:
    """``saved`` with every key that ``new`` sets replaced by ``new``'s value (``new`` wins)."""
    keys = {override_key(item) for item in new}
    return [item for item in saved if override_key(item) not in keys] + list(new)


def compose_train_config(overrides: list[str]) -> DictConfig:
    """The training config for ``overrides``, with ``run_dir`` resolved; a bad override is a one-line ConfigError."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from robotrl.config import register_hydra

    register_hydra()
    try:
        with initialize_config_module("robotrl.configs", version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        cfg.run_dir  # noqa: B018  (resolves its interpolations here, where errors become one line)
    except (HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split())  # Hydra's messages span lines (hint, grammar link)
        raise ConfigError(f"bad override in {' '.join(overrides)!r}: {message}") from None
    return cfg


def has_checkpoint(run_dir: Path) -> bool:
    """True when ``run_dir/checkpoints`` holds a checkpoint dir (``.tmp-*`` dirs of an interrupted save don't count)."""
    root = Path(run_dir) / "checkpoints"
    return root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())


def saved_overrides(run_dir: Path) -> list[str] | None:
    """The overrides the run in ``run_dir`` was composed from (None if it has no ``.hydra/overrides.yaml``)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    saved = read_yaml(path, ConfigError, "the run's saved overrides") or []
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise ConfigError(f"{path} is not a list of overrides (expected Hydra's overrides.yaml)")
    return saved


def checkpoint_frame(run_dir: Path) -> int:
    """The env frame of the checkpoint a resume would load (from its name, ``frame_<N>``)."""
    path = resolve_checkpoint(Path(run_dir))
    match = _FRAME_NAME.search(path.name)
    if match is None:
        from robotrl.checkpoint import load_state

        state = load_state(path)
        cfg = yaml.safe_load(state["config"])
        return int(state["counters"]["step"]) * int(cfg["env"]["action_repeat"])
    return int(match.group(1))


def resume_value(overrides: list[str]) -> str:
    """The last ``resume=`` of ``overrides``, lower-cased: "true", "auto", "false" (the default) or as given."""
    values = [item.partition("=")[2].lower() for item in overrides if override_key(item) == "resume"]
    return values[-1] if values else "false"


def wants_resume(overrides: list[str]) -> bool:
    return resume_value(overrides) in ("true", "auto")


def last_frame(frames: int, action_repeat: int) -> int:
    """The frame at which training stops (it stops at agent step ``frames // action_repeat``)."""
    return int(frames) // int(action_repeat) * int(action_repeat)


@dataclass
class JobPlan:
    """What one training job (a single run or a sweep point) does with its run dir."""

    resume: bool  # the Trainer resumes from the run dir's checkpoint
    complete: str | None = None  # the run already reached its frames: print this line, change nothing


def plan_job(run_dir: Path, resume: bool | str, frames: int, action_repeat: int) -> JobPlan:
    """Decide a job's start from ``resume`` (false, true or "auto") and what ``run_dir`` holds; a resume with nothing
    to resume is a one-line CheckpointError. A start over checkpoints is refused by the Trainer itself."""
    if resume is False or str(resume).lower() == "false":
        return JobPlan(resume=False)
    if not has_checkpoint(run_dir):
        if str(resume).lower() == "auto":
            return JobPlan(resume=False)
        raise CheckpointError(f"resume=true but {Path(run_dir) / 'checkpoints'} holds no checkpoint; nothing to "
                              f"resume (without resume=true the same command starts the run from scratch; "
                              f"resume=auto does either, as each run of a sweep needs)")
    frame, last = checkpoint_frame(run_dir), last_frame(frames, action_repeat)
    if frame < last:
        return JobPlan(resume=True)
    summary = "" if (Path(run_dir) / "summary.json").is_file() else (
        " (it has no summary.json: it was stopped after its final checkpoint; `robotrl report` reads its final "
        "evaluation from eval.csv)")
    return JobPlan(resume=True, complete=(
        f"run {run_dir} is complete: its last checkpoint is at frame {frame} of frames={frames}; nothing was "
        f"changed{summary}. To train longer: {resume_command(run_dir, ' frames=<more>')}"))


# what a run learns from: a sweep point that resumes a run must have the run's values of these it overrides (other
# keys, e.g. frames, evaluation, checkpoints, devices, may change on a resume)
RUN_GROUPS = ("agent", "env", "reward", "robot", "seed", "replay")


def check_same_point(run_dir: Path, overrides: list[str], cfg: DictConfig) -> None:
    """A sweep job about to resume ``run_dir``: the run there must be this sweep point's. The run dir names env,
    agent, reward and seed, so points of a sweep over another key (``agent.lr=1e-4,3e-4``) share it, and a resume
    would continue, or call complete, the other point's run. ConfigError naming the key and both values."""
    from omegaconf import OmegaConf

    from robotrl.checkpoint import load_state

    if not has_checkpoint(run_dir):
        return
    path = resolve_checkpoint(Path(run_dir))
    saved = OmegaConf.create(load_state(path)["config"])  # numbers read as the run's config wrote them
    for item in overrides:
        key = override_key(item)
        if key.partition(".")[0] not in RUN_GROUPS:
            continue
        at = key if "." in key or key == "seed" else f"{key}.name"  # agent=drqv2: the group's choice
        mine, theirs = (OmegaConf.select(c, at, default=None) for c in (cfg, saved))
        mine, theirs = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (mine, theirs))
        if mine != theirs:
            raise ConfigError(f"{run_dir} holds the run of {at}={theirs!r}, this sweep point has {at}={mine!r}: "
                              f"points of the sweep share that run dir (it names env, agent, reward and seed); give "
                              f"each its own, e.g. hydra.sweep.subdir='${{env.name}}/${{agent.name}}-{key}${{{at}}}"
                              f"/seed${{seed}}'")


def resume_command(run_dir: Path, extra: str = "") -> str:
    return f"robotrl train resume=true run_dir={shlex.quote(str(run_dir))}{extra}"


def _first_missing(path: Path) -> Path | None:
    missing = None
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing = parent
    return missing


def plan_train(overrides: list[str]) -> TrainPlan:
    """Decide what `robotrl train OVERRIDES` does; raise a one-line error for a refused start (nothing written)."""
    cfg = compose_train_config(overrides)
    run_dir = Path(cfg.run_dir).absolute()
    if torchrun_rank() == 0:  # a live run there: refused before Hydra rewrites its .hydra/ or its logs (torchrun's
        check_free(run_dir, "run dir")  # other ranks share rank 0's run dir, which may hold it already)
    if not wants_resume(overrides):
        if has_checkpoint(run_dir):
            raise ConfigError(f"run dir {run_dir} already holds checkpoints; continue it with "
                              f"`{resume_command(run_dir)}` or pass run_dir=<new dir> to start a new run "
                              f"(nothing was changed)")
        return TrainPlan(overrides, run_dir, _first_missing(run_dir))
    saved = saved_overrides(run_dir)
    if saved is not None:  # the run's own composition; what is given now wins (e.g. frames=... to train longer)
        overrides = merge_overrides([o for o in saved if override_key(o) not in ("resume", "run_dir")],
                                    [*overrides, f"run_dir={run_dir}"])
        cfg = compose_train_config(overrides)
    job = plan_job(run_dir, resume_value(overrides), int(cfg.frames), int(cfg.env.action_repeat))
    return TrainPlan(overrides, run_dir, None if run_dir.exists() else _first_missing(run_dir), job.complete)


def remove_failed_start(plan: TrainPlan) -> None:
    """After a start that failed before training: remove what Hydra wrote (``.hydra/``, empty logs) and the run
    dir itself (and the parents it created) if nothing else is in it. A run dir that existed is left alone."""
    run_dir = plan.run_dir
    if plan.created is None or not run_dir.is_dir():
        return
    release(run_dir, remove=True)
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for log_file in run_dir.glob("*.log"):
        if log_file.stat().st_size == 0:
            log_file.unlink()
    for path in [run_dir, *run_dir.parents]:  # the run dir, then the parents this command created, while empty
        if not path.is_dir() or any(path.iterdir()):
            break
        path.rmdir()
        if path == plan.created:
            break
