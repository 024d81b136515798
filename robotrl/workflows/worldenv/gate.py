"""The fidelity gate's statistics: correlations with bootstrap CIs, the noise ceiling (the r a perfect world model
would reach with this many episodes on this policy set), the episodes the gate needs to have power, per-episode
agreement, and the verdict.

A *perfect* world model here is a perfectly calibrated ``WorldEnv``: each policy succeeds in it with the same
probability as in the simulator, its episodes independent of the simulator's (the conservative case: a model that
also reproduced each paired initial state's outcome would do better). Even that model's r is below 1, because both
success rates are estimated from a few episodes; when the policies' true success rates are close together, that
sampling noise is most of the spread and r is low whatever the model. The gate asks for a verdict only where such a
model would pass, with probability ``POWER`` or more.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POWER = 0.9          # a perfect world model must pass with at least this probability for the gate to give a verdict
CEILING_DRAWS = 2000  # simulated perfect-model measurements per ceiling
MAX_EPISODES = 256   # the largest episode count per task that "needs >= N episodes" searches


def correlations(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Pearson and Spearman of paired success rates with percentile bootstrap 95% CIs (NaN where undefined), and how
    many bootstrap resamples had an undefined r (fewer than 3 policies or a constant side: left out of the CI)."""
    from scipy import stats

    def both(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan"), float("nan")
        return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])

    r, rho = both(x, y)
    rng = np.random.default_rng(seed)
    boots = np.array([both(x[i], y[i]) for i in (rng.integers(len(x), size=len(x)) for _ in range(n_boot))]
                     if len(x) else np.empty((0, 2)))  # no policies (no VLA trained yet): every resample undefined
    out: dict[str, Any] = {"pearson": r, "spearman": rho, "n_policies": len(x), "bootstrap": int(n_boot)}
    for j, name in enumerate(("pearson", "spearman")):
        v = boots[:, j][np.isfinite(boots[:, j])] if len(boots) else np.array([])
        out[f"{name}_ci95"] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [None, None]
        out[f"{name}_undefined_resamples"] = int(n_boot - len(v))
    return out


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``x`` and ``y`` ([draws, K]); NaN where a row is constant."""
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(1) * (yc ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def perfect_model_r(p: np.ndarray, episodes: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` Pearson r's between two independent measurements of policies whose true success probabilities are
    ``p`` ([K policies, T tasks]), ``episodes`` per task each: what a perfectly calibrated WorldEnv would score."""
    p = np.clip(np.asarray(p, float), 0.0, 1.0)
    x = rng.binomial(episodes, p, (draws, *p.shape)).mean(2) / episodes
    y = rng.binomial(episodes, p, (draws, *p.shape)).mean(2) / episodes
    return pearson_rows(x, y)


def true_rates(p_hat: np.ndarray, episodes: int) -> np.ndarray:
    """The policies' true success rates as estimated from measured ones ([K, T], ``episodes`` per cell): the spread
    of the policies' mean rates (what r compares) shrunk by the part binomial noise explains (method of moments),
    each task's deviations scaled alike. Plugging in the measured rates would count that noise as real spread and
    overstate the ceiling."""
    p_hat = np.asarray(p_hat, float)
    if len(p_hat) < 2:
        return p_hat
    task_mean = p_hat.mean(0, keepdims=True)
    observed = p_hat.mean(1).var(ddof=1)
    cell = p_hat * (1 - p_hat) / (episodes - 1) if episodes > 1 else np.broadcast_to(task_mean * (1 - task_mean),
                                                                                      p_hat.shape)
    noise = cell.mean(0).sum() / p_hat.shape[1] ** 2  # variance of a policy's mean rate from sampling alone
    keep = np.sqrt(max(0.0, 1.0 - noise / observed)) if observed > 0 else 0.0
    return task_mean + keep * (p_hat - task_mean)


def pass_probability(p: np.ndarray, episodes: int, min_r: float, draws: int, rng: np.random.Generator) -> float:
    """P(r >= min_r) for a perfect world model on policies with true rates ``p`` (undefined r counts as a fail)."""
    return float(np.mean(np.nan_to_num(perfect_model_r(p, episodes, draws, rng), nan=-1.0) >= min_r))


def noise_ceiling(p_hat: np.ndarray, episodes: int, min_r: float, seed: int, draws: int = CEILING_DRAWS,
                  search: bool = True) -> dict[str, Any]:
    """The noise ceiling of a gate measured with ``episodes`` per task on policies with measured rates ``p_hat``
    ([K, T]): the perfect model's median r, its 95% interval, its one-sided lower bound at ``POWER`` (the gate has
    power when that bound is >= ``min_r``), its probability of passing, and (``search``) the episodes per task it
    needs. An undefined r (a constant success vector) counts as -1 in the interval and bound: a fail."""
    rng = np.random.default_rng(seed)
    if len(p_hat) < 3:  # r is undefined below 3 policies, for any world model
        return {"median": float("nan"), "ci95": [float("nan")] * 2, "lower_bound": float("nan"), "power": POWER,
                "pass_probability": 0.0, "undefined": draws, "draws": draws, "episodes_per_task": episodes,
                "needed_episodes_per_task": None, "policies": len(p_hat)}
    truth = true_rates(p_hat, episodes)
    r = np.nan_to_num(perfect_model_r(truth, episodes, draws, rng), nan=-1.0)
    lower = float(np.percentile(r, 100 * (1 - POWER)))
    return {"median": float(np.median(r)), "ci95": [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))],
            "lower_bound": lower, "power": POWER, "pass_probability": float(np.mean(r >= min_r)),
            "undefined": int(np.sum(r == -1.0)), "draws": draws, "episodes_per_task": episodes, "policies": len(p_hat),
            "needed_episodes_per_task": (episodes if lower >= min_r else
                                         episodes_needed(truth, min_r, rng, draws) if search else None)}


def episodes_needed(truth: np.ndarray, min_r: float, rng: np.random.Generator, draws: int = CEILING_DRAWS,
                    max_episodes: int = MAX_EPISODES) -> int | None:
    """The fewest episodes per task (a power of 2 times 1, 1.5: 2, 3, 4, 6, 8, 12, ...) with which a perfect world
    model passes with probability >= ``POWER`` on policies with true rates ``truth``; None up to ``max_episodes``
    (the policies' rates are too alike for any affordable count)."""
    n = 2
    while n <= max_episodes:
        for m in (n, n * 3 // 2):
            if m <= max_episodes and pass_probability(truth, m, min_r, draws, rng) >= POWER:
                return m
        n *= 2
    return None


def wilson(successes: int, n: int, z: float = 1.96) -> list[float | None]:
    """Wilson score 95% interval of a proportion (None, None for n = 0)."""
    if n == 0:
        return [None, None]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def chance_agreement(successes: int, n: int) -> float:
    """What a model independent of the simulator's episodes but with its success probability p agrees by chance,
    p^2 + (1 - p)^2, estimated without bias from a cell of ``successes`` in ``n`` episodes (plugging in the measured
    rate would add its sampling variance twice and overstate it: by ~0.04 at 12 episodes and p = 0.5)."""
    if n < 2:
        p = successes / n if n else 0.0
        return p * p + (1 - p) * (1 - p)
    return (successes * (successes - 1) + (n - successes) * (n - successes - 1)) / (n * (n - 1))


def agreement(sim: list[bool], world: list[bool], chance: np.ndarray | None = None) -> dict[str, Any]:
    """Per-episode agreement of paired episodes (same initial state, same actor seed) with its Wilson 95% CI; with
    ``chance`` (each episode's ``chance_agreement`` of its cell) also what an independent perfect model would agree
    by chance: agreement above it is per-episode fidelity, not only the right rates."""
    s, w = np.asarray(sim, bool), np.asarray(world, bool)
    same = int(np.sum(s == w))
    out: dict[str, Any] = {"agreement": same / len(s) if len(s) else float("nan"), "ci95": wilson(same, len(s)),
                           "episodes": int(len(s))}
    if chance is not None and len(s):
        out["independent_perfect_model"] = float(np.mean(chance))
    return out


def paired_cells(sim: np.ndarray, world: np.ndarray) -> dict[str, Any]:
    """``agreement`` of per-episode outcomes [K policies, T tasks, n episodes], chance from each cell's simulator
    count."""
    n = sim.shape[-1]
    chance = np.array([[chance_agreement(int(k), n) for k in row] for row in sim.sum(-1)])
    return agreement(sim.ravel(), world.ravel(), chance=np.repeat(chance[..., None], n, -1).ravel())


def verdict(r: float, ceiling: dict[str, Any], min_r: float, paired: dict[str, Any] | None = None) -> tuple[str, str]:
    """(status, one sentence): ``underpowered`` when a perfect world model could not pass reliably with these
    episodes and policies, else ``valid`` (r >= min_r, and with ``paired`` its agreement's 95% CI reaching what an
    independent perfect model agrees by chance) or ``not valid``. The second condition: r over a wide policy set can
    come from ranking policies that move against ones that hold still while WorldEnv calls every moving one a
    success, and post-training, which learns from each imagined episode's outcome, gets no signal there (measured:
    docs/results.md, "The gate as the world model trains")."""
    if ceiling.get("policies", 3) < 3:
        return "underpowered", (f"underpowered: r needs >= 3 learned policies, got {ceiling['policies']} (train the "
                                f"VLA first; vla.snapshot_every, fidelity.noise and fidelity.degrade add more)")
    if not ceiling["lower_bound"] >= min_r:
        need = ceiling["needed_episodes_per_task"]
        fix = (f"needs >= {need} episodes per task (fidelity.episodes={need})" if need else
               f"no episode count up to {MAX_EPISODES} per task suffices: the learned policies' simulator success "
               f"rates are too alike; widen the policy set (fidelity.degrade, fidelity.noise, vla.snapshot_every)")
        return "underpowered", (
            f"underpowered: {fix}; with {ceiling['episodes_per_task']} a perfect world model reaches Pearson r "
            f"{ceiling['median']:.2f} (noise ceiling; {POWER:.0%} lower bound {ceiling['lower_bound']:.2f} < "
            f"{min_r}) and passes with probability {ceiling['pass_probability']:.2f}; no verdict on this world model")
    if not (np.isfinite(r) and r >= min_r):
        return "not valid", (f"NOT valid: Pearson r {r:.3f} < {min_r} (or undefined) over the learned policies, "
                             f"where a perfect world model reaches {ceiling['median']:.2f}; post-training results in "
                             f"this world model are not evidence")
    chance = (paired or {}).get("independent_perfect_model")
    if chance is not None and paired["ci95"][1] is not None and paired["ci95"][1] < chance:
        lo, hi = paired["ci95"]
        return "not valid", (f"NOT valid: Pearson r {r:.3f} >= {min_r}, but paired episodes agree in "
                             f"{paired['agreement']:.2f} [{lo:.2f}, {hi:.2f}], below the {chance:.2f} a model "
                             f"independent of the simulator's episodes with its success rates reaches by chance: "
                             f"WorldEnv does not reproduce which episodes succeed; post-training results in this "
                             f"world model are not evidence")
    return "valid", (f"valid: Pearson r {r:.3f} >= {min_r} over the learned policies (noise ceiling "
                     f"{ceiling['median']:.2f})" + (f", paired agreement {paired['agreement']:.2f} (chance "
                                                    f"{chance:.2f})" if chance is not None else ""))


def perfect_model_gate(p_true: np.ndarray, episodes: int, min_r: float, runs: int, seed: int,
                       draws: int = 500) -> dict[str, Any]:
    """``runs`` simulated fidelity gates of a perfectly calibrated WorldEnv on policies with true success rates
    ``p_true`` ([K, T]), ``episodes`` per task: the median r, P(r >= min_r), and how often the gate says valid /
    not valid / underpowered (its noise ceiling estimated from each run's own simulator rates, and its paired
    agreement from per-episode outcomes, as ``fidelity`` does). The model's episodes are independent of the
    simulator's (the least a calibrated model does: a faithful one also agrees on which episodes succeed)."""
    rng = np.random.default_rng(seed)
    p_true = np.asarray(p_true, float)
    rs, status = [], []
    for i in range(runs):
        sim = rng.random((*p_true.shape, episodes)) < p_true[..., None]
        world = rng.random((*p_true.shape, episodes)) < p_true[..., None]
        r = pearson_rows(sim.mean((1, 2))[None], world.mean((1, 2))[None])[0]
        ceiling = noise_ceiling(sim.mean(2), episodes, min_r, seed=seed + 1 + i, draws=draws, search=False)
        rs.append(r)
        status.append(verdict(r, ceiling, min_r, paired_cells(sim, world))[0])
    rs_arr = np.nan_to_num(np.asarray(rs), nan=-1.0)
    return {"median_r": float(np.median(rs_arr)), "p_r_at_least_min": float(np.mean(rs_arr >= min_r)),
            **{k.replace(" ", "_"): float(np.mean([s == k for s in status]))
               for k in ("valid", "not valid", "underpowered")}}
