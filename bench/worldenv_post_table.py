"""Post-training at one gated point of a curve run (``bench/worldenv_post_at_point.sh``): the table of docs/results.md.

    .venv/bin/python bench/worldenv_post_table.py runs/curve/seed3/curve/step01200-post{1,2,3}

Per post-training seed: simulator success (``eval.episodes`` per task, the same episodes for every policy of that
seed) of the BC policy, the post-trained one, random and zero actions, per task and overall, and WorldEnv's own
success over the first and last post-training iterations; then per policy the IQM over seeds with its 95%
stratified-bootstrap CI (rliable, as ``robotrl report``) and the per-seed paired difference post-trained - BC.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from worldenv_table import success_by_policy  # bench/ is sys.path[0] when run as a script

from robotrl.workflows.report import iqm_ci


def policies(post: dict) -> dict[str, dict]:
    out = {"BC": post["before"], "post-trained": post["after"]}
    for kind in ("random", "zero"):
        if kind in post.get("trivial", {}):
            out[f"{kind} actions"] = post["trivial"][kind]
    return out


def world_success(folder: Path) -> str:
    rows = list(csv.DictReader((folder / "post" / "train.csv").open()))
    vals = [float(r["world_success"]) for r in rows if r.get("world_success") not in (None, "")]
    if not vals:
        return "-"
    k = max(1, len(vals) // 3)
    return f"{np.mean(vals[:k]):.2f} -> {np.mean(vals[-k:]):.2f}"


def main(folders: list[Path]) -> None:
    if not folders:
        sys.exit("usage: worldenv_post_table.py RUN/curve/step<N>-post<seed> ...")
    reports = {f: json.loads((f / "post" / "report.json").read_text()) for f in folders}
    tasks = list(next(iter(reports.values()))["before"]["tasks"])
    names = list(policies(next(iter(reports.values()))))
    print(f"| post seed | episodes per task | {' | '.join(names)} | post - BC | WorldEnv success during "
          f"post-training (first -> last third of iterations) |")
    print("|" + "---|" * (len(names) + 4))
    for f, rep in reports.items():
        pol = policies(rep)
        cells = []
        for n in names:
            per_task = "/".join(f"{pol[n]['tasks'][t]['success']:.2f}" for t in tasks)
            cells.append(f"{pol[n]['mean']['success']:.3f} ({per_task})")
        diff = pol["post-trained"]["mean"]["success"] - pol["BC"]["mean"]["success"]
        print(f"| {f.name} | {rep['before']['episodes_per_task']} | {' | '.join(cells)} | {diff:+.3f} | "
              f"{world_success(f)} |")
    print(f"\n(per task: {' / '.join(tasks)})\n")
    print("| policy | simulator success per seed | IQM [95% CI] over seeds |")
    print("|---|---|---|")
    for name, values in success_by_policy(list(reports.values())).items():
        point, lo, hi = iqm_ci(np.asarray(values))
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} | {point:.3f} [{lo:.3f}, {hi:.3f}] |")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
