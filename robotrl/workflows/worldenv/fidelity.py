"""``robotrl worldenv fidelity``: does success inside ``WorldEnv`` predict success in the simulator?

For every policy of the set -- the BC snapshots (``vla/snapshots/``), the final BC policy, the post-trained one
(if any), each with gaussian action noise of every ``fidelity.noise`` level, and the trivial policies of
``fidelity.trivial`` (random and zero actions: a faithful world model says they fail too) -- it measures success in
the simulator and in ``WorldEnv`` from the same initial states (``fidelity.episodes`` per task, the simulator's reset
frames), then reports Pearson and Spearman correlation over the learned policies with bootstrap 95% CIs (resampling
policies), the same with the trivial ones added (beside, not gated: they are easy to rank), a scatter plot, and the
gate: a post-training result counts as valid only where Pearson r >= ``fidelity.min_r`` over the learned policies
(0.8; WorldGym reports r ~ 0.78). Too few policies or a constant success vector gives r = NaN and valid = false,
never a pass. Each policy's row is saved to ``fidelity/rows.json`` as soon as it is measured; a rerun with the same
model, reflector, policy checkpoints and settings keeps those rows and measures only the rest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write
from robotrl.heartbeat import Heartbeat
from robotrl.workflows.worldenv.common import (
    TrivialActor,
    VLAActor,
    load_config,
    load_vla,
    make_sim,
    setup_torch,
    sim_rollout,
    write_json,
)
from robotrl.workflows.worldenv.post_train import initial_states
from robotrl.workflows.worldenv.train import load_model

FIDELITY_SEED = 3_000_000


def policy_files(out: Path) -> list[Path]:
    files = sorted((out / "vla" / "snapshots").glob("step_*.pt")) + [out / "vla" / "vla.pt"]
    post = out / "post" / "policy.pt"
    return [f for f in files if f.is_file()] + ([post] if post.is_file() else [])


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def policy_set(out: Path, cfg: Any, device: Any) -> Iterator[tuple[str, float, str, Callable[[str, int], Any]]]:
    """(name, action noise, digest of its checkpoint, ``make_actor(task, seed)``) for every policy the gate compares:
    each VLA checkpoint at each noise level, then the trivial policies."""
    from robotrl.envs.metaworld import PROPRIO_INDEX

    action_dim = chunk = 0
    for path in policy_files(out):
        policy, text = load_vla(path, device)
        policy.eval()
        action_dim, chunk = policy.action_dim, policy.chunk
        for noise in cfg.fidelity.noise:
            yield str(path.relative_to(out)), float(noise), file_digest(path), (
                lambda task, s, p=policy, t=text, z=float(noise):
                VLAActor(p, t, cfg.instructions[task], PROPRIO_INDEX, noise=z, seed=s))
    for kind in cfg.fidelity.trivial:
        yield kind, 0.0, kind, lambda task, s, k=kind: TrivialActor(k, action_dim, chunk, seed=s)


def correlations(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Pearson and Spearman of paired success rates with percentile bootstrap 95% CIs (NaN where undefined)."""
    from scipy import stats

    def both(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan"), float("nan")
        return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])

    r, rho = both(x, y)
    rng = np.random.default_rng(seed)
    boots = np.array([both(x[i], y[i]) for i in (rng.integers(len(x), size=len(x)) for _ in range(n_boot))])
    ci = {}
    for j, name in enumerate(("pearson", "spearman")):
        v = boots[:, j][np.isfinite(boots[:, j])] if len(boots) else np.array([])
        ci[name] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [None, None]
    return {"pearson": r, "spearman": rho, "pearson_ci95": ci["pearson"], "spearman_ci95": ci["spearman"],
            "n_policies": len(x)}


def fidelity(out: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    from robotrl.envs.world_env import WorldEnv
    from robotrl.rewards.reflector import load_reflector

    out = Path(out)
    cfg = load_config(out, overrides)
    device = setup_torch(cfg)
    f = cfg.fidelity
    model = load_model(out / "model" / "model.pt", device)
    reflector = load_reflector(out / "reflector" / "reflector.pt", device)
    n = int(f.episodes)
    seeds = {t: [FIDELITY_SEED + 1000 * i + j for j in range(n)] for i, t in enumerate(cfg.tasks)}
    starts = {t: initial_states(cfg, t, seeds[t], model.context) for t in cfg.tasks}
    horizon = int(cfg.max_episode_steps) // int(cfg.action_repeat)
    # rows measured by an interrupted run with the same model, reflector and settings are kept (resume)
    rows_path = out / "fidelity" / "rows.json"
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    key = {"model": file_digest(out / "model" / "model.pt"), "reflector": file_digest(out / "reflector" /
           "reflector.pt"), "episodes": n, "tasks": list(cfg.tasks), "max_episode_steps": int(cfg.max_episode_steps)}
    done = {}
    if rows_path.is_file():
        saved = json.loads(rows_path.read_text())
        done = {(r["policy"], r["noise"], r["digest"]): r for r in saved["rows"]} if saved.get("key") == key else {}
    rows = []
    beat = Heartbeat("fidelity")
    for name, noise, digest, make_actor in policy_set(out, cfg, device):
        if (name, noise, digest) in done:
            rows.append(done[(name, noise, digest)])
            print(f"fidelity: {name} noise {noise} already measured")
            continue
        sim, world = [], []
        for task in cfg.tasks:
            env = make_sim(cfg, task, seeds[task][0])
            wenv = WorldEnv(model, reflector, *starts[task], cfg.instructions[task], max_steps=horizon)
            try:
                for j, s in enumerate(seeds[task]):
                    beat.tick(lambda p=name, z=noise, t=task: f"{p} noise {z} {t}")
                    ep, _ = sim_rollout(env, make_actor(task, s), s)
                    sim.append(bool(ep.success.any()))
                    world.append(_world_episode(wenv, make_actor(task, s), j))
            finally:
                env.close()
        rows.append({"policy": name, "noise": noise, "digest": digest, "sim_success": float(np.mean(sim)),
                     "world_success": float(np.mean(world))})
        write_json(rows_path, {"key": key, "rows": rows})
        print(f"fidelity: {rows[-1]}")
    # the gate is over the learned policies (the set): random and zero actions are easy to tell apart from
    # any VLA, so with them r rises without WorldEnv ranking the policies a user compares; reported beside
    learned = np.array([r["policy"] not in TrivialActor.KINDS for r in rows])
    x = np.array([r["sim_success"] for r in rows])
    y = np.array([r["world_success"] for r in rows])
    corr = correlations(x[learned], y[learned], int(f.bootstrap), int(cfg.seed))
    with_trivial = correlations(x, y, int(f.bootstrap), int(cfg.seed))
    valid = bool(np.isfinite(corr["pearson"]) and corr["pearson"] >= float(f.min_r))
    report = {"policies": rows, **corr, "with_trivial": with_trivial, "min_r": float(f.min_r), "valid": valid,
              "episodes_per_task": n, "tasks": list(cfg.tasks),
              "verdict": (f"valid: Pearson r {corr['pearson']:.3f} >= {f.min_r} over the learned policies" if valid
                          else f"NOT valid: Pearson r {corr['pearson']:.3f} < {f.min_r} (or undefined) over the "
                          f"learned policies; post-training results in this world model are not evidence")}
    write_json(out / "fidelity" / "report.json", report)
    _scatter(x, y, learned, report, out / "fidelity" / "scatter.png")
    print(f"fidelity: {report['verdict']}; Spearman {corr['spearman']:.3f} over {corr['n_policies']} learned "
          f"policies; with random and zero actions Pearson {with_trivial['pearson']:.3f} -> "
          f"{out / 'fidelity' / 'report.json'}")
    return report


def _world_episode(env: Any, actor: Any, index: int) -> bool:
    """One ``WorldEnv`` episode from initial state ``index``; True when the reflector ended it (success)."""
    obs, _ = env.reset(options={"index": index})
    while True:
        for action in actor(obs, proprio=obs["state"]):
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                return bool(terminated)


def _scatter(x: np.ndarray, y: np.ndarray, learned: np.ndarray, report: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[learned], y[learned], label="learned (gate)")
    ax.scatter(x[~learned], y[~learned], marker="x", c="grey", label="random / zero actions")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("simulator success")
    ax.set_ylabel("WorldEnv success")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"learned: Pearson {report['pearson']:.2f}, Spearman {report['spearman']:.2f}; with trivial "
                 f"{report['with_trivial']['pearson']:.2f}", fontsize=8)
    fig.tight_layout()
    with atomic_write(png) as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
