"""The rollouts ``robotrl reward-eval`` scores: Meta-World's scripted expert, the expert with action noise, the
near-miss (the expert stopped just before its first success) and a uniform random policy."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robotrl.episodes import record_episode
from robotrl.errors import ConfigError

Policy = Callable[[np.ndarray, int], np.ndarray]


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
    first_frame: np.ndarray | None = None    # (H, W, 3) the frame before the first step (recordings), for reset()

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
    from robotrl.rewards.capabilities import reward_capabilities

    bound = dict(bound or {})
    actions, rewards, successes, infos, frames = [], [], [], [], []
    online: dict[str, list[float]] = {k: [] for k in bound}
    online_ok: dict[str, list[bool]] = {k: [] for k in bound if reward_capabilities(bound[k]).predicts_success}
    steps = itertools.count()  # the step index ``t`` the policy is called with

    def on_step(action: np.ndarray, reward: float, obs: Any, terminated: bool, truncated: bool,
                info: dict[str, Any]) -> None:
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

    record_episode(env, lambda obs: policy(obs["state"], next(steps)), seed, on_step=on_step)
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


