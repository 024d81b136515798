"""The World-Env fidelity gate's power: how a perfectly calibrated WorldEnv (its successes independent of the
simulator's episodes, with the same probabilities) fares on the gate, per policy set and episode count.

    .venv/bin/python bench/worldenv_gate_power.py        # the table of docs/results.md "The fidelity gate's power"

True success rates: the learned policies' simulator success of the published runs (12 episodes each, taken as the
truth) and, where "+ degraded", the final BC policy holding still for each chunk with probability q, ASSUMED to
succeed (1 - q) x as often as the BC policy (not measured). 200 simulated gates per row (seeded as the tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robotrl.workflows.worldenv.gate import noise_ceiling, perfect_model_gate
from robotrl.workflows.worldenv.settings import default_config

ROOT = Path(__file__).resolve().parents[1]
TASKS = 3


def published(seed: int) -> list[float]:
    rep = json.loads((ROOT / f"docs/results/worldenv/longer_model/seed{seed}/fidelity_report.json").read_text())
    return [p["sim_success"] for p in rep["policies"] if p["policy"] not in ("random", "zero")]


def main() -> None:
    f = default_config().fidelity
    degrade = list(f.degrade)
    print("| policy set | episodes per task | perfect model: median r | P(r >= 0.8) | gate: valid / not valid / "
          "underpowered |")
    print("|---|---|---|---|---|")
    for seed in (1, 2, 3):
        learned = published(seed)
        bc = learned[4]  # vla/vla.pt, noise 0
        for name, rates, episodes in ((f"seed {seed}", learned, 4), (f"seed {seed}", learned, 6),
                                      (f"seed {seed}", learned, int(f.episodes)),
                                      (f"seed {seed} + degraded", learned + [(1 - q) * bc for q in degrade], 4),
                                      (f"seed {seed} + degraded", learned + [(1 - q) * bc for q in degrade],
                                       int(f.episodes))):
            p = np.repeat(np.asarray(rates)[:, None], TASKS, 1)
            g = perfect_model_gate(p, episodes, float(f.min_r), runs=200, seed=seed)
            print(f"| {name} | {episodes} | {g['median_r']:.2f} | {g['p_r_at_least_min']:.2f} | {g['valid']:.2f} / "
                  f"{g['not_valid']:.2f} / {g['underpowered']:.2f} |")
    print()
    print("The published gates re-read (pooled rates, 12 episodes: per-task outcomes were not saved then):")
    for seed in (1, 2, 3):
        c = noise_ceiling(np.asarray(published(seed))[:, None], 12, float(f.min_r), seed=0)
        need = c["needed_episodes_per_task"]
        print(f"- seed {seed}: noise ceiling {c['median']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}], lower bound "
              f"{c['lower_bound']:.2f}, P(pass) {c['pass_probability']:.2f}; needs "
              + (f">= {need} episodes in all (~{-(-need // TASKS)} per task)" if need else "more spread, not episodes"))


if __name__ == "__main__":
    main()
