"""An MR.Q learning curve beside the reference's published per-seed results at the same frames (docs/results.md).

    .venv/bin/python bench/mrq_curve_table.py runs/mrq_state/cartpole_swingup/seed* \
        --ref /work/.mirror/facebookresearch+MRQ/repo --ref-env Dmc-cartpole-swingup --plot curve.png

``--ref`` is the reference's git directory (its ``results/<suite>_results.txt`` is read from HEAD with ``git show``,
never copied into this repo) or such a .txt file. The reference counts agent steps ("Timestep"); one step is
``--action-repeat`` frames (2 on dm-control, in the reference and in robotrl's env configs). Per frame: the IQM over
our seeds and over the reference's 10 with 95% stratified-bootstrap CIs (rliable, as ``robotrl report``), then the
trivial policies of every run (uniform random and the best constant action, on the same eval seeds as the agent:
from its ``summary.json``, or played from its ``run.json`` for a run stopped before its end). Other agents go
beside it at the same frames, one column each: DrQ-v2's published per-seed curve (``--drqv2``:
facebookresearch/drqv2's git dir or its ``curves/dmc_<task>.csv``) and robotrl runs of any agent
(``--beside "robotrl TD-MPC2=runs/tdmpc2/seed*"``), or the reference itself run on this machine
(``--beside "reference MR.Q run here=runs/mrq_reference/<task>/evals/*.txt"``, from bench/mrq_reference_run.py).
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import subprocess
from pathlib import Path

import numpy as np

from robotrl.workflows.plot import read_eval
from robotrl.workflows.report import iqm_ci


def parse_results(text: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The reference's results format: blocks of ``Env: NAME``, a header, then ``timestep<TAB>score<TAB>...`` rows.
    Returns ``{env: (timesteps (T,), scores (T, seeds))}``; a row with fewer seeds than the block's first is an
    error (the reference pads nothing)."""
    out: dict[str, tuple[list[int], list[list[float]]]] = {}
    env = None
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith("---") or fields[0] == "Timestep":
            continue
        if fields[0] == "Env:":
            env = fields[1]
            out[env] = ([], [])
        elif env is not None:
            out[env][0].append(int(float(fields[0])))
            out[env][1].append([float(x) for x in fields[1:]])
    parsed = {}
    for name, (steps, rows) in out.items():
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise ValueError(f"{name}: rows with {sorted(widths)} seeds; expected the same count on every row")
        parsed[name] = (np.asarray(steps), np.asarray(rows))
    return parsed


def read_reference(ref: Path, results_file: str) -> str:
    """The results text from a git directory (HEAD) or a plain file."""
    if ref.is_file():
        return ref.read_text()
    return subprocess.run(["git", "-C", str(ref), "show", f"HEAD:results/{results_file}"], check=True,
                          capture_output=True, text=True).stdout


def our_returns(runs: list[Path], all_frames: bool = False) -> dict[int, list[float]]:
    """Frame -> eval return of every run, for the frames every run reached; with ``all_frames``, every frame any run
    reached, over the runs that reached it (runs stopped at different frames: the rows name how many)."""
    return merge_runs([dict(zip(frames.astype(int).tolist(), returns.tolist(), strict=True))
                       for frames, returns, _ in map(read_eval, runs)], all_frames)


def merge_runs(per_run: list[dict[int, float]], all_frames: bool) -> dict[int, list[float]]:
    """Per-run frame -> return maps -> frame -> every run's return, over the frames every run reached (or, with
    ``all_frames``, any run reached)."""
    frames = sorted((set.union if all_frames else set.intersection)(*(set(p) for p in per_run)))
    return {f: [p[f] for p in per_run if f in p] for f in frames}


def drqv2_curve(text: str) -> dict[int, list[float]]:
    """DrQ-v2's ``curves/dmc_<task>.csv`` (columns seed, frame, episode_reward): frame -> every seed's eval return,
    for the frames every seed has."""
    per_seed: dict[int, dict[int, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        per_seed.setdefault(int(row["seed"]), {})[int(float(row["frame"]))] = float(row["episode_reward"])
    if not per_seed:
        raise ValueError("no rows with seed, frame, episode_reward")
    frames = sorted(set.intersection(*(set(p) for p in per_seed.values())))
    return {f: [per_seed[s][f] for s in sorted(per_seed)] for f in frames}


def read_drqv2(ref: Path, task: str) -> str:
    """DrQ-v2's curve for ``task`` from its git dir (HEAD) or a plain csv."""
    if ref.is_file():
        return ref.read_text()
    return subprocess.run(["git", "-C", str(ref), "show", f"HEAD:curves/dmc_{task}.csv"], check=True,
                          capture_output=True, text=True).stdout


def reference_run_returns(files: list[Path], frames_per_eval: int, all_frames: bool = False) -> dict[int, list[float]]:
    """The reference's own eval files (``main.py``'s ``evals/<project>.txt``, as bench/mrq_reference_run.py leaves
    them: one mean return per line, every ``frames_per_eval`` frames from 0) -> frame -> returns, as
    :func:`our_returns`."""
    per_run = []
    for path in files:
        try:
            returns = [float(line) for line in path.read_text().split()]
        except ValueError as exc:
            raise ValueError(f"{path}: expected one mean return per line ({exc})") from None
        if not returns:
            raise ValueError(f"{path}: no evaluations")
        per_run.append({i * frames_per_eval: r for i, r in enumerate(returns)})
    return merge_runs(per_run, all_frames)


def beside_runs(spec: str, all_frames: bool = False,
                frames_per_ref_eval: int = 10000) -> tuple[str, dict[int, list[float]], int]:
    """``LABEL=GLOB`` -> (label, frame -> eval returns, how many runs it matched). GLOB matches robotrl run
    directories (frames as :func:`our_returns`) or the reference's own eval files (:func:`reference_run_returns`)."""
    label, sep, pattern = spec.partition("=")
    runs = sorted(Path(p) for p in glob.glob(pattern))
    if not sep or not label or not runs:
        raise ValueError(f"--beside {spec!r}: expected LABEL=GLOB matching run directories or the reference's eval "
                         f"files")
    if all(run.is_file() for run in runs):
        return label, reference_run_returns(runs, frames_per_ref_eval, all_frames), len(runs)
    return label, our_returns(runs, all_frames), len(runs)


def run_baselines(run: Path) -> dict | None:
    """The trivial policies' results of one run: those its ``summary.json`` holds, else (a run stopped before its end
    writes none) played now the way the trainer plays them at the end, from its ``run.json``: the same env, eval
    seeds and seed (``robotrl.workflows.baselines.trivial_baselines_for``). None when the run has neither file."""
    summary = run / "summary.json"
    if summary.exists() and "baselines" in (loaded := json.loads(summary.read_text())):
        return loaded["baselines"]
    if not (run / "run.json").exists():
        return None
    from robotrl.workflows.baselines import trivial_baselines_for
    from robotrl.workflows.trainer.schedule import eval_seeds

    cfg = json.loads((run / "run.json").read_text())["config"]
    return trivial_baselines_for(cfg["env"], eval_seeds(cfg["eval_episodes"]), int(cfg["seed"]))


def trivial(runs: list[Path]) -> dict[str, list[float]] | None:
    """Mean return of uniform random and of the best constant action per run (:func:`run_baselines`), when every
    run has them; the constant's value is named in the label."""
    found = [run_baselines(r) for r in runs]
    if any(b is None for b in found):
        return None
    values = {f"{b['constant']['value']:+.1f}" for b in found}
    return {"uniform random": [b["random"]["return_mean"] for b in found],
            f"best constant ({', '.join(sorted(values))})": [b["constant"]["return_mean"] for b in found]}


def fmt(values: list[float] | np.ndarray, reps: int, of: int | None = None) -> str:
    """IQM [95% CI] of ``values`` (the value alone for one), naming how many of ``of`` seeds when fewer."""
    point, lo, hi = iqm_ci(np.asarray(values), reps=reps)
    text = f"{point:.1f} [{lo:.1f}, {hi:.1f}]" if len(values) > 1 else f"{point:.1f}"
    return text + (fewer(len(values), of) if of else "")


def seeds(*counts: int) -> str:
    """``3 seeds``, ``1 seed``; ``3/2 seeds`` for a curve whose frames have different counts."""
    return f"{'/'.join(map(str, counts))} seed{'' if counts == (1,) else 's'}"


def fewer(count: int, of: int) -> str:
    """`` (2 of 3 seeds)`` where a frame has fewer runs than its curve, else nothing."""
    return f" ({count} of {seeds(of)})" if count < of else ""


def table(ours: dict[int, list[float]], ref_steps: np.ndarray, ref_scores: np.ndarray, action_repeat: int,
          baselines: dict[str, list[float]] | None, reps: int,
          others: dict[str, dict[int, list[float]]] | None = None, others_seeds: dict[str, int] | None = None) -> str:
    """Markdown rows per frame we evaluated; ``others`` (label -> frame -> returns) add a column each, over
    ``others_seeds[label]`` seeds (default: the most any of its frames has; a cell with fewer names how many)."""
    others = others or {}
    n, m = max(map(len, ours.values())), ref_scores.shape[1]
    counts = {label: (others_seeds or {}).get(label) or max(map(len, c.values()), default=0)
              for label, c in others.items()}
    extra = "".join(f" {label} IQM [95% CI], {seeds(counts[label])} |" for label in others)
    lines = [f"| frames | agent steps | robotrl MR.Q IQM [95% CI], {seeds(n)} | per seed | "
             f"reference MR.Q IQM [95% CI], {seeds(m)} | reference min-max |{extra}",
             "|---|---|---|---|---|---|" + "---|" * len(others)]
    for frame, values in ours.items():
        step = frame // action_repeat
        hit = np.flatnonzero(ref_steps == step)
        ref = ref_scores[hit[0]] if len(hit) else None
        ref_s = (fmt(ref, reps), f"{ref.min():.1f}-{ref.max():.1f}") if ref is not None else ("-", "-")
        beside = "".join(f" {fmt(c[frame], reps, counts[label]) if frame in c else '-'} |"
                         for label, c in others.items())
        per_seed = ", ".join(f"{v:.1f}" for v in values) + fewer(len(values), n)
        lines.append(f"| {frame:,} | {step:,} | {fmt(values, reps)} | {per_seed} | "
                     f"{ref_s[0]} | {ref_s[1]} |{beside}")
    for name, values in (baselines or {}).items():
        lines.append(f"| {name}, same eval seeds | | {fmt(values, reps)} | {', '.join(f'{v:.1f}' for v in values)} "
                     f"| | |" + " |" * len(others))
    return "\n".join(lines)


def plot(ours: dict[int, list[float]], ref_steps: np.ndarray, ref_scores: np.ndarray, action_repeat: int,
         baselines: dict[str, list[float]] | None, title: str, out: Path,
         others: dict[str, dict[int, list[float]]] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = np.array(sorted(ours))
    keep = ref_steps * action_repeat <= frames.max()
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = [("robotrl MR.Q", frames, [ours[f] for f in frames]),
              ("reference MR.Q (its results/)", ref_steps[keep] * action_repeat, ref_scores[keep])]
    for label, c in (others or {}).items():
        xs = np.array([f for f in sorted(c) if f <= frames.max()])
        curves.append((label, xs, [c[f] for f in xs]))
    for label, xs, scores in curves:
        stats = np.array([iqm_ci(np.asarray(s), reps=500) for s in scores])
        counts = sorted({len(s) for s in scores}, reverse=True)
        line, = ax.plot(xs, stats[:, 0], label=f"{label}, {seeds(*counts)}")
        ax.fill_between(xs, stats[:, 1], stats[:, 2], color=line.get_color(), alpha=0.2)
    for (name, values), style in zip((baselines or {}).items(), (":", "--"), strict=False):
        ax.axhline(float(np.mean(values)), color="gray", linestyle=style, label=name)
    ax.set(xlabel="frames", ylabel="eval return (IQM, 95% CI)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of `robotrl train` (one per seed)")
    parser.add_argument("--ref", type=Path, required=True, help="the reference's git dir or a results .txt")
    parser.add_argument("--ref-env", required=True, help="the reference's env name, e.g. Dmc-cartpole-swingup")
    parser.add_argument("--results-file", default="dmc_results.txt",
                        help="the reference's results/ file (default: %(default)s; it also has the Dmc-visual-* envs)")
    parser.add_argument("--action-repeat", type=int, default=2, help="frames per agent step (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--all-frames", action="store_true",
                        help="rows for every frame any run reached, each over the runs that reached it (default: "
                             "the frames every run reached)")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    parser.add_argument("--drqv2", type=Path, help="DrQ-v2's git dir (or a curves csv): its published curve beside")
    parser.add_argument("--drqv2-task", help="with --drqv2 as a git dir: curves/dmc_<task>.csv, e.g. walker_walk")
    parser.add_argument("--beside", action="append", default=[], metavar="LABEL=GLOB",
                        help="robotrl runs of another agent beside MR.Q, e.g. 'robotrl TD-MPC2=runs/tdmpc2/seed*', "
                             "or the reference's own eval files from bench/mrq_reference_run.py")
    parser.add_argument("--ref-eval-freq", type=int, default=5000,
                        help="agent steps between the evals in the reference's own eval files (default: %(default)s, "
                             "its Dmc_eval_freq)")
    args = parser.parse_args()
    results = parse_results(read_reference(args.ref, args.results_file))
    if args.ref_env not in results:
        raise SystemExit(f"--ref-env {args.ref_env!r} is not in the reference's {args.results_file}; it has "
                         f"{', '.join(sorted(results))}")
    ref_steps, ref_scores = results[args.ref_env]
    if args.drqv2 and not args.drqv2.is_file() and not args.drqv2_task:
        raise SystemExit("--drqv2 is a git dir: name its curve with --drqv2-task, e.g. walker_walk")
    try:
        ours = our_returns(args.runs, args.all_frames)
        beside = [beside_runs(spec, args.all_frames, args.ref_eval_freq * args.action_repeat)
                  for spec in args.beside]
        others = {label: curve for label, curve, _ in beside}
        others_seeds = {label: count for label, _, count in beside}
        if args.drqv2:
            others["DrQ-v2 published (its curves/, pixels)"] = drqv2_curve(read_drqv2(args.drqv2, args.drqv2_task))
    except ValueError as exc:  # a run without eval.csv or evaluations, a bad --beside, a curve without rows
        raise SystemExit(f"mrq_curve_table: {exc}") from None
    baselines = trivial(args.runs)
    print(table(ours, ref_steps, ref_scores, args.action_repeat, baselines, args.reps, others, others_seeds))
    if args.plot:
        plot(ours, ref_steps, ref_scores, args.action_repeat, baselines, args.ref_env, args.plot, others)


if __name__ == "__main__":
    main()
