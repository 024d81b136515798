"""Scripted-expert demonstrations for Meta-World, written in the robotrl demo format (:mod:`robotrl.demos`).

Only successful episodes (``success.any()``) are saved.  The expert acts once per *agent* step on the
state observation and its action is repeated ``action_repeat`` times, exactly as an agent's would be, so the
demos live in the same MDP the agent trains in.  Episode ``i`` of attempt ``j`` is reset with seed
``seed + j``, so every saved episode can be replayed from ``episode_seeds``.  Every file is written
atomically (temp file in the same directory, flush, fsync, ``os.replace``) so a crash never leaves a
half-written episode behind a valid name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.demos import FORMAT_VERSION, _write_meta, episode_file, prepare_new_demo_dir, save_episode
from robotrl.episodes import EpisodeBuilder, record_episode
from robotrl.errors import ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.types import Episode


def expert_policy(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """Meta-World's scripted expert for ``task`` on the 39-d state: float32 actions clipped to [-1, 1]."""
    from metaworld.policies import ENV_POLICY_MAP

    get_action = ENV_POLICY_MAP[f"{task}-v3"]().get_action

    def act(state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip, as the env would
            warnings.filterwarnings("ignore", message="Constant", category=UserWarning)
            return np.clip(get_action(np.asarray(state, np.float64)), -1.0, 1.0).astype(np.float32)

    return act


def _rollout(env: Any, policy: Callable[[np.ndarray], np.ndarray], seed: int) -> Episode:
    """One expert episode through the contract env (expert reads state; actions clipped to [-1, 1])."""
    channels = env.observation_space["pixels"].shape[0] // env.robotrl_info["frame_stack"]  # 3 per camera view
    builder = EpisodeBuilder(channels, ("pixels", "state"), flags=False)
    return record_episode(env, lambda obs: policy(obs["state"]), seed, builder=builder).episode


def generate_demos(
    env_cfg: Any, num_episodes: int, seed: int, out_dir: str | Path, max_attempts: int | None = None
) -> Path:
    """Roll out Meta-World's scripted expert through ``make_env`` and save ``num_episodes`` successes.

    ``obs_type`` is forced to ``pixels_state`` (the expert reads the state, the format stores both).  Raises
    RuntimeError if fewer than ``num_episodes`` successes come out of ``max_attempts`` (default
    ``2 * num_episodes + 5``) rollouts; meta.json is then not written, so the directory does not load.
    """
    from robotrl.envs import make_env, parse_env_cfg

    cfg = {**dict(env_cfg.items() if hasattr(env_cfg, "items") else env_cfg), "obs_type": "pixels_state"}
    spec = parse_env_cfg(cfg)
    if spec.suite != "metaworld":
        raise ConfigError(f"demos need a Meta-World env (scripted expert), got {spec.name!r}")
    if num_episodes < 1:
        raise ConfigError(f"num_episodes must be >= 1, got {num_episodes}")
    out = Path(out_dir)
    prepare_new_demo_dir(out, "out")
    out.mkdir(parents=True, exist_ok=True)
    max_attempts = max_attempts or 2 * num_episodes + 5
    env, policy = make_env(cfg, seed), expert_policy(spec.task)
    saved_seeds, lengths, returns, attempt = [], [], [], 0
    beat = Heartbeat(f"demos {spec.name}")
    try:
        while len(saved_seeds) < num_episodes and attempt < max_attempts:
            beat.tick(lambda n=attempt: f"{len(saved_seeds)}/{num_episodes} successful episodes saved ({n} rolled out)")
            episode = _rollout(env, policy, seed + attempt)
            if episode.success.any():
                save_episode(out / episode_file(len(saved_seeds)), episode)
                saved_seeds.append(seed + attempt)
                lengths.append(len(episode.action))
                returns.append(float(episode.reward.sum()))
            attempt += 1
        info = dict(env.robotrl_info)
        proprio_index = getattr(env.unwrapped, "proprio_index", None)
    finally:
        env.close()
    if len(saved_seeds) < num_episodes:
        raise RuntimeError(
            f"{spec.name}: only {len(saved_seeds)}/{num_episodes} expert episodes succeeded in {attempt} attempts"
        )
    meta = {
        "format_version": FORMAT_VERSION,
        **{k: info[k] for k in ("name", "suite", "task", "image_size", "frame_stack", "action_repeat")},
        **{k: info[k] for k in ("camera", "cameras", "fast_render", "max_episode_steps")},
        **{k: info[k] for k in ("metaworld_version", "reward_function_version")},
        "seed": seed,
        "state_dim": int(env.observation_space["state"].shape[0]),
        **({} if proprio_index is None else {"proprio_index": [int(i) for i in proprio_index]}),
        "action_dim": int(env.action_space.shape[0]),
        "num_episodes": num_episodes,
        "episode_seeds": saved_seeds,
        "episode_lengths": lengths,
        "episode_returns": returns,
        "attempts": attempt,
    }
    _write_meta(out, meta)
    return out


__all__ = ["expert_policy", "generate_demos"]
