"""``robotrl worldenv fidelity``: does success inside ``WorldEnv`` predict success in the simulator?

For every policy of the set -- the BC snapshots (``vla/snapshots/``), the final BC policy, the post-trained one
(if any), each with gaussian action noise of every ``fidelity.noise`` level, the final BC policy deliberately
degraded (holding still for each chunk with probability ``fidelity.degrade``: a wider spread of true success than
the learned ones alone), and the trivial policies of ``fidelity.trivial`` (random and zero actions: a faithful world
model says they fail too) -- it measures success in the simulator and in ``WorldEnv`` from the same initial states
with the same actor seeds (``fidelity.episodes`` per task, the simulator's reset frames), then reports:

* Pearson and Spearman correlation over the learned policies (degraded ones included, trivial ones not: they are
  easy to rank) with bootstrap 95% CIs (resampling policies) and how many resamples had an undefined r;
* the noise ceiling (``gate.noise_ceiling``): the r a perfect world model would reach with these episodes on these
  policies, its 95% interval and its lower bound;
* per-episode agreement of the paired episodes with its CI, beside what an independent perfect model would reach;
* the gate: ``underpowered: needs >= N episodes per task`` when the ceiling's lower bound is under
  ``fidelity.min_r`` (no verdict: even a perfect model could fail), else valid when Pearson r >= ``fidelity.min_r``
  (0.8; WorldGym reports r ~ 0.78). An undefined r is never a pass.

Each policy's row is saved to ``fidelity/rows.json`` as soon as it is measured; a rerun with the same model,
reflector, policy checkpoints and settings keeps those rows and measures only the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write
from robotrl.episodes import chunked, record_episode
from robotrl.errors import ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.readers import read_json
from robotrl.workflows.worldenv.data import make_sim, sim_rollout
from robotrl.workflows.worldenv.fit import file_digest, write_json
from robotrl.workflows.worldenv.gate import agreement, chance_agreement, correlations, noise_ceiling, verdict
from robotrl.workflows.worldenv.policies import TrivialActor, VLAActor, load_vla
from robotrl.workflows.worldenv.post_train import initial_states
from robotrl.workflows.worldenv.settings import load_config, record_settings, setup_torch
from robotrl.workflows.worldenv.world_model import load_model

FIDELITY_SEED = 3_000_000
ROWS_VERSION = 2  # rows.json from before per-episode outcomes are measured again
__all__ = ["correlations", "fidelity", "policy_set"]


def policy_files(out: Path) -> list[Path]:
    files = sorted((out / "vla" / "snapshots").glob("step_*.pt")) + [out / "vla" / "vla.pt"]
    post = out / "post" / "policy.pt"
    return [f for f in files if f.is_file()] + ([post] if post.is_file() else [])


def policy_set(out: Path, cfg: Any, device: Any) -> Iterator[tuple[str, float, str, Callable[[str, int], Any]]]:
    """(name, action noise, digest of its checkpoint, ``make_actor(task, seed)``) for every policy the gate compares:
    each VLA checkpoint at each noise level, the final BC policy degraded by each ``fidelity.degrade``, then the
    trivial policies."""
    from robotrl.envs.metaworld import PROPRIO_INDEX

    action_dim = chunk = 0
    final = out / "vla" / "vla.pt"
    for path in policy_files(out):
        policy, text = load_vla(path, device)
        policy.eval()
        action_dim, chunk = policy.action_dim, policy.chunk
        for noise in cfg.fidelity.noise:
            yield str(path.relative_to(out)), float(noise), file_digest(path), (
                lambda task, s, p=policy, t=text, z=float(noise):
                VLAActor(p, t, cfg.instructions[task], PROPRIO_INDEX, noise=z, seed=s))
    if final.is_file():  # the degraded ones after every checkpoint, so the trivial ones stay last
        policy, text = load_vla(final, device)
        policy.eval()
        for q in cfg.fidelity.degrade:
            yield f"{final.relative_to(out)}+hold{float(q):g}", 0.0, file_digest(final), (
                lambda task, s, p=policy, t=text, q=float(q):
                HoldingActor(VLAActor(p, t, cfg.instructions[task], PROPRIO_INDEX, seed=s), q, seed=s))
    for kind in cfg.fidelity.trivial:
        yield kind, 0.0, kind, lambda task, s, k=kind: TrivialActor(k, action_dim, chunk, seed=s)


class HoldingActor:
    """A deliberately degraded policy: ``actor``'s chunk, replaced by a chunk of zero actions (the arm holds still)
    with probability ``hold`` (seeded), so it does the learned thing, only less of the time."""

    def __init__(self, actor: Callable[..., np.ndarray], hold: float, seed: int):
        self.actor, self.hold, self.rng = actor, hold, np.random.default_rng(seed + 7_919)

    def __call__(self, obs: dict[str, np.ndarray], proprio: np.ndarray | None = None) -> np.ndarray:
        chunk = self.actor(obs, proprio=proprio)
        return np.zeros_like(chunk) if self.rng.random() < self.hold else chunk


def fidelity(out: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    from robotrl.envs.world_env import WorldEnv
    from robotrl.rewards.reflector import load_reflector

    out = Path(out)
    cfg = load_config(out, overrides, "fidelity")
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
    record_settings(cfg, out, "fidelity")  # creates fidelity/ too
    key = {"model": file_digest(out / "model" / "model.pt"), "reflector": file_digest(out / "reflector" /
           "reflector.pt"), "episodes": n, "tasks": list(cfg.tasks), "max_episode_steps": int(cfg.max_episode_steps),
           "version": ROWS_VERSION}
    done = {}
    if rows_path.is_file():
        saved = read_json(rows_path, ConfigError, "saved fidelity rows")
        done = {(r["policy"], r["noise"], r["digest"]): r for r in saved["rows"]} if saved.get("key") == key else {}
    rows = []
    beat = Heartbeat("fidelity")
    for name, noise, digest, make_actor in policy_set(out, cfg, device):
        if (name, noise, digest) in done:
            rows.append(done[(name, noise, digest)])
            print(f"fidelity: {name} noise {noise} already measured")
            continue
        sim: dict[str, list[bool]] = {t: [] for t in cfg.tasks}
        world: dict[str, list[bool]] = {t: [] for t in cfg.tasks}
        for task in cfg.tasks:
            env = make_sim(cfg, task, seeds[task][0])
            wenv = WorldEnv(model, reflector, *starts[task], cfg.instructions[task], max_steps=horizon)
            try:
                for j, s in enumerate(seeds[task]):  # paired: initial state j and actor seed s in both
                    beat.tick(lambda p=name, z=noise, t=task: f"{p} noise {z} {t}")
                    ep, _ = sim_rollout(env, make_actor(task, s), s)
                    sim[task].append(bool(ep.success.any()))
                    world[task].append(_world_episode(wenv, make_actor(task, s), j))
            finally:
                env.close()
        rows.append({"policy": name, "noise": noise, "digest": digest,
                     "sim_success": float(np.mean([v for t in cfg.tasks for v in sim[t]])),
                     "world_success": float(np.mean([v for t in cfg.tasks for v in world[t]])),
                     "sim_episodes": sim, "world_episodes": world})
        write_json(rows_path, {"key": key, "rows": rows})
        print(f"fidelity: {name} noise {noise}: simulator {rows[-1]['sim_success']:.3f}, WorldEnv "
              f"{rows[-1]['world_success']:.3f}")
    report = gate_report(rows, list(cfg.tasks), n, float(f.min_r), int(f.bootstrap), int(cfg.seed))
    write_json(out / "fidelity" / "report.json", report)
    learned = np.array([r["policy"] not in TrivialActor.KINDS for r in rows])
    x = np.array([r["sim_success"] for r in rows])
    y = np.array([r["world_success"] for r in rows])
    _scatter(x, y, learned, report, out / "fidelity" / "scatter.png")
    a, c = report["agreement"], report["ceiling"]
    print(f"fidelity: {report['verdict']}; Pearson {report['pearson']:.3f} (noise ceiling {c['median']:.2f} "
          f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]), Spearman {report['spearman']:.3f} over "
          f"{report['n_policies']} learned policies ({report['pearson_undefined_resamples']} of {report['bootstrap']} "
          f"bootstrap resamples undefined); paired episodes agree in {a['agreement']:.2f} "
          f"[{_fmt(a['ci95'][0])}, {_fmt(a['ci95'][1])}] (an independent perfect model: "
          f"{_fmt(a.get('independent_perfect_model'))}); with random and zero actions Pearson "
          f"{report['with_trivial']['pearson']:.3f}; over the checkpoints alone (no degraded ones) Pearson "
          f"{report['checkpoints_only']['pearson']:.3f} -> {out / 'fidelity' / 'report.json'}")
    return report


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def checkpoints_only(rows: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """r over the BC checkpoints alone (no trivial, no degraded policies): the policies post-training must tell
    apart; the degraded ones widen the spread so the gate has power, and can carry r by "moves" vs "stays" alone."""
    ckpt = [r for r in rows if r["policy"] not in TrivialActor.KINDS and "+hold" not in r["policy"]]
    return correlations(np.array([r["sim_success"] for r in ckpt]), np.array([r["world_success"] for r in ckpt]),
                        n_boot, seed)


def gate_report(rows: list[dict[str, Any]], tasks: list[str], episodes: int, min_r: float, n_boot: int,
                seed: int) -> dict[str, Any]:
    """The gate over measured rows (each with per-task paired episode outcomes): correlations over the learned
    policies and with the trivial ones, the noise ceiling, per-episode agreement and the verdict."""
    # the gate is over the learned policies (the set): random and zero actions are easy to tell apart from
    # any VLA, so with them r rises without WorldEnv ranking the policies a user compares; reported beside
    learned_rows = [r for r in rows if r["policy"] not in TrivialActor.KINDS]
    x = np.array([r["sim_success"] for r in learned_rows])
    y = np.array([r["world_success"] for r in learned_rows])
    corr = correlations(x, y, n_boot, seed)
    with_trivial = correlations(np.array([r["sim_success"] for r in rows]),
                                np.array([r["world_success"] for r in rows]), n_boot, seed)
    p_hat = np.array([[np.mean(r["sim_episodes"][t]) for t in tasks] for r in learned_rows]).reshape(-1, len(tasks))
    ceiling = noise_ceiling(p_hat, episodes, min_r, seed)
    sim = [v for r in learned_rows for t in tasks for v in r["sim_episodes"][t]]
    world = [v for r in learned_rows for t in tasks for v in r["world_episodes"][t]]
    chance = np.array([chance_agreement(sum(r["sim_episodes"][t]), len(r["sim_episodes"][t])) for r in learned_rows
                       for t in tasks for _ in r["sim_episodes"][t]])
    paired = agreement(sim, world, chance=chance)
    status, text = verdict(corr["pearson"], ceiling, min_r, paired)
    return {"policies": rows, **corr, "with_trivial": with_trivial,
            "checkpoints_only": checkpoints_only(rows, n_boot, seed), "ceiling": ceiling, "agreement": paired,
            "min_r": min_r, "status": status, "valid": status == "valid",
            "episodes_per_task": episodes, "tasks": tasks, "verdict": text}


def _world_episode(env: Any, actor: Any, index: int) -> bool:
    """One ``WorldEnv`` episode from initial state ``index``; True when the reflector ended it (success)."""
    act = chunked(lambda obs: actor(obs, proprio=obs["state"]))
    return record_episode(env, act, None, options={"index": index}).terminated


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
