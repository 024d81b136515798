"""Scoring the rollouts with every reward model and writing the report (report.json, report.png)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.errors import ConfigError
from robotrl.rewards.capabilities import reward_capabilities
from robotrl.workflows.reward_eval.metrics import (
    RewardFn,
    best_threshold,
    epic_distance,
    episode_kendall_tau,
    f1_score,
    near_miss_gap,
    pearson_distance,
    value_order_correlation,
)
from robotrl.workflows.reward_eval.rollouts import Rollout, Settings, collect

log = logging.getLogger(__name__)
ENV_ROW = "env"
_VERSION_PACKAGES = ("robotrl", "metaworld", "mujoco", "numpy", "scipy", "torch", "open_clip_torch", "gymnasium")


# ================================================================================================ scoring
def score_offline(model: Any, rollouts: Sequence[Rollout]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per-episode rewards (and predict_success, if the model has it) from the stored frames, in batches of the
    model's ``batch_size`` across episode boundaries (one forward pass per batch, not per episode)."""
    frames = np.concatenate([ep.frames for ep in rollouts])
    infos = [info for ep in rollouts for info in ep.infos]
    bs = int(getattr(model, "batch_size", 64) or 64)
    has_success = reward_capabilities(model).predicts_success
    rewards, oks = [], []
    for i in range(0, len(frames), bs):
        chunk, chunk_info = frames[i:i + bs], infos[i:i + bs]
        rewards.append(np.asarray(model(chunk, chunk_info), np.float64).reshape(len(chunk)))
        if has_success:
            oks.append(np.asarray(model.predict_success(chunk, chunk_info), bool).reshape(len(chunk)))
    bounds = np.cumsum([ep.length for ep in rollouts])[:-1]
    return (np.split(np.concatenate(rewards), bounds),
            np.split(np.concatenate(oks), bounds) if has_success else None)


def _table_fn(table: np.ndarray) -> RewardFn:
    """A reward of s' only, looked up by transition index (see :func:`reward_metrics`)."""
    return lambda s, a, s_next: table[s_next]


def _transitions(rollouts: Sequence[Rollout]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, a, s') over all rollouts, states as indices: s'_i = i, s_i = i - 1 within an episode, n for a reset state
    (a NaN entry in every table, so a reward of s that reached it would show up as NaN, never silently)."""
    n = sum(ep.length for ep in rollouts)
    s_next = np.arange(n)
    s = s_next - 1
    starts = np.cumsum([0] + [ep.length for ep in rollouts])[:-1]
    s[starts] = n
    return s, np.concatenate([ep.actions for ep in rollouts]), s_next


def reward_metrics(rewards: Sequence[np.ndarray], rollouts: Sequence[Rollout], settings: Settings,
                   success_pred: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Every metric of one reward model (per-episode rewards aligned with ``rollouts``) against the simulator.

    EPIC treats both rewards as functions of the post-step state, looked up by transition index: every collected
    s' is reached by exactly one transition, and the reward models score post-step frames. The simulator's reward
    is summed over the action repeat, so this is exact for the models and an approximation for Meta-World's reward.
    """
    flat = np.concatenate(rewards)
    gt = np.concatenate([ep.gt_reward for ep in rollouts])
    labels = np.concatenate([ep.success for ep in rollouts])
    s, a, s_next = _transitions(rollouts)
    table_m, table_gt = np.append(flat, np.nan), np.append(gt, np.nan)
    epic = epic_distance(_table_fn(table_m), _table_fn(table_gt), s, a, s_next, settings.gamma,
                         n_samples=settings.epic_samples, seed=settings.seed)
    out: dict[str, Any] = {
        "value_order": value_order_correlation(rewards, [ep.success for ep in rollouts]),
        "kendall_tau": episode_kendall_tau([r.sum() for r in rewards], [ep.gt_reward.sum() for ep in rollouts]),
        "epic": epic,
        "pearson_distance": pearson_distance(flat, gt),
    }
    out.update(_success_detection(rewards, labels, rollouts, success_pred))
    std = float(flat.std())
    expert_final = {ep.seed: float(r[-1]) for ep, r in zip(rollouts, rewards, strict=True)
                    if ep.policy == "expert" and ep.success[-1]}
    near_final = {ep.seed: float(r[-1]) for ep, r in zip(rollouts, rewards, strict=True) if ep.policy == "near_miss"}
    out["near_miss"] = near_miss_gap(expert_final, near_final, std)
    out["per_policy"] = _per_policy(rewards, rollouts, flat)
    return out


def _success_detection(rewards: Sequence[np.ndarray], labels: np.ndarray, rollouts: Sequence[Rollout],
                       success_pred: Sequence[np.ndarray] | None) -> dict[str, Any]:
    if success_pred is not None:
        res = f1_score(np.concatenate(success_pred), labels)
        return {"success_f1": res["f1"], "success_precision": res["precision"], "success_recall": res["recall"],
                "success_f1_source": "predict_success, all steps"}
    calib = [i for i in range(len(rollouts)) if i % 2 == 0]
    test = [i for i in range(len(rollouts)) if i % 2 == 1]
    if not test:
        return {"success_f1": None, "success_f1_source": "threshold: too few episodes to split"}
    thr = best_threshold(np.concatenate([rewards[i] for i in calib]),
                         np.concatenate([rollouts[i].success for i in calib]))
    res = f1_score(np.concatenate([rewards[i] for i in test]) >= thr,
                   np.concatenate([rollouts[i].success for i in test]))
    return {"success_f1": res["f1"], "success_precision": res["precision"], "success_recall": res["recall"],
            "success_threshold": thr,
            "success_f1_source": "reward >= threshold tuned for F1 on even episodes, scored on odd episodes"}


def _per_policy(rewards: Sequence[np.ndarray], rollouts: Sequence[Rollout], flat: np.ndarray) -> dict[str, Any]:
    """Mean return, final reward and min-max-normalised mean reward per policy type."""
    lo, hi = float(flat.min()), float(flat.max())
    span = hi - lo if hi > lo else 1.0
    out: dict[str, Any] = {}
    for name in dict.fromkeys(ep.policy for ep in rollouts):
        rs = [r for r, ep in zip(rewards, rollouts, strict=True) if ep.policy == name]
        out[name] = {"mean_return": float(np.mean([r.sum() for r in rs])),
                     "mean_final": float(np.mean([r[-1] for r in rs])),
                     "mean_normalised": float(np.mean([((r - lo) / span).mean() for r in rs]))}
    return out


def policy_summary(rollouts: Sequence[Rollout]) -> dict[str, Any]:
    """Ground truth per policy type: episodes, success rate (any step), mean return, mean episode length."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(ep.policy for ep in rollouts):
        eps = [ep for ep in rollouts if ep.policy == name]
        out[name] = {"episodes": len(eps), "seeds": [ep.seed for ep in eps],
                     "success_rate": float(np.mean([ep.success.any() for ep in eps])),
                     "final_success_rate": float(np.mean([ep.success[-1] for ep in eps])),
                     "mean_return": float(np.mean([ep.gt_reward.sum() for ep in eps])),
                     "mean_length": float(np.mean([ep.length for ep in eps]))}
    return out


def episode_table(rollouts: Sequence[Rollout], rewards: Mapping[str, list[np.ndarray]]) -> list[dict[str, Any]]:
    """One row per episode (policy, seed, success, first success step, return and final reward per reward model), so
    any metric can be recomputed from the JSON alone."""
    rows = []
    for k, ep in enumerate(rollouts):
        ok = ep.success.any()
        rows.append({"policy": ep.policy, "seed": ep.seed, "length": ep.length, "success": bool(ok),
                     "first_success": int(np.argmax(ep.success)) if ok else None, "stop_step": ep.stop_step,
                     "return": {name: float(r[k].sum()) for name, r in rewards.items()},
                     "final": {name: float(r[k][-1]) for name, r in rewards.items()}})
    return rows


# ================================================================================================ report
def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in _VERSION_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> null, numpy -> python, tuples -> lists, int dict keys -> str (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run_report(env_cfg: Any, models: Mapping[str, Any], settings: Settings, out_dir: str | Path | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Roll out, score with ``models`` (name -> reward model) plus the simulator reward (row ``env``), compute the
    metrics, and write ``report.json`` + ``report.png`` to ``out_dir`` (if given). Returns the report dict with
    the rollouts under the private key ``_rollouts`` and per-model rewards under ``_rewards``.
    """
    from robotrl.envs import make_env, parse_env_cfg

    settings.validate()
    spec = parse_env_cfg(env_cfg)
    if spec.suite != "metaworld":
        raise ConfigError(f"reward-eval needs a Meta-World env (it rolls out the scripted expert), got {spec.name!r}")
    if ENV_ROW in models:
        raise ConfigError(f"reward model name {ENV_ROW!r} is reserved for the simulator reward row")
    env = make_env(env_cfg, settings.seed)
    try:
        bound = {k: m for k, m in models.items() if reward_capabilities(m).binds_env}
        for m in bound.values():
            m.bind(env)
        render_size = settings.render_size if models else None
        rollouts, notes = collect(env, spec.task, settings, render_size, bound)
        env_info = dict(getattr(env, "robotrl_info", {}))
    finally:
        env.close()
    rewards: dict[str, list[np.ndarray]] = {ENV_ROW: [ep.gt_reward for ep in rollouts]}
    metrics = {ENV_ROW: reward_metrics(rewards[ENV_ROW], rollouts, settings)}
    for name, model in models.items():
        if name in bound:
            rewards[name] = [ep.online[name] for ep in rollouts]
            oks = [ep.online_success[name] for ep in rollouts] if reward_capabilities(model).predicts_success else None
        else:
            rewards[name], oks = score_offline(model, rollouts)
        metrics[name] = {**reward_metrics(rewards[name], rollouts, settings, oks),
                         "scored": "online (bind)" if name in bound else "offline (batched)"}
    report = {"env": spec.name, "task": spec.task, "env_info": env_info, "settings": asdict(settings),
              "policies": policy_summary(rollouts), "rollout_notes": notes, "metrics": metrics,
              "episodes": episode_table(rollouts, rewards),
              "versions": package_versions(), **dict(extra or {})}
    report = _json_safe(report)
    if out_dir is not None:
        write_outputs(report, rewards, rollouts, Path(out_dir))
    return {**report, "_rollouts": rollouts, "_rewards": rewards}


def write_outputs(report: dict[str, Any], rewards: Mapping[str, list[np.ndarray]], rollouts: Sequence[Rollout],
                  out: Path) -> None:
    """report.json and report.png in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    plot_report(report, rewards, rollouts, out / "report.png")


METRIC_BARS = (("value_order", "Spearman value order"), ("kendall_tau", "Kendall tau (episodes)"),
               ("epic_similarity", "1 - EPIC"), ("success_f1", "success F1"),
               ("near_miss_accuracy", "near-miss pair acc."))


def _bar_values(metrics: Mapping[str, Any]) -> list[float]:
    vals = {"value_order": metrics["value_order"]["rho"], "kendall_tau": metrics["kendall_tau"],
            "epic_similarity": None if metrics["epic"] is None else 1.0 - metrics["epic"],
            "success_f1": metrics["success_f1"], "near_miss_accuracy": metrics["near_miss"]["pair_accuracy"]}
    return [np.nan if vals[k] is None else float(vals[k]) for k, _ in METRIC_BARS]


def plot_report(report: Mapping[str, Any], rewards: Mapping[str, list[np.ndarray]], rollouts: Sequence[Rollout],
                path: Path) -> None:
    """One panel per reward model (mean min-max-normalised reward vs agent step, one line per policy) and a grouped
    bar chart of the metrics (missing bars = undefined metric)."""
    from matplotlib.figure import Figure  # renders itself: no pyplot, no process-wide backend switch

    names = list(rewards)
    policies = list(dict.fromkeys(ep.policy for ep in rollouts))
    fig = Figure(figsize=(4.2 * (len(names) + 1), 3.6))
    axes = fig.subplots(1, len(names) + 1, squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        flat = np.concatenate(rewards[name])
        lo, span = float(flat.min()), float(np.ptp(flat)) or 1.0
        for pol in policies:
            rs = [(r - lo) / span for r, ep in zip(rewards[name], rollouts, strict=True) if ep.policy == pol]
            length = max(len(r) for r in rs)
            padded = np.full((len(rs), length), np.nan)
            for k, r in enumerate(rs):
                padded[k, :len(r)] = r
            ax.plot(np.nanmean(padded, axis=0), label=pol)
        ax.set_title(f"{name}" + (" (simulator)" if name == ENV_ROW else ""))
        ax.set_xlabel("agent step")
        ax.set_ylabel("normalised reward")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    width = 0.8 / len(names)
    x = np.arange(len(METRIC_BARS))
    for k, name in enumerate(names):
        ax.bar(x + k * width - 0.4 + width / 2, _bar_values(report["metrics"][name]), width, label=name)
    ax.set_xticks(x, [label for _, label in METRIC_BARS], rotation=30, ha="right", fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("metrics (higher is better)")
    ax.legend(fontsize=7)
    fig.suptitle(f"reward quality on {report['env']} ({report['settings']['episodes']} seeds per policy)")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=80)


