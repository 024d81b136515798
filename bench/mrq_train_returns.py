"""Training-episode returns of robotrl's MR.Q vs the reference's own runs, per window of agent steps, over seeds.

    python bench/mrq_train_returns.py 'docs/results/mrq_walker_walk_state/seed*' \\
        'docs/results/mrq_walker_walk_state/reference_here/logs/MRQ+*.txt' --windows 10000,12500,15000,17500,20000

Training episodes do not go through either side's eval procedure (robotrl replays fixed eval seeds, the reference runs
its eval env on), so they compare the two learners more directly. For each window (a, b] of agent steps (an episode
counts where it ends) this prints the mean episode return per seed on each side and an exact Mann-Whitney test of
robotrl < reference (one-sided) and of any difference (two-sided), then the same over the whole span. robotrl's
episodes come from each run's ``train.csv`` (``step`` = agent steps at the episode's end); the reference's from its
log (``Total T: <t+1>, ... Reward: <return>`` lines, written by its ``main.py``).
"""

from __future__ import annotations

import argparse
import csv
import glob
import re
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

_REF_LINE = re.compile(r"Total T: (\d+), Episode Num: \d+, Episode T: \d+, Reward: ([-+\d.eE]+)")


def robotrl_episodes(run_dir: Path) -> np.ndarray:
    """(agent step at the episode's end, return) rows of a robotrl run's train.csv."""
    with open(run_dir / "train.csv") as f:
        rows = [(int(r["step"]), float(r["episode_return"])) for r in csv.DictReader(f) if r["episode_return"]]
    if not rows:
        raise SystemExit(f"{run_dir / 'train.csv'}: no training episodes")
    return np.array(rows)


def reference_episodes(log: Path) -> np.ndarray:
    """(agent step at the episode's end, return) rows of a reference log."""
    rows = [(int(m[1]), float(m[2])) for m in map(_REF_LINE.match, log.read_text().splitlines()) if m]
    if not rows:
        raise SystemExit(f"{log}: no 'Total T: ..., Reward: ...' lines (not a reference MR.Q log?)")
    return np.array(rows)


def window_means(runs: list[np.ndarray], low: int, high: int) -> np.ndarray:
    """Mean return per run of the episodes ending in (low, high]; SystemExit if a run has none there."""
    means = []
    for episodes in runs:
        inside = (episodes[:, 0] > low) & (episodes[:, 0] <= high)
        if not inside.any():
            raise SystemExit(f"a run has no episode ending in agent steps ({low}, {high}]: did it run that far?")
        means.append(episodes[inside, 1].mean())
    return np.array(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("robotrl", help="glob of robotrl run directories (each with train.csv)")
    parser.add_argument("reference", help="glob of the reference's logs (its --log_folder files)")
    parser.add_argument("--windows", default="10000,12500,15000,17500,20000",
                        help="ascending agent-step edges; windows are (edge_i, edge_i+1] and the whole span")
    args = parser.parse_args()
    ours = [robotrl_episodes(Path(p)) for p in sorted(glob.glob(args.robotrl))]
    refs = [reference_episodes(Path(p)) for p in sorted(glob.glob(args.reference))]
    if len(ours) < 2 or len(refs) < 2:
        raise SystemExit(f"need >= 2 runs a side, got {len(ours)} robotrl ({args.robotrl!r}) and {len(refs)} "
                         f"reference ({args.reference!r})")
    edges = [int(e) for e in args.windows.split(",")]
    if len(edges) < 2 or edges != sorted(set(edges)):
        raise SystemExit(f"--windows={args.windows!r}, expected >= 2 ascending agent steps")
    windows = list(zip(edges[:-1], edges[1:], strict=True)) + ([(edges[0], edges[-1])] if len(edges) > 2 else [])
    print(f"| agent steps | robotrl, {len(ours)} seeds (mean) | per seed | reference, {len(refs)} seeds (mean) | "
          "per seed | robotrl < reference, one-sided U / p | two-sided p |")
    print("|---|---|---|---|---|---|---|")
    for low, high in windows:
        o, r = window_means(ours, low, high), window_means(refs, low, high)
        less = mannwhitneyu(o, r, alternative="less", method="exact")
        both = mannwhitneyu(o, r, alternative="two-sided", method="exact")
        print(f"| {low:,}-{high:,} | {o.mean():.1f} | {', '.join(f'{x:.1f}' for x in o)} | {r.mean():.1f} | "
              f"{', '.join(f'{x:.1f}' for x in r)} | {less.statistic:.0f} of {o.size * r.size} / {less.pvalue:.3f} | "
              f"{both.pvalue:.3f} |")


if __name__ == "__main__":
    main()
