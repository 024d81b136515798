"""Run whole episodes with a policy: shared by the trainer's evaluation, the random baseline and `robotrl eval`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]
EpisodeStart = Callable[[], None]


def run_episode(env: gym.Env, policy: Policy, seed: int, frames: list[np.ndarray] | None = None,
                on_reset: EpisodeStart | None = None) -> dict[str, Any]:
    """Play one episode from ``env.reset(seed=seed)``; append ``env.render()`` frames to ``frames`` if given.

    Success is "solved at any step" (info["success"] true at least once), Meta-World's usual definition; it is
    None for tasks that define no success.
    """
    obs, info = env.reset(seed=seed)
    if on_reset is not None:
        on_reset()
    total, length, success = 0.0, 0, None
    if frames is not None:
        frames.append(env.render())
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += float(reward)
        length += 1
        if "success" in info:
            success = bool(success) or bool(info["success"])
        if frames is not None:
            frames.append(env.render())
        done = terminated or truncated
    return {"seed": int(seed), "return": total, "success": success, "length": length}


def run_episodes(env: gym.Env, policy: Policy, seeds: Sequence[int], video_path: Path | None = None,
                 video_fps: int = 30, on_reset: EpisodeStart | None = None) -> list[dict[str, Any]]:
    """Play one episode per seed; the first one is recorded to ``video_path`` (mp4) if given."""
    results = []
    for i, seed in enumerate(seeds):
        frames: list[np.ndarray] | None = [] if (video_path is not None and i == 0) else None
        results.append(run_episode(env, policy, seed, frames, on_reset))
        if frames:
            write_video(video_path, frames, video_fps)
    return results


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    """Write an mp4 next to its final name, then rename it, so a crash never leaves a truncated video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
    tmp.replace(path)


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    """Mean/std of returns, mean length and success rate (None where the task defines no success)."""
    returns = np.array([r["return"] for r in results], dtype=np.float64)
    successes = [r["success"] for r in results if r["success"] is not None]
    return {
        "episodes": len(results),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(np.mean([r["length"] for r in results])),
        "success_rate": float(np.mean(successes)) if successes else None,
    }


def random_policy(action_space: gym.spaces.Box, seed: int) -> Policy:
    """Uniform random actions from a private generator (the baseline the trained agent is compared with)."""
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high
    return lambda obs: rng.uniform(low, high).astype(np.float32)
