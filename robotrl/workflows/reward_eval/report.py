"""Reward quality report: how well does a reward model track task progress and success on Meta-World?

``robotrl reward-eval env=metaworld/reach reward=clip_tiny[,other] [episodes=4 seed=0 max_steps=120 ...]``

Why: learned rewards (VLM-RM, LfVoid, KAGI...) are known to over-reward near-misses and shortcuts, and a training
run takes hours to reveal it. This report rolls out policies whose quality is known (Meta-World's scripted expert,
the expert with Gaussian action noise at a few levels, a *near-miss* = the expert stopped just before its first
success, and a uniform random policy), records a rendered RGB frame, the simulator reward, ``info["success"]`` and
``info`` per step, scores the frames with every reward model, and compares each model with the simulator:

``value_order``
    mean Spearman rho of the model reward vs the time step over successful episodes, from the first step up to and
    including the first success step (the part where an ideal progress reward rises; after it the expert holds).
``kendall_tau``
    Kendall tau between the episodes' summed model reward and their summed simulator return (all episodes).
``epic``
    EPIC pseudometric (Gleave et al. 2020, "Quantifying Differences in Reward Functions") to the simulator reward
    over the collected transitions, with the sample-based canonicalisation (:func:`canonicalize`) at ``gamma``.
    0 = equivalent up to positive scaling and potential shaping, 1 = opposite (r vs -r); sqrt(1/2) = uncorrelated.
``success_f1``
    per-step F1 of ``model.predict_success`` vs ``info["success"]``; a model without ``predict_success`` is given the
    reward threshold that maximises F1 on half of the episodes (even positions in seed-major order) and is scored on
    the other half (``success_f1_source`` says which).
``near_miss``
    mean final-step reward of near-miss episodes vs expert episodes that end in success (same seeds; an expert that
    succeeded but lost it again, e.g. pushed the puck past the goal, is left out), the gap in units of the
    model's reward std over all steps (> 0: the model ranks success above the near-miss) and the fraction of seeds
    whose expert final reward beats its near-miss final reward. Over-rewarded near-misses show up here.

Undefined correlations (a constant reward) are reported as null. The simulator reward itself is always scored as the
reference row ``env``: its EPIC is 0 and its Kendall tau 1 by construction, which checks the plumbing.

Models that need the live env (they read simulator state) may define ``bind(env)``: it is called once before the
rollouts and such models are scored online, one frame at a time, during the rollouts (with the step's ``info``);
all other models score the stored frames afterwards in batches of their ``batch_size``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.errors import ConfigError

log = logging.getLogger(__name__)
ENV_ROW = "env"
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Policy = Callable[[np.ndarray, int], np.ndarray]
_VERSION_PACKAGES = ("robotrl", "metaworld", "mujoco", "numpy", "scipy", "torch", "open_clip_torch", "gymnasium")


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


# ================================================================================================ rollouts
@dataclass
class Rollout:
    """One episode: post-step frames/rewards/success/info (step t = the state after action t)."""

    policy: str
    seed: int
    actions: np.ndarray                      # (T, A) float32 executed actions
    gt_reward: np.ndarray                    # (T,) simulator reward (summed over action repeat)
    success: np.ndarray                      # (T,) bool info["success"]
    infos: list[dict[str, Any]]              # (T,) the step infos
    frames: np.ndarray | None = None         # (T, H, W, 3) uint8 after each step, None when nothing needs frames
    online: dict[str, np.ndarray] = field(default_factory=dict)          # bound models' rewards (T,)
    online_success: dict[str, np.ndarray] = field(default_factory=dict)  # bound models' predict_success (T,)
    stop_step: int | None = None             # near-miss: first step whose action was replaced by "stop"

    @property
    def length(self) -> int:
        return len(self.gt_reward)


@dataclass(frozen=True)
class Settings:
    """What to roll out. ``max_steps`` counts simulator steps (``env.max_episode_steps``), as everywhere in robotrl."""

    episodes: int = 4
    seed: int = 0
    max_steps: int = 120
    noise: tuple[float, ...] = (0.1, 0.5)
    render_size: int = 64
    near_miss_margins: tuple[int, ...] = tuple(range(1, 21))  # agent steps; probes are cheap (no rendering)
    gamma: float = 0.99
    epic_samples: int = 64

    def validate(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes}, expected >= 1")
        if self.max_steps < 2:
            raise ConfigError(f"max_steps={self.max_steps}, expected >= 2 simulator steps")
        if self.render_size < 8:
            raise ConfigError(f"render_size={self.render_size}, expected >= 8 pixels")
        if any(not (sigma > 0 and math.isfinite(sigma)) for sigma in self.noise):
            raise ConfigError(f"noise={list(self.noise)}, expected positive action-noise stddevs (e.g. 0.1,0.5)")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"gamma={self.gamma}, expected a discount in [0, 1]")
        if not self.near_miss_margins or min(self.near_miss_margins) < 1:
            raise ConfigError(f"near_miss_margins={list(self.near_miss_margins)}, expected positive step counts")

    def policy_names(self) -> list[str]:
        return ["expert", *[f"noisy_{s:g}" for s in self.noise], "near_miss", "random"]


def expert_policy(task: str) -> Policy:
    """Meta-World's scripted expert on the 39-d state (robotrl.envs.demos), clipped to [-1, 1] as the demos are."""
    from robotrl.envs.demos import expert_policy as demo_expert

    get_action = demo_expert(task)

    def act(state: np.ndarray, t: int) -> np.ndarray:
        return get_action(state)

    return act


def noisy_policy(base: Policy, sigma: float, rng: np.random.Generator) -> Policy:
    """``base`` plus N(0, sigma^2) per action dim, clipped to [-1, 1]."""
    def act(state: np.ndarray, t: int) -> np.ndarray:
        a = base(state, t)
        return np.clip(a + rng.normal(0.0, sigma, a.shape), -1.0, 1.0).astype(np.float32)

    return act


def stopped_policy(base: Policy, stop_step: int) -> Policy:
    """``base`` before ``stop_step``; from then on the arm stops (zero motion) and the gripper keeps its last command,
    so the scene freezes just short of success instead of, e.g., dropping a held object."""
    last = {"a": None}

    def act(state: np.ndarray, t: int) -> np.ndarray:
        if t < stop_step or last["a"] is None:
            last["a"] = base(state, t)
            return last["a"]
        a = np.zeros_like(last["a"])
        a[3:] = last["a"][3:]
        return a

    return act


def random_policy(action_dim: int, rng: np.random.Generator) -> Policy:
    def act(state: np.ndarray, t: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)

    return act


def _plain_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """numpy scalars -> python, so infos can be passed around and serialised."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in info.items()}


def rollout(env: Any, policy: Policy, seed: int, name: str, render_size: int | None,
            bound: Mapping[str, Any] | None = None) -> Rollout:
    """Run ``policy`` from ``env.reset(seed=seed)`` to the time limit.

    ``render_size=None`` renders nothing (probe rollouts, or when only the simulator reward is scored). ``bound``
    models (those with ``bind(env)``) are scored on each frame right after its step, with the step's info.
    """
    from robotrl.rewards.base import render_rgb

    bound = dict(bound or {})
    obs, _ = env.reset(seed=seed)
    actions, rewards, successes, infos, frames = [], [], [], [], []
    online: dict[str, list[float]] = {k: [] for k in bound}
    online_ok: dict[str, list[bool]] = {k: [] for k in bound if hasattr(bound[k], "predict_success")}
    done, t = False, 0
    while not done:
        action = policy(obs["state"], t)
        obs, reward, terminated, truncated, info = env.step(action)
        info = _plain_info(info)
        actions.append(action)
        rewards.append(float(reward))
        successes.append(bool(info.get("success", False)))
        infos.append(info)
        if render_size is not None:
            frame = render_rgb(env, render_size)
            frames.append(frame)
            for key, model in bound.items():
                online[key].append(float(np.asarray(model(frame[None], [info]))[0]))
                if key in online_ok:
                    online_ok[key].append(bool(np.asarray(model.predict_success(frame[None], [info]))[0]))
        done, t = terminated or truncated, t + 1
    return Rollout(policy=name, seed=seed, actions=np.asarray(actions, np.float32),
                   gt_reward=np.asarray(rewards, np.float64), success=np.asarray(successes, bool), infos=infos,
                   frames=np.stack(frames) if frames else None,
                   online={k: np.asarray(v, np.float64) for k, v in online.items()},
                   online_success={k: np.asarray(v, bool) for k, v in online_ok.items()})


def near_miss_rollout(env: Any, expert: Policy, seed: int, first_success: int, margins: Sequence[int],
                      render_size: int | None, bound: Mapping[str, Any] | None = None) -> Rollout | None:
    """The expert stopped ``m`` steps before its first success step, for the smallest ``m`` in ``margins`` whose
    episode does not succeed (checked on an unrendered probe, then on the recorded episode). None if every margin
    still succeeds (the arm's momentum carries it in) or would stop before the first step."""
    for margin in sorted(margins):
        stop = first_success - margin + 1  # the action at index first_success produced the first success
        if stop < 1:
            return None
        if rollout(env, stopped_policy(expert, stop), seed, "near_miss", None).success.any():
            continue
        ep = rollout(env, stopped_policy(expert, stop), seed, "near_miss", render_size, bound)
        if ep.success.any():  # the env is deterministic per seed, so this would be a bug; never report it as a miss
            raise RuntimeError(f"near-miss rollout for seed {seed} succeeded although its probe did not")
        ep.stop_step = stop
        return ep
    return None


def collect(env: Any, task: str, settings: Settings, render_size: int | None,
            bound: Mapping[str, Any] | None = None) -> tuple[list[Rollout], dict[str, Any]]:
    """All policies' episodes, seed-major (episode i of every policy resets with ``settings.seed + i``).

    Returns the rollouts and bookkeeping (near-miss stop steps, dropped near-misses).
    """
    expert = expert_policy(task)
    action_dim = int(env.action_space.shape[0])
    out: list[Rollout] = []
    notes: dict[str, Any] = {"near_miss_dropped_seeds": [], "near_miss_stop_steps": {}, "expert_first_success": {}}
    for i in range(settings.episodes):
        seed = settings.seed + i
        ep = rollout(env, expert, seed, "expert", render_size, bound)
        out.append(ep)
        for j, sigma in enumerate(settings.noise):
            rng = np.random.default_rng([settings.seed, i, j, 1])
            out.append(rollout(env, noisy_policy(expert, sigma, rng), seed, f"noisy_{sigma:g}", render_size, bound))
        near = None
        if ep.success.any():
            first = int(np.argmax(ep.success))
            notes["expert_first_success"][seed] = first
            near = near_miss_rollout(env, expert, seed, first, settings.near_miss_margins, render_size, bound)
        if near is None:
            notes["near_miss_dropped_seeds"].append(seed)
        else:
            notes["near_miss_stop_steps"][seed] = near.stop_step
            out.append(near)
        rng = np.random.default_rng([settings.seed, i, 2])
        out.append(rollout(env, random_policy(action_dim, rng), seed, "random", render_size, bound))
    return out, notes


# ================================================================================================ scoring
def score_offline(model: Any, rollouts: Sequence[Rollout]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per-episode rewards (and predict_success, if the model has it) from the stored frames, in batches of the
    model's ``batch_size`` across episode boundaries (one forward pass per batch, not per episode)."""
    frames = np.concatenate([ep.frames for ep in rollouts])
    infos = [info for ep in rollouts for info in ep.infos]
    bs = int(getattr(model, "batch_size", 64) or 64)
    has_success = hasattr(model, "predict_success")
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
        bound = {k: m for k, m in models.items() if hasattr(m, "bind")}
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
            oks = [ep.online_success[name] for ep in rollouts] if hasattr(model, "predict_success") else None
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rewards)
    policies = list(dict.fromkeys(ep.policy for ep in rollouts))
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.6), squeeze=False)
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
    plt.close(fig)


# ================================================================================================ CLI
REPORT_DEFAULTS: dict[str, Any] = {"env": None, "reward": "env", "episodes": 4, "seed": 0, "max_steps": 120,
                                   "render_size": 0, "noise": "0.1,0.5", "gamma": 0.99, "out": None}
# render_size=0: the largest reward.render_size of the models asked for (64 if none). max_steps: simulator steps.
PASSTHROUGH = ("env.", "reward.", "device=")  # handed to hydra's compose (e.g. env.camera=corner, reward.alpha=0.5)


def _floats(text: str, key: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{key}={text!r}, expected comma-separated numbers (e.g. 0.1,0.5)") from None


def _compose(overrides: list[str]) -> Any:
    """hydra's compose, with its multi-line composition errors turned into one ConfigError line."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    try:
        with initialize_config_module("robotrl.configs", version_base="1.3"):
            return compose("config", overrides=overrides)
    except HydraException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot compose the config with overrides {overrides}: {first}") from None


def build_models(reward_names: Sequence[str], base: list[str], passthrough: list[str]) -> tuple[dict[str, Any], int]:
    """Reward models by config name (``env`` is skipped: it is always the reference row) and the largest render
    size they ask for (``reward.render_size``, default 224).

    A ``reward.KEY=...`` override goes to every listed reward whose config has KEY (so ``reward=clip,kagi
    reward.alpha=0.5`` sets CLIP's alpha only); one that fits none of them is an error, not silently dropped.
    """
    from robotrl.rewards import is_env_reward, make_reward

    reward_over = [a for a in passthrough if a.startswith("reward.")]
    other = [a for a in passthrough if not a.startswith("reward.")]
    models: dict[str, Any] = {}
    used: set[str] = set()
    size = 0
    for name in reward_names:
        cfg = _compose([*base, f"reward={name}", *other])
        mine = [a for a in reward_over if a.partition("=")[0].split(".")[1] in cfg.reward]
        used.update(mine)
        if mine:
            cfg = _compose([*base, f"reward={name}", *other, *mine])
        if is_env_reward(cfg.reward):
            continue
        models[name] = make_reward(cfg.reward)
        size = max(size, int(cfg.reward.get("render_size") or 224))
    unused = [a for a in reward_over if a not in used]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: no such key in the config of reward {', '.join(reward_names)}")
    return models, size


def reward_eval_main(args: list[str]) -> int:
    """``robotrl reward-eval env=metaworld/<task> reward=a[,b] [episodes= seed= max_steps= render_size= noise=
    gamma= out=DIR] [env.*=... reward.*=... device=...]``: write report.json and report.png, print a summary."""
    from robotrl.cli import check_group_choices, parse_kv

    passthrough = [a for a in args if a.startswith(PASSTHROUGH)]
    opts = parse_kv([a for a in args if not a.startswith(PASSTHROUGH)], REPORT_DEFAULTS)
    if opts["env"] is None:
        raise ConfigError("robotrl reward-eval needs env=metaworld/<task> (see `robotrl envs metaworld`)")
    reward_names = [r for r in str(opts["reward"]).split(",") if r]
    check_group_choices([f"env={opts['env']}", f"reward={','.join(reward_names)}"])
    if not opts["env"].startswith("metaworld/"):
        raise ConfigError(f"reward-eval needs a Meta-World env (it rolls out the scripted expert), got {opts['env']!r}")
    settings = Settings(episodes=opts["episodes"], seed=opts["seed"], max_steps=opts["max_steps"],
                        noise=_floats(opts["noise"], "noise"), render_size=opts["render_size"] or 64,
                        gamma=opts["gamma"])
    settings.validate()  # before any model is built
    base = [f"env={opts['env']}", f"env.max_episode_steps={opts['max_steps']}"]
    env_over = [a for a in passthrough if a.startswith("env.")]
    cfg = _compose([*base, *env_over, "env.obs_type=state"])  # the expert reads the state; no agent pixels needed
    models, model_size = build_models(reward_names, base, passthrough)
    if not opts["render_size"] and model_size:
        settings = replace(settings, render_size=model_size)
    out = Path(opts["out"] or f"reward_eval/{opts['env'].replace('/', '-')}")
    report = run_report(cfg.env, models, settings, out, extra={"command": ["robotrl", "reward-eval", *args]})
    print(format_summary(report))
    print(f"wrote {out / 'report.json'} and {out / 'report.png'}")
    return 0


def format_summary(report: Mapping[str, Any]) -> str:
    """A fixed-width table: one row per reward model."""
    def fmt(v: Any) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    lines = [f"{'reward':<16} {'spearman':>8} {'kendall':>8} {'EPIC':>8} {'F1':>8} {'nm-gap':>8} {'nm-acc':>8}"]
    for name, m in report["metrics"].items():
        vals = (m["value_order"]["rho"], m["kendall_tau"], m["epic"], m["success_f1"], m["near_miss"]["gap"],
                m["near_miss"]["pair_accuracy"])
        lines.append(f"{name:<16} " + " ".join(f"{fmt(v):>8}" for v in vals))
    pol = ", ".join(f"{k}: {v['success_rate']:.0%} success" for k, v in report["policies"].items())
    return "\n".join([*lines, f"policies ({report['env']}): {pol}"])


__all__ = ["Rollout", "Settings", "canonicalize", "collect", "epic_distance", "episode_kendall_tau", "f1_score",
           "near_miss_rollout", "pearson_distance", "reward_eval_main", "reward_metrics", "rollout", "run_report",
           "value_order_correlation"]
