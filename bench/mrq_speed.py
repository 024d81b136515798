"""Updates/s of agent=mrq vs facebookresearch/MRQ in the same process, CPU, same hyperparameters and data.

    OMP_NUM_THREADS=1 nice -n 10 python bench/mrq_speed.py --ref /work/.mirror/facebookresearch+MRQ/repo

An "update" is one call of the reference's ``Agent.train()`` / robotrl's ``MRQAgent.update()``: one value + policy
step, plus the encoder phase (``target_update_freq`` encoder steps every ``target_update_freq`` updates), so timing
whole cycles of ``target_update_freq`` updates gives the amortised cost (one encoder step per update). Both sample
from their own replay (the reference's ``ReplayBuffer``, LAP included; robotrl's ``ReplayBuffer`` with LAP on),
filled with the same random episodes of 500 steps. State: 24-d obs, 6 actions, the reference's 1e6-slot replay,
``target_update_freq`` 250. Pixels: 3 stacked 84x84 RGB frames, a 20k-slot replay (the reference preallocates its
whole replay with ``torch.zeros``: 1e6 slots of pixels are 21 GB) and ``--pixel-tuf`` (default 10) updates per
cycle, because one reference pixel cycle of 250 takes minutes on one CPU thread. Rounds alternate reference and
robotrl; the median round is reported. The reference's source is read from ``--ref`` (as bench/mrq_parity.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from robotrl.agents.mrq import MRQAgent

from robotrl.replay import ReplayBuffer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mrq_parity import load_reference  # noqa: E402


def fill(pixels: bool, steps: int, episode: int, seed: int):
    """Random episodes as (obs list per episode, actions, rewards); frames stack 3 views of uint8 noise."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(steps // episode):
        frames = (rng.integers(0, 256, (episode + 1, 3, 84, 84), dtype=np.uint8) if pixels
                  else rng.normal(size=(episode + 1, 24)).astype(np.float32))
        episodes.append((frames, rng.uniform(-1, 1, (episode, 6)).astype(np.float32),
                         rng.normal(size=episode).astype(np.float32)))
    return episodes


def stacked(frames: np.ndarray, t: int, pixels: bool) -> np.ndarray:
    if not pixels:
        return frames[t]
    return np.concatenate([frames[max(0, t - k)] for k in (2, 1, 0)])


def reference_agent(mrq, pixels: bool, episodes, capacity: int, tuf: int):
    obs_shape, history = ((3, 84, 84), 3) if pixels else ((24,), 1)
    agent = mrq.Agent(obs_shape, 6, 1.0, pixels, False, torch.device("cpu"), history,
                      hp={"buffer_size": capacity, "buffer_size_before_training": 0, "target_update_freq": tuf})
    for frames, actions, rewards in episodes:
        n = len(actions)
        for t in range(n):
            agent.replay_buffer.add(stacked(frames, t, pixels), actions[t], stacked(frames, t + 1, pixels),
                                    float(rewards[t]), False, t == n - 1)
    return agent


def robotrl_agent(pixels: bool, episodes, capacity: int, tuf: int, precision: str = "fp32"):
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)} if pixels else
                            {"state": gym.spaces.Box(-np.inf, np.inf, (24,), np.float32)})
    agent = MRQAgent(space, gym.spaces.Box(-1, 1, (6,), np.float32), "cpu", num_expl_steps=0,
                     target_update_freq=tuf, dormant_every=0, seed=0, precision=precision)
    replay = ReplayBuffer(capacity, space, 6, 3 if pixels else 1, nstep=3, seed=0, check_stack=False)
    key = "pixels" if pixels else "state"
    for frames, actions, rewards in episodes:
        replay.add_first({key: stacked(frames, 0, pixels)})
        n = len(actions)
        for t in range(n):
            replay.add(actions[t], float(rewards[t]), {key: stacked(frames, t + 1, pixels)}, False, t == n - 1)
    return agent, replay


def time_cycle(run, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        run(i)
    return count / (time.perf_counter() - start)


def bench(mrq, pixels: bool, rounds: int, tuf: int, precision: str = "fp32") -> tuple[float, float]:
    capacity, steps = (20_000, 2_000) if pixels else (1_000_000, 10_000)
    episodes = fill(pixels, steps, 500, seed=0)
    ref = reference_agent(mrq, pixels, episodes, capacity, tuf)
    mine, replay = robotrl_agent(pixels, episodes, capacity, tuf, precision)
    ref_rates, mine_rates = [], []
    for _ in range(rounds):
        ref_rates.append(time_cycle(lambda i: ref.train(), tuf))
        mine_rates.append(time_cycle(lambda i: mine.update(replay, i), tuf))
    return statistics.median(ref_rates), statistics.median(mine_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", type=Path, required=True, help="facebookresearch/MRQ git dir or checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--state-tuf", type=int, default=250)
    parser.add_argument("--pixel-tuf", type=int, default=10)
    parser.add_argument("--only", choices=["state", "pixels"], default=None)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="robotrl's precision (bf16: the opt-in autocast; the reference stays fp32)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        mrq = load_reference(args.ref, Path(tmp))
        for pixels in (False, True):
            if args.only and args.only != ("pixels" if pixels else "state"):
                continue
            tuf = args.pixel_tuf if pixels else args.state_tuf
            ref, mine = bench(mrq, pixels, args.rounds, tuf, args.precision)
            name = "pixels" if pixels else "state"
            print(f"{name}: reference {ref:.2f} updates/s, robotrl {mine:.2f} updates/s, ratio {mine / ref:.2f}x "
                  f"(batch 256, target_update_freq {tuf}, robotrl {args.precision}, median of {args.rounds} rounds)",
                  flush=True)


if __name__ == "__main__":
    main()
