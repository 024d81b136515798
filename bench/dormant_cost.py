"""Cost of the dormant-ratio diagnostic as a fraction of update time: TD-MPC2, MoDem-V2's actor ensemble, SB3 SAC/PPO.

Usage:
  python bench/dormant_cost.py [--threads 1] [--blocks 5] [--per-block 3] [--model-size 5] [--batch 256]

For each agent, timed blocks interleave (so the shared machine's slow spells hit both) the agent's update without
the diagnostic and one diagnostic computation on the same batch:
  * tdmpc2       ``TDMPC2Agent.update_from`` on a synthetic state batch (horizon 3; state, not pixels: without the
                 conv encoder the update is cheapest, so the fraction is the largest) vs ``dormant_metrics`` on the
                 batch's B first latents (policy prior + the whole Q ensemble);
  * modem_v2     the same with ``num_pi=5`` (MoDem-V2's actor ensemble: 5 priors measured);
  * sb3_sac      one SB3 ``SAC.train(gradient_steps=1)`` on a filled replay buffer (configs/agent/sb3_sac.yaml's
                 batch size and net) vs ``sb3_dormant_stats`` on 256 stored transitions;
  * sb3_ppo      one SB3 ``PPO.train()`` (configs/agent/sb3_ppo.yaml: 10 epochs over a 2048-step rollout) vs
                 ``sb3_dormant_stats`` on 256 rollout steps.
The diagnostic runs every K-th update (``dormant_every``, from each agent's config), so its amortised share is
(one computation / one update) / K. Target: < 2% of update time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml
from robotrl.agents.sb3 import SB3Agent
from robotrl.agents.sb3_dormant import _batch, sb3_dormant_stats
from robotrl.agents.tdmpc2 import TDMPC2Agent

from robotrl.types import Trajectories

ROOT = Path(__file__).resolve().parents[1]
STATE_DIM, ACTION_DIM = 24, 6  # walker-like


def time_block(fn: Callable[[], object], n: int) -> float:
    """Milliseconds per call over ``n`` calls."""
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e3 * (time.perf_counter() - t) / n


def spaces() -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    obs = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)})
    return obs, gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def tdmpc2_runners(model_size: int, batch: int, num_pi: int) -> tuple[dict[str, Callable[[], object]], int]:
    cfg = yaml.safe_load((ROOT / "configs" / "agent" / "tdmpc2.yaml").read_text())
    obs_space, act_space = spaces()
    agent = TDMPC2Agent(obs_space, act_space, "cpu", model_size=model_size, batch_size=batch, num_pi=num_pi,
                        dormant_every=0, seed=0)
    g = torch.Generator().manual_seed(0)
    h = agent.horizon
    traj = Trajectories({"state": torch.randn(h + 1, batch, STATE_DIM, generator=g)},
                        torch.rand(h, batch, ACTION_DIM, generator=g) * 2 - 1, torch.randn(h, batch, 1, generator=g),
                        torch.zeros(h, batch, 1))
    with torch.no_grad():  # the batch's first latents, which update_from measures
        z = agent.model.encode({"state": traj.obs["state"][0]})
    return {"update": lambda: agent.update_from(traj), "diagnostic": lambda: agent.dormant_metrics(z)}, int(
        cfg["dormant_every"])


def _sb3_env() -> gym.Env:
    from robotrl.agents.sb3 import _SpacesEnv

    return _SpacesEnv(*spaces())


def sb3_runners(algorithm: str) -> tuple[dict[str, Callable[[], object]], int]:
    cfg = yaml.safe_load((ROOT / "configs" / "agent" / f"sb3_{algorithm.lower()}.yaml").read_text())
    every = int(cfg.pop("dormant_every"))
    for key in ("_target_", "name", "task_overrides", "dormant_threshold"):
        cfg.pop(key, None)
    obs_space, act_space = spaces()
    run = {"seed": 0, "buffer_size": 10_000, "learning_starts": 0} if algorithm == "SAC" else {"seed": 0}
    agent = SB3Agent(obs_space, act_space, "cpu", train_env=_sb3_env(), run_kwargs=run, dormant_every=0, **cfg)
    model, rng = agent.model, np.random.default_rng(0)
    if algorithm == "SAC":
        for _ in range(5000):
            obs = {"state": rng.standard_normal((1, STATE_DIM), np.float32)}
            nxt = {"state": rng.standard_normal((1, STATE_DIM), np.float32)}
            model.replay_buffer.add(obs, nxt, rng.uniform(-1, 1, (1, ACTION_DIM)).astype(np.float32),
                                    rng.standard_normal(1).astype(np.float32), np.zeros(1), [{}])
        update = lambda: model.train(gradient_steps=1, batch_size=model.batch_size)  # noqa: E731
    else:
        buf = model.rollout_buffer
        buf.reset()
        while not buf.full:
            buf.add({"state": rng.standard_normal((1, STATE_DIM), np.float32)},
                    rng.uniform(-1, 1, (1, ACTION_DIM)).astype(np.float32), rng.standard_normal(1).astype(np.float32),
                    np.zeros(1, bool), torch.zeros(1), torch.zeros(1))
        buf.compute_returns_and_advantage(torch.zeros(1), np.zeros(1, bool))
        update = model.train
    batch = _batch(model, np.random.default_rng(1), 256)
    return {"update": update, "diagnostic": lambda: sb3_dormant_stats(model, *batch)}, every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=3)
    parser.add_argument("--model-size", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--agents", default="tdmpc2,modem_v2,sb3_sac,sb3_ppo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    builders = {"tdmpc2": lambda: tdmpc2_runners(args.model_size, args.batch, 1),
                "modem_v2": lambda: tdmpc2_runners(args.model_size, args.batch, 5),
                "sb3_sac": lambda: sb3_runners("SAC"), "sb3_ppo": lambda: sb3_runners("PPO")}
    for name in args.agents.split(","):
        runners, every = builders[name]()
        for fn in runners.values():  # warm-up
            fn()
            fn()
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.blocks):
            for key, fn in runners.items():
                n = args.per_block if key == "update" or name == "sb3_ppo" else 5 * args.per_block
                times[key].append(time_block(fn, 1 if name == "sb3_ppo" and key == "update" else n))
        shares = [100 * d / u for d, u in zip(times["diagnostic"], times["update"], strict=True)]
        share = statistics.median(shares)
        print(f"== {name}: update {statistics.median(times['update']):.2f} ms "
              f"({min(times['update']):.2f}..{max(times['update']):.2f}), diagnostic "
              f"{statistics.median(times['diagnostic']):.3f} ms ({min(times['diagnostic']):.3f}.."
              f"{max(times['diagnostic']):.3f}); one diagnostic = {share:.2f}% of an update (per block "
              f"{min(shares):.2f}..{max(shares):.2f}); every {every} -> {share / max(every, 1):.3f}% amortised")


if __name__ == "__main__":
    main()
