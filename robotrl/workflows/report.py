"""`robotrl report SWEEP_DIR...`: one Markdown table per task over the runs of a sweep, with PNG plots.

Runs are found under each given directory (a hydra multirun dir such as ``runs/``, any folder of run dirs, or one run
dir): every directory holding a ``run.json`` written by `robotrl train` is a run; hidden folders (``.submitit``,
``.hydra``) are skipped. Runs are grouped by task (``env.name``) and agent (plus the reward model when it is not the
env's). Per group, as rliable recommends for few seeds: the interquartile mean (IQM) over seeds of the final
evaluation's mean return (and success rate where the task has one) with a stratified-bootstrap 95% confidence
interval, the frames reached and the wall-clock time. A run without ``summary.json`` (unfinished or still running) is
reported from the last row of its ``eval.csv`` and counted as incomplete; so is the final evaluation of a run whose
``summary.json`` lacks it. A sweep dir's ``multirun.yaml`` names the points the sweep asked for: those without a result
(no run dir, or no evaluation yet) are listed in the report (``missing``). Seeds are listed in numeric order.

Outputs in ``out`` (default ``SWEEP_DIR/report``): ``report.md``, ``report.json`` (the same numbers),
``final.png`` (IQM and CI of every group) and ``curves_<task>.png`` (IQM learning curves, `robotrl plot`'s).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write_text
from robotrl.commands import Args, Command, Option
from robotrl.errors import ConfigError
from robotrl.readers import read_json

METRICS = (("return", "final return"), ("success", "final success"))


@dataclass
class RunResult:
    """The final numbers of one run directory."""

    path: str
    env: str
    agent: str  # "<agent>" or "<agent>, reward=<reward>"
    seed: int | None
    final_return: float
    final_success: float | None
    frames: int
    elapsed_s: float
    complete: bool  # summary.json exists: the run reached its frames and wrote its final evaluation


def find_runs(paths: list[Path]) -> list[Path]:
    """Every run dir (a dir with ``run.json``) at or under ``paths``, sorted, hidden folders skipped."""
    found: set[Path] = set()
    for root in map(Path, paths):
        if not root.is_dir():
            raise ConfigError(f"{root} is not a directory (expected a sweep dir, e.g. runs/, or a run dir)")
        if (root / "run.json").is_file():
            found.add(root)
        for info in root.rglob("run.json"):
            if not any(part.startswith(".") for part in info.parent.relative_to(root).parts):
                found.add(info.parent)
    if not found:
        raise ConfigError(f"no runs under {', '.join(map(str, paths))} (expected dirs with a run.json written by "
                          f"`robotrl train`)")
    return sorted(found)


def _last_eval_row(run_dir: Path) -> dict[str, str] | None:
    path = run_dir / "eval.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("episode_return", "") != ""]
    return rows[-1] if rows else None


def read_run(run_dir: Path) -> RunResult | None:
    """The run's final evaluation, frames and wall-clock (None when it has not evaluated yet)."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "run.json", ConfigError, "run.json")["config"]
    reward = (cfg.get("reward") or {}).get("name", "env")
    agent = cfg["agent"]["name"] + ("" if reward == "env" else f", reward={reward}")
    common = {"path": str(run_dir), "env": cfg["env"]["name"], "agent": agent, "seed": cfg.get("seed")}
    summary_path = run_dir / "summary.json"
    summary = read_json(summary_path, ConfigError, "run summary") if summary_path.is_file() else None
    final = (summary or {}).get("final_eval")
    if final is not None:
        return RunResult(**common, final_return=float(final["return_mean"]),
                         final_success=_maybe_float(final.get("success_rate")), frames=int(summary["frames"]),
                         elapsed_s=float(summary["elapsed_s"]), complete=True)
    row = _last_eval_row(run_dir)  # unfinished, or a summary without its final evaluation: eval.csv has it
    if row is None:
        return None  # not evaluated yet (or eval_episodes=0): nothing to report
    frame = int(float(row["frame"]))
    return RunResult(**common, final_return=float(row["episode_return"]),
                     final_success=_maybe_float(row.get("success")), frames=frame, elapsed_s=float(row["elapsed"]),
                     complete=summary is not None and frame >= int(summary.get("frames", 0)))


def _maybe_float(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def iqm_ci(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """IQM over seeds and its 95% stratified-bootstrap CI (rliable); the CI is NaN for a single seed or reps=0."""
    from rliable import metrics

    from robotrl.workflows.plot import bootstrap_ci

    scores = np.asarray(values, dtype=np.float64).reshape(-1, 1)  # runs x tasks, as rliable expects
    point = float(metrics.aggregate_iqm(scores))
    if reps <= 0 or len(scores) < 2:
        return point, math.nan, math.nan
    _, interval = bootstrap_ci(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed)
    return point, float(interval[0, 0]), float(interval[1, 0])


def summarize(results: list[RunResult], reps: int = 2000) -> list[dict[str, Any]]:
    """One row per (task, agent): IQM [CI] of the final return and success, frames, wall-clock, seeds."""
    groups: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for r in results:
        groups[(r.env, r.agent)].append(r)
    rows = []
    for (env, agent), runs in sorted(groups.items()):
        runs = sorted(runs, key=_seed_order)  # seed10 after seed2 (paths sort it before)
        row: dict[str, Any] = {"env": env, "agent": agent, "runs": len(runs), "seeds": [r.seed for r in runs],
                               "incomplete": sum(not r.complete for r in runs)}
        row["return"] = dict(zip(("iqm", "ci_low", "ci_high"), iqm_ci([r.final_return for r in runs], reps),
                                 strict=True))
        successes = [r.final_success for r in runs]
        row["success"] = None if None in successes else dict(zip(("iqm", "ci_low", "ci_high"),
                                                                 iqm_ci(successes, reps), strict=True))
        frames = [r.frames for r in runs]
        minutes = [r.elapsed_s / 60 for r in runs]
        row["frames"] = {"median": float(np.median(frames)), "min": min(frames), "max": max(frames)}
        row["wall_clock_min"] = {"median": float(np.median(minutes)), "min": min(minutes), "max": max(minutes)}
        rows.append(row)
    return rows


def _seed_order(result: RunResult) -> tuple[bool, int, str]:
    return result.seed is None, result.seed if isinstance(result.seed, int) else 0, result.path


def missing_points(roots: list[Path], results: list[RunResult]) -> list[dict[str, str]]:
    """The sweep points (from each root's ``multirun.yaml``) whose run has no evaluation, as overrides + run dir."""
    from robotrl.workflows.sweep_points import sweep_points

    have = {Path(r.path).resolve() for r in results}
    missing = []
    for root in roots:
        for point in sweep_points(root) or []:
            if point.run_dir.resolve() not in have:
                state = "no evaluation yet" if (point.run_dir / "run.json").is_file() else "no run dir"
                missing.append({"overrides": point.overrides, "run_dir": str(point.run_dir), "state": state})
    return missing


def _interval(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    if math.isnan(stats["ci_low"]):
        return f"{stats['iqm']:.4g} (no CI)"
    return f"{stats['iqm']:.4g} [{stats['ci_low']:.4g}, {stats['ci_high']:.4g}]"


def _spread(stats: dict[str, float], fmt: str) -> str:
    if stats["min"] == stats["max"]:
        return format(stats["median"], fmt)
    return f"{format(stats['median'], fmt)} ({format(stats['min'], fmt)}-{format(stats['max'], fmt)})"


def markdown(rows: list[dict[str, Any]], roots: list[Path], reps: int, notes: list[str],
             missing: list[dict[str, str]] = ()) -> str:
    """The report: one table per task, a row per agent."""
    where = ", ".join(f"`{r}`" for r in roots)
    lines = ["# Sweep report", "", f"Runs under {where}. Per task and agent: interquartile "
             f"mean (IQM) over seeds of the final evaluation, with a 95% stratified-bootstrap CI ({reps} resamples, "
             "rliable; no CI with one seed); frames and wall-clock as median (min-max) over seeds.", ""]
    by_env: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_env[row["env"]].append(row)
    for env, env_rows in by_env.items():
        lines += [f"## {env}", "", "| agent | seeds | final return IQM [95% CI] | final success IQM [95% CI] | frames "
                  "| wall-clock (min) |", "|---|---|---|---|---|---|"]
        for row in env_rows:
            seeds = ", ".join(str(s) for s in row["seeds"])
            if row["incomplete"]:
                seeds += f" ({row['incomplete']} incomplete)"
            lines.append(f"| {row['agent']} | {seeds} | {_interval(row['return'])} | {_interval(row['success'])} | "
                         f"{_spread(row['frames'], '.0f')} | {_spread(row['wall_clock_min'], '.1f')} |")
        lines += ["", f"![learning curves](curves_{_slug(env)}.png)", ""]
    lines += ["![final scores](final.png)", ""]
    if missing:
        lines += [f"## Missing sweep points ({len(missing)})", "", "Asked for by the sweep's `multirun.yaml`, without "
                  "a result (`robotrl train -m <the sweep> resume=auto` continues them):", "",
                  *(f"- `{m['overrides']}`: {m['state']} (`{m['run_dir']}`)" for m in missing), ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def plot_final(rows: list[dict[str, Any]], out: Path) -> None:
    """IQM and 95% CI of the final return (and success) per (task, agent), one horizontal bar each."""
    from matplotlib.figure import Figure  # renders itself: no pyplot, no process-wide backend switch

    metrics = [m for m in METRICS if any(r[m[0]] is not None for r in rows)]
    fig = Figure(figsize=(5 * len(metrics), 0.5 * len(rows) + 1.5))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    labels = [f"{r['env']}\n{r['agent']}" for r in rows]
    for ax, (key, title) in zip(axes[0], metrics, strict=True):
        for y, row in enumerate(rows):
            stats = row[key]
            if stats is None:
                continue
            if not math.isnan(stats["ci_low"]):
                ax.plot([stats["ci_low"], stats["ci_high"]], [y, y], lw=6, alpha=0.4, color="C0")
            ax.plot([stats["iqm"]], [y], "o", color="C0")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.set_title(f"{title} (IQM, 95% CI)")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(out)


def write_report(roots: list[Path], out: Path | None = None, reps: int = 2000) -> dict[str, Any]:
    """Find the runs under ``roots``, write report.md/report.json/PNGs to ``out``; return the numbers."""
    from robotrl.workflows.plot import plot_runs

    roots = [Path(r) for r in roots]
    run_dirs = find_runs(roots)
    out = Path(out) if out is not None else roots[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    results, notes = [], []
    for run_dir in run_dirs:
        result = read_run(run_dir)
        if result is None:
            notes.append(f"`{run_dir}` has no evaluation yet: left out")
        else:
            results.append(result)
    if not results:
        raise ConfigError(f"none of the {len(run_dirs)} runs under {', '.join(map(str, roots))} has an evaluation "
                          f"(eval.csv or summary.json); nothing to report")
    results.sort(key=lambda r: (r.env, r.agent, *_seed_order(r)))
    missing = missing_points(roots, results)
    rows = summarize(results, reps)
    for env in sorted({r.env for r in results}):
        try:
            plot_runs([Path(r.path) for r in results if r.env == env], out / f"curves_{_slug(env)}.png", reps=reps)
        except ValueError as e:  # e.g. seeds whose evaluations do not overlap
            notes.append(f"no learning curves for {env}: {e}")
    plot_final(rows, out / "final.png")
    atomic_write_text(out / "report.md", markdown(rows, roots, reps, notes, missing))
    report = {"groups": rows, "runs": [asdict(r) for r in results], "missing": missing, "notes": notes}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    return {**report, "out": str(out)}


# ------------------------------------------------------------------------------------------------ the command
def run_report(args: Args) -> int:
    """``robotrl report SWEEP_DIR...``: Markdown + PNG summary of a sweep's runs."""
    out = args.opts["out"]
    result = write_report([Path(d) for d in args.positional], Path(out) if out else None, args.opts["reps"])
    for row in result["groups"]:
        ret = row["return"]
        print(f"{row['env']} / {row['agent']}: {row['runs']} runs (seeds {', '.join(map(str, row['seeds']))}), "
              f"final return IQM {ret['iqm']:.4g} [{ret['ci_low']:.4g}, {ret['ci_high']:.4g}]")
    for point in result["missing"]:
        print(f"missing sweep point: {point['overrides']} ({point['state']}: {point['run_dir']})")
    print(f"wrote {result['out']}/report.md, report.json, final.png, curves_*.png")
    return 0


COMMAND = Command(
    name="report", summary="per task and agent: IQM + 95% CI over seeds, frames, wall-clock (MD + PNG)",
    usage="robotrl report SWEEP_DIR... [out=DIR] [reps=N]",
    about="One table per task over the runs found under SWEEP_DIR (multirun dirs or run dirs): per agent, the IQM "
          "over\nseeds of the final eval return and success with 95% bootstrap CIs (rliable), frames and wall-clock; "
          "plus plots.",
    run=run_report, positional="SWEEP_DIR...",
    options={"out": Option(None, "output dir (default SWEEP_DIR/report)"),
             "reps": Option(2000, "bootstrap resamples (0: no CI)", "nonneg_int")},
    examples=("robotrl train -m seed=1,2,3 hydra/launcher=slurm && robotrl report runs",))
