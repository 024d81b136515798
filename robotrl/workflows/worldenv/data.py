"""The World-Env data: the simulator at the World-Env settings, rollouts in it one action chunk at a time, and the
collected episodes (``out/data/<kind>/<task>/`` in the demo format, the task's instruction in ``meta.json``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.demos import load_demos, load_meta
from robotrl.episodes import EpisodeBuilder, chunked, record_episode
from robotrl.errors import ConfigError
from robotrl.types import Episode

KINDS = ("expert", "noisy", "policy", "random")  # data/<kind>/<task>/ in the demo format, "instruction" in meta.json


def env_cfg(cfg: Any, task: str) -> Any:
    """The Meta-World env config of ``task`` at the World-Env settings (one frame, pixels + full state)."""
    from robotrl.overrides import compose_config

    over = [f"env=metaworld/{task}", f"env.image_size={cfg.image_size}", "env.frame_stack=1",
            f"env.action_repeat={cfg.action_repeat}", "env.obs_type=pixels_state",
            f"env.max_episode_steps={cfg.max_episode_steps}"]
    if cfg.camera:
        over.append(f"env.camera={cfg.camera}")
    return compose_config(over).env


def make_sim(cfg: Any, task: str, seed: int) -> Any:
    from robotrl.envs import make_env

    return make_env(env_cfg(cfg, task), seed)


def load_data(root: Path, kinds: Sequence[str] = KINDS, tasks: Sequence[str] | None = None,
              ) -> list[tuple[str, str, Episode, np.ndarray]]:
    """(task, instruction, episode, proprio_index) for every episode collected under ``root/data``."""
    out = []
    for kind in kinds:
        for folder in sorted((root / "data" / kind).glob("*")):
            if not (folder / "meta.json").is_file():
                continue  # a collection interrupted before its meta.json: not data yet
            meta = load_meta(folder)
            if tasks is not None and meta["task"] not in tasks:
                continue
            pidx = np.asarray(meta["proprio_index"], np.int64)
            out.extend((meta["task"], meta["instruction"], ep, pidx) for ep in load_demos(folder))
    if not out:
        raise ConfigError(f"{root / 'data'}: no collected episodes of kinds {list(kinds)}; run "
                          f"`robotrl worldenv collect out={root}` first")
    return out


def data_digest(root: Path, kinds: Sequence[str] = KINDS, tasks: Sequence[str] | None = None) -> str:
    """Which collected episodes ``load_data(root, kinds, tasks)`` reads, as one digest: each finished collection's
    ``meta.json`` (its episodes' seeds, lengths and returns), so more, fewer or other episodes change it."""
    h = hashlib.sha256()
    for kind in kinds:
        for meta in sorted((root / "data" / kind).glob("*/meta.json")):
            if tasks is None or meta.parent.name in tasks:
                h.update(f"{kind}/{meta.parent.name}\n".encode() + meta.read_bytes())
    return h.hexdigest()[:16]


def sim_rollout(env: Any, act_chunk: Callable[[dict[str, np.ndarray]], np.ndarray], seed: int,
                stop: Callable[[np.ndarray], bool] | None = None) -> tuple[Episode, bool]:
    """One episode in a contract env, acting one chunk at a time; (episode, stopped by ``stop``).

    ``stop(frame uint8 [H, W, 3]) -> bool`` ends the episode early (a reflector's termination)."""
    until = None if stop is None else (lambda obs: stop(obs["pixels"][-3:].transpose(1, 2, 0)))
    played = record_episode(env, chunked(act_chunk), seed, builder=EpisodeBuilder(3, ("pixels", "state"), flags=False),
                            stop=until)
    ep = played.episode
    return ep._replace(obs={**ep.obs, "state": ep.obs["state"].astype(np.float32)}), played.stopped
