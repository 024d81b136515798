"""Trivial-policy baselines: what a policy that learned nothing scores on the same seeded episodes.

A saturated actor (every action at +-1) or a policy stuck on one action can score well above a uniform random
policy: on dm-control cartpole_swingup the constant action +1 scores 75.3, exactly what a DrQ-v2 run stuck on its
early plateau reports. So a learning result is only shown to be learning when it beats *every* trivial policy:
uniform random actions, the best of a small grid of constant actions, and the agent's own first evaluation.

"Beats" is a one-sided test on the mean return: the agent's mean must exceed the baseline's by more than two
standard errors of the difference (episodes differ only by their seeded initial state, so the per-episode spread is
the noise to beat). For tasks with a success signal the success rate must also be at least the baseline's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from robotrl.workflows.rollout import Policy, random_policy, run_episodes, summarize

CONSTANT_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)  # each value on every action dimension at once


def constant_policy(action_space: gym.spaces.Box, value: float) -> Policy:
    """Always the same action: ``value`` (in the normalised [-1, 1] action units) on every dimension."""
    action = np.full(action_space.shape, value, dtype=np.float32)
    return lambda obs: action


def trivial_baselines(env: gym.Env, seeds: Sequence[int], seed: int,
                      grid: Sequence[float] = CONSTANT_GRID) -> dict[str, Any]:
    """Evaluate uniform random actions and each constant action of ``grid`` on ``seeds``.

    Returns ``{"random": summary, "constant": summary of the best constant (with its "value"),
    "constant_grid": {value: mean return}}``, summaries as :func:`robotrl.workflows.rollout.summarize` gives them.
    """
    def play(policy: Policy) -> dict[str, Any]:
        return summarize(run_episodes(env, policy, seeds))

    out: dict[str, Any] = {"random": play(random_policy(env.action_space, seed))}
    grid_summaries = {float(v): play(constant_policy(env.action_space, v)) for v in grid}
    best = max(grid_summaries, key=lambda v: grid_summaries[v]["return_mean"])
    out["constant"] = {"value": best, **grid_summaries[best]}
    out["constant_grid"] = {str(v): s["return_mean"] for v, s in grid_summaries.items()}
    return out


def trivial_baselines_for(env_cfg: Any, seeds: Sequence[int], seed: int) -> dict[str, Any]:
    """:func:`trivial_baselines` on a fresh copy of the env built with ``obs_type=state``.

    Trivial policies ignore observations, and the seeded initial states, dynamics and rewards do not depend on the
    observation type, so the state env plays the same episodes as the pixel env without rendering a frame (on a
    2-core CPU the rendering was most of the baselines' cost).
    """
    from omegaconf import OmegaConf

    from robotrl.envs import make_env

    state_cfg = OmegaConf.merge(env_cfg, {"obs_type": "state"})
    env = make_env(state_cfg, seed=seed)
    try:
        return trivial_baselines(env, seeds, seed)
    finally:
        env.close()


def beats(agent: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """True when ``agent``'s mean return is above ``baseline``'s by more than two standard errors of the difference
    (and its success rate, where the task has one, is not lower). Both are :func:`summarize` outputs."""
    se = math.sqrt(agent["return_std"] ** 2 / max(agent["episodes"], 1)
                   + baseline["return_std"] ** 2 / max(baseline["episodes"], 1))
    better_return = agent["return_mean"] - baseline["return_mean"] > 2.0 * se
    if agent.get("success_rate") is not None and baseline.get("success_rate") is not None:
        return better_return and agent["success_rate"] >= baseline["success_rate"]
    return better_return


def compare(agent: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"beats": {name: bool}, "beats_all": bool, "not_beaten": [names]}`` for the agent against each baseline."""
    verdicts = {name: beats(agent, summary) for name, summary in baselines.items()}
    return {"beats": verdicts, "beats_all": all(verdicts.values()),
            "not_beaten": [name for name, ok in verdicts.items() if not ok]}


def describe(name: str, summary: dict[str, Any]) -> str:
    """``constant +1.0`` / ``random`` / ``first eval`` labels for printing."""
    if name == "constant":
        return f"constant {summary['value']:+.1f}"
    return name.replace("_", " ")


def comparison_table(agent: dict[str, Any], baselines: dict[str, dict[str, Any]], label: str = "agent") -> str:
    """Plain-text lines: the agent and each baseline's return (and success) side by side, 80 columns wide."""
    def line(name: str, s: dict[str, Any]) -> str:
        success = "" if s.get("success_rate") is None else f"  success {s['success_rate']:.0%}"
        return f"  {name:<18} return {s['return_mean']:9.1f} ± {s['return_std']:7.1f}{success}"

    rows = [line(label, agent)] + [line(describe(n, s), s) for n, s in baselines.items()]
    return "\n".join(rows)
