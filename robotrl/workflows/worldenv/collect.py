"""``robotrl worldenv collect``: language-conditioned Meta-World data for the VLA, the world model and the reflector.

Per task, in robotrl's demo format with the task's instruction in ``meta.json``:

* ``data/expert/<task>``: ``collect.demos_per_task`` scripted-expert successes (the VLA's BC data, 5 as the paper);
* ``data/noisy/<task>``: the expert with gaussian action noise, kept whatever the outcome (failures for the world
  model and the reflector);
* ``data/policy/<task>``: rollouts of the BC VLA with its Laplace noise (World-Env's exploration data), collected
  once ``vla/vla.pt`` exists (run collect again after train-vla);
* ``data/random/<task>``: uniform random actions (the trivial policy: failures from the start state, and actions the
  demos never take, for the world model).

A folder with a ``meta.json`` is complete and skipped, so an interrupted collect resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write_text
from robotrl.demos import FORMAT_VERSION, episode_file, save_episode
from robotrl.errors import ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.workflows.worldenv.data import make_sim, sim_rollout
from robotrl.workflows.worldenv.policies import TrivialActor, VLAActor, load_vla
from robotrl.workflows.worldenv.settings import load_config, record_settings, setup_torch


def _meta(env: Any, task: str, instruction: str, kind: str, seeds: list[int], episodes: list[Any]) -> dict[str, Any]:
    info = env.robotrl_info
    return {
        "format_version": FORMAT_VERSION,
        **{k: info[k] for k in ("name", "suite", "task", "image_size", "frame_stack", "action_repeat", "camera",
                                "cameras", "fast_render", "max_episode_steps", "metaworld_version",
                                "reward_function_version")},
        "seed": seeds[0], "state_dim": int(env.observation_space["state"].shape[0]),
        "proprio_index": [int(i) for i in env.unwrapped.proprio_index],
        "action_dim": int(env.action_space.shape[0]), "num_episodes": len(episodes), "episode_seeds": seeds,
        "episode_lengths": [len(e.action) for e in episodes],
        "episode_returns": [float(e.reward.sum()) for e in episodes], "attempts": len(episodes),
        "instruction": instruction, "kind": kind, "successes": int(sum(bool(e.success.any()) for e in episodes)),
    }


def _collect(cfg: Any, out: Path, task: str, kind: str, n: int, act_for: Any, seed0: int,
             keep_failures: bool = True) -> str:
    folder = out / "data" / kind / task
    if (folder / "meta.json").is_file():
        return f"{kind}/{task}: already collected"
    folder.mkdir(parents=True, exist_ok=True)
    env = make_sim(cfg, task, seed0)
    beat = Heartbeat(f"collect {kind}/{task}")
    episodes, seeds, attempt = [], [], 0
    try:
        while len(episodes) < n and attempt < 3 * n + 5:
            seed = seed0 + attempt
            beat.tick(lambda: f"{len(episodes)}/{n} episodes")
            ep, _ = sim_rollout(env, act_for(seed), seed)
            attempt += 1
            if keep_failures or ep.success.any():
                save_episode(folder / episode_file(len(episodes)), ep)
                episodes.append(ep)
                seeds.append(seed)
        if len(episodes) < n:
            raise ConfigError(f"{kind}/{task}: only {len(episodes)}/{n} successful episodes in {attempt} attempts "
                               f"(max_episode_steps={cfg.max_episode_steps} may be too short for this task)")
        meta = _meta(env, task, cfg.instructions[task], kind, seeds, episodes)
    finally:
        env.close()
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))
    return f"{kind}/{task}: {len(episodes)} episodes, {meta['successes']} successful"


def collect(out: str | Path, overrides: list[str] = ()) -> list[str]:
    """Collect every kind of data for every task under ``out/data``; returns one line per (kind, task)."""
    from robotrl.envs.demos import expert_policy
    from robotrl.envs.metaworld import PROPRIO_INDEX

    out = Path(out)
    cfg = load_config(out, overrides, "collect")
    device = setup_torch(cfg)
    record_settings(cfg, out, "collect")
    c, lines = cfg.collect, []
    total = len(cfg.tasks) * (1 + sum(bool(c[k]) for k in ("noisy_per_task", "random_per_task", "policy_per_task")))

    def report(line: str) -> None:  # as each collection finishes: a long collect is never silent till the end
        lines.append(line)
        print(f"collect [{len(lines)}/{total}] {line}")
    vla_path = out / "vla" / "vla.pt"
    policy = load_vla(vla_path, device)[0] if c.policy_per_task and vla_path.is_file() else None
    text = load_vla(vla_path, device)[1] if policy is not None else None
    for i, task in enumerate(cfg.tasks):
        expert = expert_policy(task)
        base = int(cfg.seed) * 100_000 + i * 10_000  # disjoint seeds per task and kind; eval uses >= 1e6

        def expert_for(seed: int, noise: float = 0.0, expert: Any = expert) -> Any:
            rng = np.random.default_rng(seed)
            return lambda obs: np.clip(expert(obs["state"]) + noise * rng.standard_normal(4), -1, 1)[None].astype(
                np.float32)

        report(_collect(cfg, out, task, "expert", int(c.demos_per_task), expert_for, base,
                              keep_failures=False))
        if c.noisy_per_task:
            report(_collect(cfg, out, task, "noisy", int(c.noisy_per_task),
                                  lambda s: expert_for(s, float(c.noise_std)), base + 1000))
        if c.random_per_task:
            report(_collect(cfg, out, task, "random", int(c.random_per_task),
                                  lambda s: TrivialActor("random", 4, 1, seed=s), base + 3000))
        if c.policy_per_task:
            if policy is None:
                report(f"policy/{task}: skipped, no {vla_path} yet (run train-vla, then collect again)")
            else:
                report(_collect(cfg, out, task, "policy", int(c.policy_per_task),
                                      lambda s, t=task: VLAActor(policy, text, cfg.instructions[t], PROPRIO_INDEX,
                                                                 sample=True, seed=s), base + 2000))
    return lines
