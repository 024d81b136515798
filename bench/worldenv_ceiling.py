"""The fidelity gate's noise ceiling (issue 27 §1) for finished World-Env runs: the Pearson r that a PERFECT world
model would reach with the gate's episode count on the run's own learned policies.

    .venv/bin/python bench/worldenv_ceiling.py RUN [RUN ...] [--episodes 4 8 16 32]

Per run, from ``fidelity/report.json`` (or ``fidelity_report.json``, the docs' flattened copies): each learned
policy's simulator success is taken as its true success p; a perfectly calibrated ``WorldEnv`` and the simulator
then each give Binomial(n, p) / n successes, independently (n = episodes per task x tasks), and r is computed over
the policies as the gate does (undefined when either vector is constant). Printed: the median r, P(r >= min_r),
P(r undefined), over ``--draws`` draws. Pooling the tasks into one binomial per policy ignores that p differs
between tasks (which lowers the real variance), so the ceiling is slightly pessimistic; taking the observed success
as the true one overstates the spread where policies are truly alike. ``--episodes`` adds P(r >= min_r) at other
episode counts per task (the power the gate would have).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TRIVIAL = ("random", "zero")


def ceiling(p: np.ndarray, n: int, min_r: float, draws: int, seed: int = 0) -> dict[str, float]:
    """Median Pearson r, P(r >= min_r) and P(r undefined) of two independent Binomial(n, p)/n success vectors."""
    rng = np.random.default_rng(seed)
    sim = rng.binomial(n, p, size=(draws, len(p))) / n
    world = rng.binomial(n, p, size=(draws, len(p))) / n
    sc, wc = sim - sim.mean(1, keepdims=True), world - world.mean(1, keepdims=True)
    denom = np.sqrt((sc**2).sum(1) * (wc**2).sum(1))
    defined = denom > 0
    r = np.full(draws, np.nan)
    r[defined] = (sc * wc).sum(1)[defined] / denom[defined]
    return {"median_r": float(np.nanmedian(r)) if defined.any() else float("nan"),
            "p_pass": float(np.mean(r[defined] >= min_r) * defined.mean()) if defined.any() else 0.0,
            "p_undefined": float(1 - defined.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=10000)
    ap.add_argument("--episodes", type=int, nargs="*", default=[], help="episodes per task to compute P(pass) at")
    args = ap.parse_args()
    extra = "".join(f" P(pass), {e}/task |" for e in args.episodes)
    print("| run | learned policies | episodes per policy | sim success range | gate r | perfect model: median r | "
          f"P(r >= min_r) | P(r undefined) |{extra}")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(args.episodes))
    for run in args.runs:
        report = run / "fidelity" / "report.json"  # a run folder, or docs/results/worldenv/*'s flattened copy
        rep = json.loads((report if report.is_file() else run / "fidelity_report.json").read_text())
        p = np.array([row["sim_success"] for row in rep["policies"] if row["policy"] not in TRIVIAL])
        n = int(rep["episodes_per_task"]) * len(rep["tasks"])
        c = ceiling(p, n, float(rep["min_r"]), args.draws)
        more = "".join(f" {ceiling(p, e * len(rep['tasks']), float(rep['min_r']), args.draws)['p_pass']:.2f} |"
                       for e in args.episodes)
        print(f"| {run.name} | {len(p)} | {n} | {p.min():.2f}-{p.max():.2f} | {rep['pearson']:.2f} | "
              f"{c['median_r']:.2f} | {c['p_pass']:.2f} | {c['p_undefined']:.2f} |{more}")


if __name__ == "__main__":
    main()
