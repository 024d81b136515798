"""The World-Env fidelity gate as the world model trains (issue 27 §2): gate r, its noise ceiling and the paired
agreement at several world-model training steps, on one run's data and BC policies.

Two roles run side by side on one finished ``collect, train-vla, collect`` run (``runs/curve/seed1``):

* ``train RUN --steps 300,1200,...``: resumes ``robotrl worldenv train-model`` to each step in turn and keeps each
  ``model.pt`` and its action report as ``RUN/curve/models/step<N>.{pt,json}``;
* ``gate RUN --steps ... --episodes E``: measures the policy set's simulator episodes once (they do not depend on
  the world model: ``RUN/curve/sim_rows_e<E>.json``), then for each kept model as it appears trains a reflector on it
  (``train-reflector``: its replays are part of the reflector's data) in ``RUN/curve/step<N>/`` and runs the same
  ``WorldEnv`` episodes as ``robotrl worldenv fidelity`` (same initial states and actor seeds), then the same gate
  (``fidelity.gate_report``: r over the learned policies, noise ceiling, agreement, verdict) -> one row of
  ``RUN/curve/curve.csv`` and ``RUN/curve/step<N>/report_e<E>.json``; a point measured with more episodes per task
  is cut to the first E (same seeds) instead of measured again.
* ``regate RUN --episodes E``: the gate again, with the current ``gate_report``, over every point's measured episodes
  (a change to the verdict's rule, nothing rolled out again);
* ``table CSV... --out DIR``: the markdown table and the plot of ``docs/results/worldenv/curve/``.

Both roles stop starting new work that would end after ``--stop-at HH:MM`` (UTC) or ``--stop-in SECONDS``; with
``--latest`` the gate takes the newest kept model each time (the device script: a gate slower than the trainer).
The stage code is called through its public functions; nothing here changes what the stages do. Commands:
``bench/worldenv_curve.sh`` (CPU), ``bench/device/worldenv_64.sh`` (a lent GPU).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TRIVIAL = ("random", "zero")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stop_time(text: str | None) -> dt.datetime | None:
    """``HH:MM`` today (UTC) -> a datetime; None: no limit."""
    if not text:
        return None
    try:
        h, m = (int(v) for v in text.split(":"))
    except ValueError:
        sys.exit(f"--stop-at {text!r}: expected HH:MM (UTC)")
    return now_utc().replace(hour=h, minute=m, second=0, microsecond=0)


def seconds_left(stop: dt.datetime | None) -> float:
    return float("inf") if stop is None else (stop - now_utc()).total_seconds()


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s]
    except ValueError:
        sys.exit(f"--steps {text!r}: expected increasing integers, e.g. 300,1200,3000")
    if not steps or steps != sorted(set(steps)) or steps[0] < 1:
        sys.exit(f"--steps {text!r}: expected increasing integers >= 1, e.g. 300,1200,3000")
    return steps


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy through a temp name + rename: the gate never sees half a file."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


# ------------------------------------------------------------------------------------------------ train role
def train(run: Path, steps: list[int], stop: dt.datetime | None) -> None:
    from robotrl.workflows.worldenv.world_model import train_model

    models = run / "curve" / "models"
    models.mkdir(parents=True, exist_ok=True)
    # a marker left by an earlier train role (a curve extended to more steps) would end a waiting gate at once
    (models / "done").unlink(missing_ok=True)
    per_step = None  # seconds per world-model step, measured on the first increment
    done = 0
    for n in steps:
        if (models / f"step{n:05d}.pt").is_file():
            done = n
            continue
        if per_step is not None and per_step * (n - done) + 60 > seconds_left(stop):
            print(f"curve train: stopping before {n} steps: {per_step:.2f} s/step would end after --stop-at")
            break
        start = time.time()
        train_model(run, [f"model.steps={n}"])
        per_step = (time.time() - start) / max(1, n - done)
        copy_atomic(run / "model" / "report.json", models / f"step{n:05d}.json")
        copy_atomic(run / "model" / "model.pt", models / f"step{n:05d}.pt")
        print(f"curve train: {n} steps kept ({per_step:.2f} s/step over the increment, report included)")
        done = n
    (models / "done").write_text(f"{done}\n")


# ------------------------------------------------------------------------------------------------ gate role
def point_dir(run: Path, name: str, overrides: list[str]) -> tuple[Path, Any]:
    """A folder that shares ``run``'s data and BC policies (symlinks) and has its own config, model and reflector:
    the stages run in it as in ``run`` without touching the run's own files."""
    from robotrl.workflows.worldenv.settings import load_config

    d = run / "curve" / name
    d.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "vla"):
        if not (d / sub).exists():
            (d / sub).symlink_to((run / sub).resolve())
    if not (d / "config.yaml").is_file():
        shutil.copyfile(run / "config.yaml", d / "config.yaml")
    return d, load_config(d, overrides)


def episode_seeds(cfg: Any, n: int) -> dict[str, list[int]]:
    from robotrl.workflows.worldenv.fidelity import FIDELITY_SEED

    return {t: [FIDELITY_SEED + 1000 * i + j for j in range(n)] for i, t in enumerate(cfg.tasks)}


def sim_rows(base: Path, cfg: Any, n: int, out: Path) -> list[dict[str, Any]]:
    """Each policy's simulator episodes (as ``fidelity`` measures them), saved after each policy (resume)."""
    from robotrl.workflows.worldenv.data import make_sim, sim_rollout
    from robotrl.workflows.worldenv.fidelity import policy_set
    from robotrl.workflows.worldenv.fit import write_json
    from robotrl.workflows.worldenv.settings import setup_torch

    saved = json.loads(out.read_text()) if out.is_file() else {"episodes": n, "rows": truncated(out, n)}
    done = {(r["policy"], r["noise"], r["digest"]) for r in saved["rows"]}
    seeds = episode_seeds(cfg, n)
    for name, noise, digest, make_actor in policy_set(base, cfg, setup_torch(cfg)):
        if (name, noise, digest) in done:
            continue
        start, sim = time.time(), {}
        for task in cfg.tasks:
            env = make_sim(cfg, task, seeds[task][0])
            try:
                sim[task] = [bool(sim_rollout(env, make_actor(task, s), s)[0].success.any()) for s in seeds[task]]
            finally:
                env.close()
        saved["rows"].append({"policy": name, "noise": noise, "digest": digest, "sim_episodes": sim,
                              "sim_success": float(np.mean([v for t in cfg.tasks for v in sim[t]]))})
        write_json(out, saved)
        print(f"curve gate: simulator {name} noise {noise}: {saved['rows'][-1]['sim_success']:.3f} "
              f"({time.time() - start:.0f} s)")
    return saved["rows"]


def truncated(out: Path, n: int) -> list[dict[str, Any]]:
    """Rows of a run measured with more episodes per task, cut to their first ``n`` (the same seeds: the gate at
    ``n`` episodes is the first ``n`` of each task's list)."""
    more = sorted(out.parent.glob("sim_rows_e*.json"), key=lambda p: int(p.stem.split("_e")[1]))
    for path in more:
        saved = json.loads(path.read_text())
        if saved["episodes"] > n:
            rows = []
            for r in saved["rows"]:
                sim = {t: v[:n] for t, v in r["sim_episodes"].items()}
                rows.append({**r, "sim_episodes": sim,
                             "sim_success": float(np.mean([v for vs in sim.values() for v in vs]))})
            print(f"curve gate: {len(rows)} policies' simulator episodes from {path}, cut to {n} per task")
            return rows
    return []


def world_truncated(d: Path, n: int) -> list[dict[str, Any]]:
    """A point's rows measured with more episodes per task (``rows_e<E>.json``; ``rows.json``: the first version of
    this script), cut to their first ``n`` -- the same seeds, model and reflector (policies not in it: measured)."""
    for path in [*d.glob("rows_e*.json"), d / "rows.json"]:
        saved = json.loads(path.read_text()) if path.is_file() else {"rows": []}
        rows = saved["rows"]
        has = saved.get("episodes") or (len(next(iter(rows[0]["sim_episodes"].values()))) if rows else 0)
        if has == n and path.name == "rows.json":  # the first version's file at this count: as it is
            return rows
        if has > n:
            out = []
            for r in rows:
                cut = {k: {t: v[:n] for t, v in r[k].items()} for k in ("sim_episodes", "world_episodes")}
                out.append({**r, **cut, **{f"{k}_success": float(np.mean([v for vs in cut[f"{k}_episodes"].values()
                                                                          for v in vs])) for k in ("sim", "world")}})
            print(f"curve gate: {len(out)} policies' episodes from {path}, cut to {n} per task")
            return out
    return []


def world_episode(env: Any, actor: Any, index: int) -> bool:
    """One ``WorldEnv`` episode from initial state ``index``; True when the reflector ended it (as ``fidelity``)."""
    obs, _ = env.reset(options={"index": index})
    while True:
        for action in actor(obs, proprio=obs["state"]):
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                return bool(terminated)


def world_rows(d: Path, cfg: Any, n: int, sim: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``WorldEnv`` episodes of every policy of ``sim`` with ``d``'s model and reflector, paired with them."""
    from robotrl.envs.world_env import WorldEnv
    from robotrl.rewards.reflector import load_reflector

    from robotrl.workflows.worldenv.fidelity import policy_set
    from robotrl.workflows.worldenv.fit import write_json
    from robotrl.workflows.worldenv.post_train import initial_states
    from robotrl.workflows.worldenv.settings import setup_torch
    from robotrl.workflows.worldenv.world_model import load_model

    device = setup_torch(cfg)
    model = load_model(d / "model" / "model.pt", device)
    reflector = load_reflector(d / "reflector" / "reflector.pt", device)
    seeds = episode_seeds(cfg, n)
    starts = {t: initial_states(cfg, t, seeds[t], model.context) for t in cfg.tasks}
    horizon = int(cfg.max_episode_steps) // int(cfg.action_repeat)
    by_key = {(r["policy"], r["noise"], r["digest"]): r for r in sim}
    path = d / f"rows_e{n}.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else world_truncated(d, n)
    done = {(r["policy"], r["noise"], r["digest"]) for r in rows}
    for name, noise, digest, make_actor in policy_set(d, cfg, device):
        if (name, noise, digest) in done:
            continue
        start, world = time.time(), {}
        for task in cfg.tasks:
            wenv = WorldEnv(model, reflector, *starts[task], cfg.instructions[task], max_steps=horizon)
            world[task] = [world_episode(wenv, make_actor(task, s), j) for j, s in enumerate(seeds[task])]
        row = dict(by_key[(name, noise, digest)])
        row.update(world_episodes=world, world_success=float(np.mean([v for t in cfg.tasks for v in world[t]])))
        rows.append(row)
        write_json(path, {"episodes": n, "rows": rows})
        print(f"curve gate: {d.name} {name} noise {noise}: simulator {row['sim_success']:.3f}, WorldEnv "
              f"{row['world_success']:.3f} ({time.time() - start:.0f} s)")
    return rows


def wait_for(path: Path, done_marker: Path, stop: dt.datetime | None) -> bool:
    """Poll until ``path`` exists; False when the trainer finished without it or the stop time passed."""
    while not path.is_file():
        if done_marker.is_file() or seconds_left(stop) <= 0:
            return path.is_file()
        time.sleep(20)
    return True


def pick_point(pending: list[int], kept: set[int], latest: bool) -> int:
    """The next point to gate: the first pending step, or with ``latest`` the newest kept model among the pending
    ones (a gate slower than the trainer then follows the training instead of lagging behind it)."""
    newest = [s for s in pending if s in kept]
    return newest[-1] if latest and newest else pending[0]


def gate(run: Path, steps: list[int], n: int, stop: dt.datetime | None, reflector_steps: int | None,
         latest: bool = False) -> None:
    from robotrl.workflows.worldenv.fidelity import gate_report
    from robotrl.workflows.worldenv.reflector import train_reflector

    over = [f"fidelity.episodes={n}"] + ([f"reflector.steps={reflector_steps}"] if reflector_steps else [])
    base, cfg = point_dir(run, "sim", over)
    sim = sim_rows(base, cfg, n, run / "curve" / f"sim_rows_e{n}.json")
    models = run / "curve" / "models"
    point_cost = None
    pending = list(steps)
    while pending:
        if not wait_for(models / f"step{pending[0]:05d}.pt", models / "done", stop):
            print(f"curve gate: no model at {pending[0]} steps (trainer stopped or --stop-at passed)")
            break
        step = pick_point(pending, {s for s in pending if (models / f"step{s:05d}.pt").is_file()}, latest)
        pending = [s for s in pending if s > step]
        src = models / f"step{step:05d}.pt"
        if point_cost is not None and point_cost > seconds_left(stop):
            print(f"curve gate: stopping before {step} steps: a point takes ~{point_cost:.0f} s")
            break
        start = time.time()
        d, pcfg = point_dir(run, f"step{step:05d}", over)
        (d / "model").mkdir(exist_ok=True)
        if not (d / "model" / "model.pt").is_file():
            copy_atomic(src, d / "model" / "model.pt")
        if not (d / "reflector" / "reflector.pt").is_file():
            train_reflector(d, [])
        rows = world_rows(d, pcfg, n, sim)
        f = pcfg.fidelity
        report = gate_report(rows, list(pcfg.tasks), n, float(f.min_r), int(f.bootstrap), int(pcfg.seed))
        report["model_step"] = step
        report["model_report"] = json.loads((models / f"step{step:05d}.json").read_text())
        report["reflector_report"] = json.loads((d / "reflector" / "report.json").read_text())
        (d / f"report_e{n}.json").write_text(json.dumps(report, indent=1, default=float))
        point_cost = time.time() - start
        append_row(run / "curve" / "curve.csv", curve_row(run.name, report, point_cost))
        print(f"curve gate: {step} steps: {report['verdict']}")


def reflector_rule(refl: dict[str, Any]) -> dict[str, Any]:
    """The chosen termination rule's held-out episode agreement (reports before the threshold was chosen too: theirs
    is by frames in a row at the fixed threshold; the first runs' have none: {})."""
    ep = refl.get("episodes", {})
    if "rules" in ep:
        return ep["rules"][ep["best"]]
    return ep.get("by_consecutive", {}).get(str(refl.get("consecutive", 1)), {})


def checkpoints_only(rep: dict[str, Any]) -> dict[str, Any]:
    """r over the checkpoints alone, without the degraded policies (computed from the rows of a gate report that
    predates its ``checkpoints_only``)."""
    if "checkpoints_only" in rep:
        return rep["checkpoints_only"]
    from robotrl.workflows.worldenv.fidelity import checkpoints_only as over_checkpoints

    return over_checkpoints(rep["policies"], int(rep.get("bootstrap", 1000)), 0)


def curve_row(seed: str, rep: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One csv row: the model's action report, the reflector, the gate."""
    c, a, m = rep["ceiling"], rep["agreement"], rep["model_report"]
    refl = rep["reflector_report"]
    learned = [r for r in rep["policies"] if r["policy"] not in TRIVIAL]
    fm = m["frame_mse"]
    return {
        "run": seed, "model_steps": rep["model_step"], "episodes_per_task": rep["episodes_per_task"],
        "n_policies": rep["n_policies"],
        "frame_mse_recorded": fm["recorded"], "frame_mse_other": fm["other_episode"], "frame_mse_zero": fm["zero"],
        "frames_follow": m.get("frames_follow_actions"),
        "reflector_consecutive": refl["consecutive"],
        "reflector_threshold": refl.get("threshold", 0.5),
        "reflector_episode_agreement": reflector_rule(refl)["accuracy"],
        "pearson": rep["pearson"], "pearson_lo": rep["pearson_ci95"][0], "pearson_hi": rep["pearson_ci95"][1],
        "pearson_undefined": rep["pearson_undefined_resamples"], "spearman": rep["spearman"],
        "ceiling": c["median"], "ceiling_lo": c["ci95"][0], "ceiling_hi": c["ci95"][1],
        "agreement": a["agreement"], "agreement_lo": a["ci95"][0], "agreement_hi": a["ci95"][1],
        "agreement_independent_perfect": a.get("independent_perfect_model"),
        "pearson_with_trivial": rep["with_trivial"]["pearson"],
        "pearson_checkpoints": checkpoints_only(rep)["pearson"],
        "world_min": min(r["world_success"] for r in learned), "world_max": max(r["world_success"] for r in learned),
        "sim_min": min(r["sim_success"] for r in learned), "sim_max": max(r["sim_success"] for r in learned),
        "status": rep["status"], "verdict": rep["verdict"], "point_seconds": round(seconds),
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` under the union of their columns in first-seen order (rows of older versions of this script lack the
    newer ones: empty there), through a temp file, so no value lands under another column's header."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Add ``row``; a file written with other columns (an older version of this script) is rewritten with the union
    of both."""
    old = read_rows(path)
    if old and set(row) <= set(old[0]):
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=list(old[0])).writerow(row)
        return
    write_rows(path, [*old, row])


# ------------------------------------------------------------------------------------------------ regate role
def regate(run: Path, n: int) -> None:
    """The gate again over every point's measured episodes (``rows_e<n>.json``: nothing is rolled out again) with
    the current ``gate_report``; rewrites each ``report_e<n>.json`` and ``RUN/curve/curve.csv`` (through temp files),
    keeping each point's model and reflector reports and its measured cost."""
    from robotrl.workflows.worldenv.fidelity import gate_report
    from robotrl.workflows.worldenv.settings import load_config

    points = sorted(d for d in (run / "curve").glob("step[0-9][0-9][0-9][0-9][0-9]")
                    if (d / f"report_e{n}.json").is_file())
    if not points:
        sys.exit(f"regate: no {run}/curve/step<N>/report_e{n}.json (run the gate role with --episodes {n} first)")
    old_csv = run / "curve" / "curve.csv"
    old_rows = read_rows(old_csv)
    cost = {(int(r["episodes_per_task"]), int(r["model_steps"])): float(r["point_seconds"]) for r in old_rows}
    new_rows = []
    for d in points:
        old = d / f"report_e{n}.json"
        before = json.loads(old.read_text())
        rows = json.loads((d / f"rows_e{n}.json").read_text())["rows"]
        cfg = load_config(d, [])
        f = cfg.fidelity
        report = gate_report(rows, list(cfg.tasks), n, float(f.min_r), int(f.bootstrap), int(cfg.seed))
        for k in ("model_step", "model_report", "reflector_report"):
            report[k] = before[k]
        tmp = old.with_name(old.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=float))
        tmp.replace(old)
        new_rows.append(curve_row(run.name, report, cost.get((n, report["model_step"]), float("nan"))))
        print(f"curve regate: {d.name}: {report['verdict']}")
    write_rows(old_csv, [*(r for r in old_rows if int(r["episodes_per_task"]) != n), *new_rows])


# ------------------------------------------------------------------------------------------------ table role
def table(csvs: list[Path], out: Path) -> None:
    # a point gated again (a restarted gate) appears twice: the last row of each (run, episodes, steps) counts
    last = {(r["run"], int(r["episodes_per_task"]), int(r["model_steps"])): (r, p) for p in csvs for r in
            read_rows(p)}
    rows = []
    for (_, n, step), (r, p) in sorted(last.items()):
        report = p.parent / f"step{step:05d}" / f"report_e{n}.json"
        if not r.get("pearson_checkpoints") and report.is_file():  # a row from before that column: its report's
            r["pearson_checkpoints"] = checkpoints_only(json.loads(report.read_text()))["pearson"]
        rows.append(r)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / "curve.csv", rows)

    def f(v: str, spec: str = ".2f") -> str:
        try:
            x = float(v)
        except (TypeError, ValueError):
            return "-"
        return "-" if not np.isfinite(x) else format(x, spec)

    lines = ["| run | episodes per task | model steps | frame MSE recorded / other / zero actions | Pearson r [95% CI] "
             "(undefined resamples) | Spearman | noise ceiling [95%] | paired agreement [95% CI] (indep. perfect) | "
             "r with trivial | r over checkpoints alone | WorldEnv range (learned) | verdict |", "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['episodes_per_task']} | {r['model_steps']} | {f(r['frame_mse_recorded'], '.4f')} / "
            f"{f(r['frame_mse_other'], '.4f')} / {f(r['frame_mse_zero'], '.4f')} | {f(r['pearson'])} "
            f"[{f(r['pearson_lo'])}, {f(r['pearson_hi'])}] "
            f"({r['pearson_undefined']}) | {f(r['spearman'])} | {f(r['ceiling'])} [{f(r['ceiling_lo'])}, "
            f"{f(r['ceiling_hi'])}] | {f(r['agreement'])} [{f(r['agreement_lo'])}, {f(r['agreement_hi'])}] "
            f"({f(r['agreement_independent_perfect'])}) | {f(r['pearson_with_trivial'])} | "
            f"{f(r.get('pearson_checkpoints'))} | {f(r['world_min'])}-"
            f"{f(r['world_max'])} | {r['status']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, out / "curve.png")


def plot(rows: list[dict[str, str]], png: Path) -> None:
    """Left: gate r and the noise ceiling; right: paired agreement minus what an independent perfect model agrees
    by chance (the verdict's second condition: its CI must reach 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (run, n) in enumerate(sorted({(r["run"], r["episodes_per_task"]) for r in rows})):
        rr = sorted((r for r in rows if (r["run"], r["episodes_per_task"]) == (run, n)),
                    key=lambda r: int(r["model_steps"]))
        run = f"{run}, {n} ep/task"
        x = np.array([int(r["model_steps"]) for r in rr]) * (1 + 0.02 * i)

        def col(k: str, rr: list = rr) -> np.ndarray:
            return np.array([float(r[k]) if r.get(k) not in (None, "", "None") else np.nan for r in rr])

        r, lo, hi = col("pearson"), col("pearson_lo"), col("pearson_hi")
        line = ax.errorbar(x, r, yerr=[r - lo, hi - r], marker="o", capsize=3, label=f"{run}: gate r")
        c, clo, chi = col("ceiling"), col("ceiling_lo"), col("ceiling_hi")
        ax.errorbar(x, c, yerr=[c - clo, chi - c], marker="s", ls="--", capsize=3, alpha=0.4,
                    color=line[0].get_color(), label=f"{run}: noise ceiling")
        a, alo, ahi, chance = (col(k) for k in ("agreement", "agreement_lo", "agreement_hi",
                                                  "agreement_independent_perfect"))
        ax2.errorbar(x, a - chance, yerr=[a - alo, ahi - a], marker="o", capsize=3, color=line[0].get_color(),
                     label=run)
    ax.axhline(0.8, color="k", ls=":", lw=1, label="gate threshold 0.8")
    ax2.axhline(0.0, color="k", ls=":", lw=1, label="chance (independent perfect model)")
    for a_ in (ax, ax2):
        a_.set_xscale("log")
        a_.set_xlabel("world-model training steps")
    ax.set_ylabel("Pearson r over learned policies")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=6, loc="lower right")
    ax2.set_ylabel("paired agreement - chance [95% CI]")
    ax2.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["train", "gate", "regate", "table"])
    p.add_argument("paths", nargs="+", type=Path, help="train/gate: one run folder; table: curve.csv files")
    p.add_argument("--steps", default="300,1200,3000", help="world-model steps of the curve's points")
    p.add_argument("--episodes", type=int, default=20, help="gate episodes per task per policy (20: the default)")
    p.add_argument("--reflector-steps", type=int, default=None, help="reflector steps per point (default: the run's)")
    p.add_argument("--stop-at", default=None, help="HH:MM UTC: start no step or point predicted to end after it")
    p.add_argument("--stop-in", type=float, default=None, help="seconds from now: as --stop-at")
    p.add_argument("--latest", action="store_true",
                   help="gate: each point is the newest kept model of --steps (skips points the trainer passed)")
    p.add_argument("--out", type=Path, default=Path("docs/results/worldenv/curve"), help="table: output folder")
    a = p.parse_args(argv)
    if a.role == "table":
        return table(a.paths, a.out)
    if len(a.paths) != 1 or not (a.paths[0] / "config.yaml").is_file():
        sys.exit(f"{a.role}: expected one run folder with a config.yaml (collect, train-vla, collect done), got "
                 f"{[str(x) for x in a.paths]}")
    if a.episodes < 2:
        sys.exit(f"--episodes {a.episodes}: expected >= 2 per task")
    if a.role == "regate":
        return regate(a.paths[0], a.episodes)
    if a.stop_at and a.stop_in is not None:
        sys.exit("--stop-at and --stop-in: expected one of them")
    steps = parse_steps(a.steps)
    stop = stop_time(a.stop_at) if a.stop_in is None else now_utc() + dt.timedelta(seconds=a.stop_in)
    if a.role == "train":
        train(a.paths[0], steps, stop)
    else:
        gate(a.paths[0], steps, a.episodes, stop, a.reflector_steps, a.latest)


if __name__ == "__main__":
    main()
