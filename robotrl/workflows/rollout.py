"""Run whole episodes with a policy: shared by the trainer's evaluation, the random baseline and `robotrl eval`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

from robotrl.episodes import record_episode

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]
EpisodeStart = Callable[[], None]


def run_episode(env: gym.Env, policy: Policy, seed: int, frames: list[np.ndarray] | None = None,
                on_reset: EpisodeStart | None = None) -> dict[str, Any]:
    """Play one episode from ``env.reset(seed=seed)``; append ``env.render()`` frames to ``frames`` if given.

    Success is "solved at any step" (info["success"] true at least once), Meta-World's usual definition; it is
    None for tasks that define no success.
    """
    start = None if on_reset is None else (lambda obs: on_reset())
    return record_episode(env, policy, seed, on_reset=start, frames=frames).as_result()


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


BatchPolicy = Callable[[dict[str, np.ndarray]], np.ndarray]


def run_episodes_vector(venv: Any, policy: BatchPolicy, seeds: Sequence[int], video_path: Path | None = None,
                        video_fps: int = 30, on_reset: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """:func:`run_episodes` on a vector env (``robotrl.envs.vector``, autoreset disabled): the seeds are dealt to
    the sub-envs in order as they free up, so each episode is the one ``reset(seed=seed)`` gives a single env.
    ``policy`` maps a batch of observations to (num_envs, A) actions; ``on_reset(i)`` is called when sub-env i
    starts an episode. A sub-env with no seed left is reset unseeded and its steps ignored. An episode whose
    worker was restarted is played again from its seed. Results come back in the order of ``seeds``. (Its own loop,
    not :func:`robotrl.episodes.record_episode`: the sub-envs' episodes start and end at different steps.)"""
    from robotrl.envs.vector import RESTARTED

    n = venv.num_envs
    queue = list(enumerate(seeds))
    slot: list[tuple[int, int] | None] = [None] * n  # (position in seeds, seed) per sub-env
    acc = [{"return": 0.0, "length": 0, "success": None} for _ in range(n)]
    results: dict[int, dict[str, Any]] = {}
    frames: list[np.ndarray] | None = [] if video_path is not None and seeds else None

    def deal(mask: np.ndarray) -> dict[str, np.ndarray]:
        reset_seeds: list[int | None] = [None] * n
        for i in np.flatnonzero(mask):
            slot[i] = queue.pop(0) if queue else None
            reset_seeds[i] = None if slot[i] is None else slot[i][1]
            acc[i] = {"return": 0.0, "length": 0, "success": None}
            if slot[i] is not None and on_reset is not None:
                on_reset(int(i))
        obs, _ = venv.reset(seed=reset_seeds, options={"reset_mask": mask})
        return obs

    def record(i: int) -> None:
        if frames is not None and slot[i] is not None and slot[i][0] == 0:
            frames.append(venv.call_at(i, "render"))

    obs = deal(np.ones(n, bool))
    record(0)
    while len(results) < len(seeds):
        obs, reward, terminated, truncated, info = venv.step(policy(obs))
        done = np.logical_or(terminated, truncated)
        for i in range(n):
            if slot[i] is None:
                continue
            if info.get(RESTARTED, np.zeros(n, bool))[i]:
                queue.insert(0, slot[i])  # the episode is played again from its seed
                if frames is not None and slot[i][0] == 0:
                    frames.clear()
                continue
            a = acc[i]
            a["return"] += float(reward[i])
            a["length"] += 1
            if "success" in info and info.get("_success", np.ones(n, bool))[i]:
                a["success"] = bool(a["success"]) or bool(info["success"][i])
            record(i)
            if done[i]:
                results[slot[i][0]] = {"seed": int(slot[i][1]), **a}
        if done.any():
            obs = deal(done)
    if frames:
        write_video(video_path, frames, video_fps)
    return [results[k] for k in range(len(seeds))]


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
