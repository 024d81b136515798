"""Trivial-policy baselines for the tasks of docs/results.md, on the trainer's eval seeds.

Every learning result sits beside what a policy that learned nothing scores on the same seeded episodes: uniform
random actions and each constant action of a small grid (robotrl.workflows.baselines).
The policies ignore observations, so
the env is built with ``obs_type=state`` (same seeded initial states and rewards, no rendering cost).

    MUJOCO_GL=egl python bench/trivial_baselines.py dmc/cartpole_swingup:5 metaworld/push:3 [--out FILE.json]

Each argument is ENV:EPISODES (the eval seeds are 1_000_000 + i, i < EPISODES, as in the trainer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_module
from robotrl.envs import make_env

from robotrl.config import register_hydra
from robotrl.workflows.baselines import trivial_baselines
from robotrl.workflows.train import EVAL_SEED_BASE


def baselines_for(env_name: str, episodes: int, seed: int = 1) -> dict:
    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"env={env_name}", "env.obs_type=state"])
    env = make_env(cfg.env, seed=seed)
    seeds = [EVAL_SEED_BASE + i for i in range(episodes)]
    out = trivial_baselines(env, seeds, seed)
    out.update({"env": env_name, "episodes": episodes, **dict(getattr(env, "robotrl_info", {}))})
    env.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="ENV:EPISODES, e.g. dmc/cartpole_swingup:5")
    parser.add_argument("--out", type=Path)
    ns = parser.parse_args()
    results = []
    for item in ns.tasks:
        name, _, episodes = item.partition(":")
        res = baselines_for(name, int(episodes or 5))
        results.append(res)
        rnd, const = res["random"], res["constant"]
        success = "" if rnd["success_rate"] is None else (f" success {rnd['success_rate']:.2f} / "
                                                          f"{const['success_rate']:.2f}")
        print(f"{name} ({res['episodes']} eps): random {rnd['return_mean']:.1f} ± {rnd['return_std']:.1f}, best "
              f"constant {const['value']:+.1f}: {const['return_mean']:.1f} ± {const['return_std']:.1f}{success}; "
              f"grid {res['constant_grid']}", flush=True)
    if ns.out:
        ns.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
