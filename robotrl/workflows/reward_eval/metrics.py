"""The reward-quality metrics of ``robotrl reward-eval`` (pure functions on arrays): EPIC distance, rank
correlations, success-detection F1 and the near-miss gap. See :mod:`robotrl.workflows.reward_eval` for what each
measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ================================================================================================ metrics
def pearson_distance(x: np.ndarray, y: np.ndarray) -> float:
    """sqrt((1 - rho) / 2) in [0, 1]; NaN when either input is constant (the correlation is undefined)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ValueError(f"pearson_distance needs two equal-length inputs of >= 2 values, got {x.size} and {y.size}")
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if denom <= 1e-12 * max(1.0, float(np.abs(x).max()) * float(np.abs(y).max())) * x.size:
        return float("nan")
    rho = float(np.clip((xc @ yc) / denom, -1.0, 1.0))
    return math.sqrt((1.0 - rho) / 2.0)


def _mean_over_samples(fn: RewardFn, states: np.ndarray, actions: np.ndarray, next_states: np.ndarray,
                       chunk_rows: int = 1 << 18) -> np.ndarray:
    """For each x in ``states``: mean over the cross product (A_j, S'_k) of fn(x, A_j, S'_k), shape [len(states)].

    Evaluated in chunks so a large dataset never materialises len(states) * |A| * |S'| rows at once.
    """
    n, na, ns = len(states), len(actions), len(next_states)
    per = na * ns
    step = max(1, chunk_rows // per)
    a_rep = np.repeat(actions, ns, axis=0)  # (na*ns, ...): each action with every next state
    sn_rep = np.tile(next_states, (na,) + (1,) * (next_states.ndim - 1))
    out = np.empty(n, np.float64)
    for i in range(0, n, step):
        x = states[i:i + step]
        m = len(x)
        r = fn(np.repeat(x, per, axis=0), np.tile(a_rep, (m,) + (1,) * (a_rep.ndim - 1)),
               np.tile(sn_rep, (m,) + (1,) * (sn_rep.ndim - 1)))
        out[i:i + m] = np.asarray(r, np.float64).reshape(m, per).mean(axis=1)
    return out


def canonicalize(fn: RewardFn, s: np.ndarray, a: np.ndarray, s_next: np.ndarray, state_samples: np.ndarray,
                 action_samples: np.ndarray, gamma: float) -> np.ndarray:
    """Sample-based EPIC canonicalisation of reward ``fn(s, a, s') -> [B]`` at the transitions (s, a, s')::

        C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')]

    with S, S' ~ ``state_samples`` and A ~ ``action_samples`` (the coverage distributions), averaged over their
    cross product. S and S' come from the *same* sample set, which makes the cancellation of a potential shaping
    gamma phi(s') - phi(s) exact rather than only in expectation. States and actions are arrays with the batch on
    axis 0 (vectors, or indices into a reward table).
    """
    r = np.asarray(fn(s, a, s_next), np.float64)
    e_next = _mean_over_samples(fn, s_next, action_samples, state_samples)
    e_cur = _mean_over_samples(fn, s, action_samples, state_samples)
    e_all = float(_mean_over_samples(fn, state_samples, action_samples, state_samples).mean())
    return r + gamma * e_next - e_cur - gamma * e_all


def epic_distance(fn_a: RewardFn, fn_b: RewardFn, s: np.ndarray, a: np.ndarray, s_next: np.ndarray,
                  gamma: float = 0.99, state_samples: np.ndarray | None = None,
                  action_samples: np.ndarray | None = None, n_samples: int = 64, seed: int = 0) -> float:
    """EPIC distance between two rewards over the transitions (s, a, s') (their distribution is D_T).

    Pearson distance of the two canonicalised rewards; the coverage samples default to ``n_samples`` draws (with
    replacement) of the transitions' next states and actions, shared by both rewards. For rewards of s' only the
    canonicalisation is a constant shift, so EPIC is the Pearson distance of the raw rewards. NaN if one reward is
    constant on the data (after canonicalisation).
    """
    rng = np.random.default_rng(seed)
    if state_samples is None:
        state_samples = s_next[rng.integers(0, len(s_next), n_samples)]
    if action_samples is None:
        action_samples = a[rng.integers(0, len(a), n_samples)]
    ca = canonicalize(fn_a, s, a, s_next, state_samples, action_samples, gamma)
    cb = canonicalize(fn_b, s, a, s_next, state_samples, action_samples, gamma)
    return pearson_distance(ca, cb)


def _rank_corr(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    """scipy's Spearman/Kendall, NaN (not a warning) when an input is constant or too short."""
    from scipy import stats

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    res = stats.spearmanr(x, y) if kind == "spearman" else stats.kendalltau(x, y)
    return float(res.statistic)


def value_order_correlation(rewards: Sequence[np.ndarray], successes: Sequence[np.ndarray]) -> dict[str, Any]:
    """Mean Spearman rho of reward vs time over successful episodes, up to and including the first success step.

    Episodes whose prefix has < 3 steps or a constant reward are skipped (rho undefined); ``episodes`` counts the
    ones used. ``rho`` is None when no episode qualifies.
    """
    rhos = []
    for r, ok in zip(rewards, successes, strict=True):
        ok = np.asarray(ok, bool)
        if not ok.any():
            continue
        prefix = np.asarray(r, np.float64)[: int(np.argmax(ok)) + 1]
        rho = _rank_corr("spearman", prefix, np.arange(len(prefix))) if len(prefix) >= 3 else float("nan")
        if not math.isnan(rho):
            rhos.append(rho)
    return {"rho": float(np.mean(rhos)) if rhos else None, "episodes": len(rhos)}


def episode_kendall_tau(model_returns: Sequence[float], gt_returns: Sequence[float]) -> float:
    """Kendall tau (scipy's tau-b, ties handled) of the episode ranking by model return vs simulator return."""
    return _rank_corr("kendall", np.asarray(model_returns), np.asarray(gt_returns))


def f1_score(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions; a ratio with a zero denominator is NaN."""
    pred, label = np.asarray(pred, bool).ravel(), np.asarray(label, bool).ravel()
    tp, fp, fn = int(np.sum(pred & label)), int(np.sum(pred & ~label)), int(np.sum(~pred & label))

    def ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def best_threshold(rewards: np.ndarray, labels: np.ndarray, max_candidates: int = 512) -> float:
    """The threshold t maximising the F1 of ``rewards >= t`` vs ``labels`` (inf = never, if there is no positive)."""
    rewards, labels = np.asarray(rewards, np.float64).ravel(), np.asarray(labels, bool).ravel()
    if not labels.any():
        return float("inf")
    cands = np.unique(rewards)
    if cands.size > max_candidates:
        cands = np.unique(np.quantile(rewards, np.linspace(0, 1, max_candidates)))
    scores = [f1_score(rewards >= t, labels)["f1"] for t in cands]
    return float(cands[int(np.nanargmax(scores))])


def near_miss_gap(expert_final: Mapping[int, float], near_final: Mapping[int, float], scale: float) -> dict[str, Any]:
    """Compare final-step rewards of successful expert episodes and near-misses, keyed by reset seed.

    ``gap`` = (mean expert - mean near-miss) / ``scale`` (the model's reward std): > 0 means the model puts success
    above the near-miss. ``pair_accuracy`` = fraction of seeds having both where the expert's final reward is higher.
    """
    out: dict[str, Any] = {"expert_final": _mean(expert_final.values()), "near_miss_final": _mean(near_final.values())}
    both = sorted(set(expert_final) & set(near_final))
    ok = out["expert_final"] is not None and out["near_miss_final"] is not None and scale > 0
    out["gap"] = (out["expert_final"] - out["near_miss_final"]) / scale if ok else None
    out["pair_accuracy"] = float(np.mean([expert_final[k] > near_final[k] for k in both])) if both else None
    out["pairs"] = len(both)
    return out


def _mean(values: Any) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


