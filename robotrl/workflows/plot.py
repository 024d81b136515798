"""Learning curves of one or more runs against frames and wall-clock, aggregated over seeds as rliable does.

Runs are grouped by (env, agent) read from each run's ``run.json``; at every evaluation frame the group's score is
the interquartile mean (IQM) over seeds with a stratified-bootstrap 95% confidence band (rliable). Wall-clock is the
median over seeds of the elapsed time at that frame. ``source="train"`` plots a training-time metric instead (one
``train.csv`` row per episode, e.g. ``actor_dormant_ratio``); seeds whose episodes end at different frames are
linearly interpolated onto the first run's frames.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure renders itself (Agg for png): no pyplot, no process-wide backend

from robotrl.commands import Args, Command, Option
from robotrl.errors import ConfigError
from robotrl.readers import read_json

SOURCES = ("eval", "train")


def read_eval(run_dir: Path, metric: str = "episode_return",
              source: str = "eval") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, metric values, elapsed seconds) from ``run_dir/eval.csv`` (or ``train.csv`` with source="train")."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r}, expected one of {SOURCES}")
    path = Path(run_dir) / f"{source}.csv"
    if not path.exists():
        raise ValueError(f"{path} does not exist (expected a run directory written by `robotrl train`)")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(metric, "") != ""]
    if not rows:
        raise ValueError(f"{path} has no {metric!r} values")
    return tuple(np.array([float(r[k]) for r in rows]) for k in ("frame", metric, "elapsed"))  # type: ignore


def run_seed(run_dir: Path) -> int | None:
    """The run's seed from its ``run.json`` (None when there is none)."""
    info_path = Path(run_dir) / "run.json"
    if not info_path.exists():
        return None
    return read_json(info_path, ConfigError, "run.json")["config"].get("seed")


def count_text(seeds: list[int | None]) -> str:
    """"3 seeds" only when the runs have 3 different seeds; repeated seeds are runs, not seeds."""
    n, distinct = len(seeds), len(set(seeds))
    if None in seeds or distinct == n:
        return f"{n} seed{'s' if n > 1 else ''}" if None not in seeds else f"{n} run{'s' if n > 1 else ''}"
    return f"{n} runs, {distinct} distinct seed{'s' if distinct > 1 else ''} ({', '.join(map(str, seeds))})"


def group_label(run_dir: Path) -> str:
    info_path = Path(run_dir) / "run.json"
    if not info_path.exists():
        return Path(run_dir).name
    cfg = read_json(info_path, ConfigError, "run.json")["config"]
    reward = (cfg.get("reward") or {}).get("name", "env")
    return f"{cfg['agent']['name']} on {cfg['env']['name']}" + ("" if reward == "env" else f", reward={reward}")


def iqm_with_ci(scores: np.ndarray, reps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """IQM over runs per frame (``scores``: runs x frames) and its 95% bootstrap CI (2 x frames)."""
    from scipy.stats import trim_mean

    def iqm_per_frame(x: np.ndarray) -> np.ndarray:  # rliable's aggregate_iqm, per frame
        return np.array([trim_mean(x[..., i], proportiontocut=0.25, axis=None) for i in range(x.shape[-1])])

    runs_tasks = scores[:, None, :]  # rliable wants runs x tasks (x frames)
    if reps <= 0 or scores.shape[0] < 2:  # no bootstrap: the band is the min-max over runs
        return iqm_per_frame(runs_tasks), np.stack([scores.min(0), scores.max(0)])
    return bootstrap_ci(runs_tasks, iqm_per_frame, reps, seed)


def bootstrap_ci(scores: np.ndarray, func: Callable[[np.ndarray], np.ndarray], reps: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """rliable's 95% stratified-bootstrap CI of ``func(scores)`` (``scores``: runs x tasks (x ...)), reproducible.

    rliable's ``StratifiedBootstrap`` draws its resamples from numpy's global RNG, not the ``random_state`` it is
    given, so the global RNG is seeded for the call and restored after it."""
    from rliable import library as rly

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # rliable passes arch a RandomState, which arch now deprecates
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = rly.get_interval_estimates({"g": scores}, func, reps=reps,
                                                         random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    return point["g"], interval["g"]


def align_runs(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, runs x frames values, runs x frames elapsed) on the first run's frames that every run covers,
    other runs interpolated linearly (identity for evaluations, which happen at the same frames in every seed)."""
    lo, hi = max(r[0][0] for r in runs), min(r[0][-1] for r in runs)
    frames = runs[0][0][(runs[0][0] >= lo) & (runs[0][0] <= hi)]
    values = np.stack([np.interp(frames, r[0], r[1]) for r in runs])
    elapsed = np.stack([np.interp(frames, r[0], r[2]) for r in runs])
    return frames, values, elapsed


def plot_runs(run_dirs: list[Path], out: Path, metric: str = "episode_return", reps: int = 2000,
              source: str = "eval") -> dict:
    """Draw IQM curves (frames and wall-clock panels) for runs grouped by (agent, env); return the numbers."""
    groups: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = defaultdict(list)
    seeds: dict[str, list[int | None]] = defaultdict(list)
    for run in run_dirs:
        groups[group_label(run)].append(read_eval(run, metric, source))
        seeds[group_label(run)].append(run_seed(run))
    fig = Figure(figsize=(11, 4))
    ax_f, ax_t = fig.subplots(1, 2)
    numbers = {}
    for label, runs in groups.items():
        frames, scores, elapsed = align_runs(runs)
        wall = np.median(elapsed, axis=0) / 60
        point, ci = iqm_with_ci(scores, reps)
        name = f"{label} ({count_text(seeds[label])})"
        for ax, x in ((ax_f, frames), (ax_t, wall)):
            ax.plot(x, point, label=name)
            ax.fill_between(x, ci[0], ci[1], alpha=0.25)
        numbers[label] = {"seeds": len(runs), "count": count_text(seeds[label]), "frames": frames.tolist(),
                          "iqm": point.tolist(), "ci_low": ci[0].tolist(), "ci_high": ci[1].tolist()}
    ax_f.set_xlabel("env frames")
    ax_t.set_xlabel("wall-clock (min, median over seeds)")
    several = any(n["seeds"] > 1 for n in numbers.values())
    for ax in (ax_f, ax_t):
        ax.set_ylabel(f"{source} {metric}" + (" (IQM over seeds, 95% CI)" if several else ""))
        ax.grid(alpha=0.3)
    ax_f.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(out)
    return numbers


# ------------------------------------------------------------------------------------------------ the command
def run_plot(args: Args) -> int:
    """``robotrl plot RUN_DIR...``: the curves' PNG and each group's final IQM with its CI."""
    opts = args.opts
    if opts["source"] not in SOURCES:
        raise ConfigError(f"robotrl plot: argument --source: invalid choice: {opts['source']!r} (choose from "
                          f"{', '.join(map(repr, SOURCES))})")
    try:
        numbers = plot_runs([Path(r) for r in args.positional], Path(opts["out"]), opts["metric"], opts["reps"],
                            opts["source"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for label, n in numbers.items():
        print(f"{label}: {n['count']}, final IQM {n['iqm'][-1]:.4g} "
              f"[{n['ci_low'][-1]:.4g}, {n['ci_high'][-1]:.4g}] at {n['frames'][-1]:.0f} frames")
    print(f"wrote {opts['out']}")
    return 0


COMMAND = Command(
    name="plot", summary="IQM learning curves over seeds (rliable)",
    usage="robotrl plot RUN_DIR... [--out PNG] [--metric episode_return] [--reps N] [--source eval|train]",
    about="IQM learning curves over seeds (rliable)", run=run_plot, positional="RUN_DIR...",
    options={"out": Option("curves.png", "output PNG"),
             "metric": Option("episode_return", "the column plotted"),
             "reps": Option(2000, "bootstrap resamples (0: no CI)", "nonneg_int"),
             "source": Option("eval", "eval.csv (evaluations) or train.csv (per training episode, e.g. "
                                      "actor_dormant_ratio)")},
    examples=("robotrl plot runs/dmc/cartpole_swingup/drqv2/seed* --out curves.png",))
