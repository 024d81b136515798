"""Where the World-Env gate's error comes from (issue 27 §2): the reflector judging the *simulator's* frames.

``WorldEnv``'s success is two models in a row: the world model draws the frames, the reflector judges them. The gate
(``bench/worldenv_curve.py gate``) measures the pair. This script measures the judge alone on one curve run's points:
the same policy set, initial states and actor seeds as the gate's simulator side, each episode's real frames
judged by the point's reflector with its own termination rule (threshold, frames in a row), then the same
``gate_report`` (Pearson r over the learned policies, CI, paired agreement) with "reflector on simulator frames" in
place of ``WorldEnv``. A high r here and a low gate r put the error in the world model's frames; a low r here puts it
in the judge, whatever the world model does.

* ``frames RUN --episodes E``: the simulator episodes again, their frames kept (``RUN/curve/sim_frames_e<E>/<k>.npz``
  per policy, resumable); each episode's success must equal the gate's ``sim_rows_e<E>.json`` (checked: the pairing
  is deterministic or this script stops).
* ``judge RUN --episodes E``: every ``RUN/curve/step<N>/`` with a reflector -> ``RUN/curve/decompose_e<E>.csv`` and
  the markdown table on stdout.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/worldenv_decompose.py frames runs/curve/seed2 \
        --episodes 12
    OMP_NUM_THREADS=1 .venv/bin/python bench/worldenv_decompose.py judge runs/curve/seed2 --episodes 12
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# bench/ is sys.path[0] when run as a script
from worldenv_curve import TRIVIAL, checkpoints_only, episode_seeds, point_dir


def frames(run: Path, n: int) -> None:
    from robotrl.workflows.worldenv.data import make_sim, sim_rollout
    from robotrl.workflows.worldenv.fidelity import policy_set
    from robotrl.workflows.worldenv.settings import setup_torch

    base, cfg = point_dir(run, "sim", [f"fidelity.episodes={n}"])
    gate_rows = {(r["policy"], r["noise"], r["digest"]): r
                 for r in json.loads((run / "curve" / f"sim_rows_e{n}.json").read_text())["rows"]}
    out = run / "curve" / f"sim_frames_e{n}"
    out.mkdir(exist_ok=True)
    seeds = episode_seeds(cfg, n)
    for k, (name, noise, digest, make_actor) in enumerate(policy_set(base, cfg, setup_torch(cfg))):
        path = out / f"{k:02d}.npz"
        if path.is_file():
            continue
        if (name, noise, digest) not in gate_rows:
            print(f"decompose: {name} noise {noise} not in the gate's simulator rows yet; run again later")
            continue
        start, arrays = time.time(), {}
        for task in cfg.tasks:
            env = make_sim(cfg, task, seeds[task][0])
            try:
                for j, s in enumerate(seeds[task]):
                    ep, _ = sim_rollout(env, make_actor(task, s), s)
                    arrays[f"{task}/{j}/frames"] = ep.obs["pixels"][1:, -3:].transpose(0, 2, 3, 1)
                    arrays[f"{task}/{j}/success"] = np.asarray(ep.success, bool)
            finally:
                env.close()
        sim = {t: [bool(arrays[f"{t}/{j}/success"].any()) for j in range(n)] for t in cfg.tasks}
        if gate_rows[(name, noise, digest)]["sim_episodes"] != sim:
            sys.exit(f"{name} noise {noise}: the simulator episodes differ from {run}/curve/sim_rows_e{n}.json; "
                     "the pairing with the gate is not deterministic, no decomposition")
        meta = np.array(json.dumps({"policy": name, "noise": noise, "digest": digest, "tasks": list(cfg.tasks)}))
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, meta=meta, **arrays)
        tmp.replace(path)
        print(f"decompose: frames of {name} noise {noise} kept, simulator episodes as the gate's "
              f"({time.time() - start:.0f} s)", flush=True)


def judge(run: Path, n: int) -> None:
    from robotrl.rewards.reflector import load_reflector

    from robotrl.workflows.worldenv.fidelity import gate_report
    from robotrl.workflows.worldenv.policies import score_frames
    from robotrl.workflows.worldenv.settings import load_config
    from robotrl.world import fired_steps, termination_rule

    files = sorted((run / "curve" / f"sim_frames_e{n}").glob("[0-9][0-9].npz"))
    if not files:
        sys.exit(f"{run}/curve/sim_frames_e{n}: no frames; run `frames {run} --episodes {n}` first")
    cfg = load_config(run / "curve" / "sim", [])
    policies = [np.load(f) for f in files]
    out_rows = []
    for d in sorted((run / "curve").glob("step[0-9]*")):
        if not d.name[4:].isdigit() or not (d / "reflector" / "reflector.pt").is_file():  # not a post-train folder
            continue
        reflector = load_reflector(d / "reflector" / "reflector.pt", "cpu")
        threshold, consecutive = termination_rule(reflector)
        rows, fp_frames, neg_frames = [], 0, 0
        for z in policies:
            meta = json.loads(str(z["meta"]))
            sim, judged = {}, {}
            for t in meta["tasks"]:
                instr = cfg.instructions[t]
                sim[t], judged[t] = [], []
                for j in range(n):
                    f, y = z[f"{t}/{j}/frames"], z[f"{t}/{j}/success"]
                    scores = score_frames(reflector, f, [instr] * len(f))
                    sim[t].append(bool(y.any()))
                    judged[t].append(bool(fired_steps(scores, threshold, consecutive).any()))
                    fp_frames += int(((scores > threshold) & ~y).sum())
                    neg_frames += int((~y).sum())
            rows.append({**{k: meta[k] for k in ("policy", "noise", "digest")}, "sim_episodes": sim,
                         "world_episodes": judged,
                         "sim_success": float(np.mean([v for vs in sim.values() for v in vs])),
                         "world_success": float(np.mean([v for vs in judged.values() for v in vs]))})
        rep = gate_report(rows, list(meta["tasks"]), n, float(cfg.fidelity.min_r), int(cfg.fidelity.bootstrap),
                          int(cfg.seed))
        gate_path = d / f"report_e{n}.json"
        gate = json.loads(gate_path.read_text()) if gate_path.is_file() else None
        learned = [r for r in rows if r["policy"] not in TRIVIAL]
        out_rows.append({
            "run": run.name, "model_steps": int(d.name[4:]), "episodes_per_task": n, "consecutive": consecutive,
            "frame_fpr": fp_frames / max(1, neg_frames),
            "judge_pearson": rep["pearson"], "judge_lo": rep["pearson_ci95"][0], "judge_hi": rep["pearson_ci95"][1],
            "judge_agreement": rep["agreement"]["agreement"],
            "judge_success_min": min(r["world_success"] for r in learned),
            "judge_success_max": max(r["world_success"] for r in learned),
            "judge_pearson_with_trivial": rep["with_trivial"]["pearson"],
            "judge_pearson_checkpoints": checkpoints_only(rep)["pearson"],
            "gate_pearson": gate["pearson"] if gate else None,
            "gate_pearson_checkpoints": checkpoints_only(gate)["pearson"] if gate else None,
            "gate_agreement": gate["agreement"]["agreement"] if gate else None,
            "ceiling": rep["ceiling"]["median"],
        })
        print(f"decompose: {d.name}: reflector on simulator frames r {fmt(rep['pearson'])} "
              f"[{fmt(rep['pearson_ci95'][0])}, {fmt(rep['pearson_ci95'][1])}], agreement "
              f"{fmt(rep['agreement']['agreement'])}; the gate (WorldEnv) r {fmt(gate and gate['pearson'])}",
              flush=True)
    path = run / "curve" / f"decompose_e{n}.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    print(table(out_rows))


def fmt(v: Any) -> str:
    return "-" if v is None or not np.isfinite(float(v)) else f"{float(v):.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    f = fmt
    lines = ["| run | model steps | frames in a row | reflector FPR on simulator frames | reflector on simulator "
             "frames: r [95% CI] | agreement | success range (learned) | r over checkpoints alone | WorldEnv gate: r | "
             "agreement | r over checkpoints alone | noise ceiling |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['run']} | {r['model_steps']} | {r['consecutive']} | {f(r['frame_fpr'])} | "
                     f"{f(r['judge_pearson'])} [{f(r['judge_lo'])}, {f(r['judge_hi'])}] | {f(r['judge_agreement'])} | "
                     f"{f(r['judge_success_min'])}-{f(r['judge_success_max'])} | "
                     f"{f(r['judge_pearson_checkpoints'])} | {f(r['gate_pearson'])} | {f(r['gate_agreement'])} | "
                     f"{f(r['gate_pearson_checkpoints'])} | {f(r['ceiling'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["frames", "judge"])
    p.add_argument("run", type=Path, help="a bench/worldenv_curve.py run folder (runs/curve/seed<N>)")
    p.add_argument("--episodes", type=int, required=True, help="the gate's episodes per task (its sim_rows_e<E>)")
    a = p.parse_args(argv)
    if not (a.run / "curve" / f"sim_rows_e{a.episodes}.json").is_file():
        sys.exit(f"{a.run}/curve/sim_rows_e{a.episodes}.json: missing; run bench/worldenv_curve.py gate first")
    (frames if a.role == "frames" else judge)(a.run, a.episodes)


if __name__ == "__main__":
    main()
