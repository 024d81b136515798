"""Replay benchmark: memory per transition and sampling throughput of the frame-once buffer versus a naive
buffer that stores whole frame stacks (same sampling code, only the pixel storage differs).

    OMP_NUM_THREADS=1 .venv/bin/python bench/replay_bench.py [--transitions 100000]

The two buffers are filled and timed one after the other so peak memory is the naive one (~6.4 GB at 100k).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from robotrl.replay import FRAME_CHANNELS, ReplayBuffer
from robotrl.types import Episode

SIZE = 84
FRAME_STACK = 3
ACTION_DIM = 6
EPISODE_LEN = 500


class NaiveStackedReplay(ReplayBuffer):
    """Baseline: stores the full (3k, H, W) stack per slot, so sampling is one row gather per obs."""

    def _slot_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        specs = super()._slot_specs()
        specs["pixels"] = (self.observation_space["pixels"].shape, specs["pixels"][1])
        return specs

    def _stack(
        self, index: np.ndarray, episode_start: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        if out is None:
            return self._arrays["pixels"][index % self.capacity]
        np.take(self._arrays["pixels"], index % self.capacity, axis=0, out=out, mode="clip")
        return out


def random_episode(rng: np.random.Generator, stacked: bool) -> Episode:
    """EPISODE_LEN steps of random frames; ``stacked`` gives the naive layout (stack per step)."""
    n = EPISODE_LEN + 1
    frames = np.frombuffer(rng.bytes(n * FRAME_CHANNELS * SIZE * SIZE), np.uint8).reshape(n, 3, SIZE, SIZE)
    if stacked:
        src = np.maximum(np.arange(n)[:, None] + np.arange(-(FRAME_STACK - 1), 1), 0)
        frames = frames[src].reshape(n, FRAME_STACK * FRAME_CHANNELS, SIZE, SIZE)
    action = rng.uniform(-1, 1, (EPISODE_LEN, ACTION_DIM)).astype(np.float32)
    reward = rng.normal(size=EPISODE_LEN).astype(np.float32)
    terminated = np.zeros(EPISODE_LEN, bool)
    return Episode({"pixels": frames}, action, reward, terminated, terminated.copy())


def rate(fn: Callable[[], object], min_seconds: float = 2.0) -> float:
    """Calls per second after 3 warm-up calls, timed for at least ``min_seconds``."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def bench(cls: type[ReplayBuffer], transitions: int, batch: int, horizon: int) -> dict[str, float]:
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (FRAME_STACK * 3, SIZE, SIZE), np.uint8)})
    episodes = -(-transitions // EPISODE_LEN)
    buf = cls(episodes * (EPISODE_LEN + 1), space, ACTION_DIM, FRAME_STACK, nstep=3, seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(episodes):
        buf.add_episode(random_episode(rng, stacked=cls is NaiveStackedReplay))
    fill_s = time.perf_counter() - start
    result = {
        "bytes_per_transition": buf.nbytes_per_transition,
        "stored_gb": sum(a.nbytes for a in buf._arrays.values()) / 1e9,
        "transitions": len(buf),
        "fill_s": fill_s,
        "sample_per_s": rate(lambda: buf.sample(batch)),
        "traj_per_s": rate(lambda: buf.sample_trajectories(batch, horizon)),
    }
    return result  # the buffer is freed here, before the next one is filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{args.transitions} transitions of random {SIZE}x{SIZE} frames, frame_stack={FRAME_STACK}, "
        f"A={ACTION_DIM}, episodes of {EPISODE_LEN} steps; batch {args.batch}, horizon {args.horizon}"
    )
    rows = {
        name: bench(cls, args.transitions, args.batch, args.horizon)
        for name, cls in [("frame-once", ReplayBuffer), ("naive-stacked", NaiveStackedReplay)]
    }
    header = f"{'buffer':<14} {'B/transition':>12} {'stored GB':>9} {'fill s':>7} "
    header += f"{'n-step b/s':>10} {'traj b/s':>9}"
    print(header)
    for name, r in rows.items():
        print(
            f"{name:<14} {r['bytes_per_transition']:>12} {r['stored_gb']:>9.2f} {r['fill_s']:>7.1f} "
            f"{r['sample_per_s']:>10.1f} {r['traj_per_s']:>9.1f}"
        )
    ours, naive = rows["frame-once"], rows["naive-stacked"]
    print(
        f"memory naive/frame-once: {naive['bytes_per_transition'] / ours['bytes_per_transition']:.2f}x; "
        f"speed frame-once/naive: n-step {ours['sample_per_s'] / naive['sample_per_s']:.2f}x, "
        f"traj {ours['traj_per_s'] / naive['traj_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
