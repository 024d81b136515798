"""The World-Env tables of docs/results.md from the reports of `bench/worldenv_results.sh` runs.

    .venv/bin/python bench/worldenv_table.py runs/worldenv/seed1 runs/worldenv/seed2 runs/worldenv/seed3

Per seed: the reflector's held-out numbers, simulator success (30 episodes: 3 tasks x 10 fixed seeds) of the BC and
the post-trained VLA beside random and zero actions on the same seeds, episode lengths, and the fidelity gate; then
per policy the IQM over seeds with its 95% stratified-bootstrap CI (rliable, as `robotrl report`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from worldenv_curve import reflector_rule  # bench/ is sys.path[0] when run as a script

from robotrl.workflows.report import iqm_ci


def load(run: Path) -> dict:
    return {name: json.loads((run / name / "report.json").read_text()) for name in ("reflector", "post", "fidelity")}


def success_by_policy(posts: list[dict]) -> dict[str, list[float]]:
    """Simulator success per post-training report (``post/report.json``) of BC, post-trained, the trivial policies
    every report has, and the paired difference post-trained - BC: the rows of the IQM-over-seeds tables."""
    rows = {"BC": [p["before"]["mean"]["success"] for p in posts],
            "post-trained": [p["after"]["mean"]["success"] for p in posts]}
    for kind in ("random", "zero"):
        if all(kind in p.get("trivial", {}) for p in posts):
            rows[f"{kind} actions"] = [p["trivial"][kind]["mean"]["success"] for p in posts]
    rows["post-trained - BC"] = list(np.subtract(rows["post-trained"], rows["BC"]))
    return rows


def main(runs: list[Path]) -> None:
    reports = [load(r) for r in runs]
    print("| seed | reflector held-out acc / FPR (real frames) | on replayed frames | frames in a row | episode "
          "verdicts agreeing (held-out replays) | sim success BC -> post-trained | random / zero actions | length BC / "
          "post (reflector-terminated) | fidelity Pearson r [95% CI], learned policies (the gate) | Spearman | "
          "r with random + zero actions | WorldEnv success range |")
    print("|" + "---|" * 12)
    for run, rep in zip(runs, reports, strict=True):
        refl, post, fid = rep["reflector"], rep["post"], rep["fidelity"]
        im = refl.get("imagined", {})
        k = refl.get("consecutive", 1)
        agree = reflector_rule(refl)
        b, a = post["before"]["mean"], post["after"]["mean"]
        triv = post.get("trivial", {})
        ws = [p["world_success"] for p in fid["policies"]]
        ci = fid["pearson_ci95"]
        ci_s = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else "[-]"
        print(f"| {run.name} | {refl['accuracy']:.2f} / {refl['fpr']:.2f} | "
              f"{im.get('accuracy', float('nan')):.2f} / {im.get('fpr', float('nan')):.2f} | {k} | "
              f"{agree.get('accuracy', float('nan')):.2f} of {agree.get('n', 0)} | {b['success']:.2f} -> "
              f"{a['success']:.2f} | {triv.get('random', {}).get('mean', {}).get('success', float('nan')):.2f} / "
              f"{triv.get('zero', {}).get('mean', {}).get('success', float('nan')):.2f} | {b['length']:.1f} / "
              f"{a['length']:.1f} ({b['reflector_length']:.1f} / {a['reflector_length']:.1f}) | "
              f"{fid['pearson']:.2f} {ci_s} | {fid['spearman']:.2f} | "
              f"{fid.get('with_trivial', {}).get('pearson', float('nan')):.2f} | {min(ws):.2f}-{max(ws):.2f} |")
    print()
    print("| policy | simulator success per seed | IQM [95% CI] over seeds |")
    print("|---|---|---|")
    for name, values in success_by_policy([r["post"] for r in reports]).items():
        iqm, lo, hi = iqm_ci(np.asarray(values))
        print(f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} | {iqm:.2f} [{lo:.2f}, {hi:.2f}] |")
    print()
    print("Fidelity gate, per seed (simulator success -> WorldEnv success per policy):")
    for run, rep in zip(runs, reports, strict=True):
        cells = [f"{p['policy'].replace('vla/snapshots/', '').replace('.pt', '')}@{p['noise']:g}: "
                 f"{p['sim_success']:.2f}->{p['world_success']:.2f}" for p in rep["fidelity"]["policies"]]
        print(f"- {run.name}: " + "; ".join(cells) + f". {rep['fidelity']['verdict']}")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
