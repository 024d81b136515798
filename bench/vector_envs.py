"""Env steps/s with ``env.num_envs`` = 1, 2, 4 worker processes vs one env in this process, in the same run; and
DrQ-v2 learner updates/s with and without collection running beside it.

Random actions, 84x84 pixels, action repeat 2, frame stack 3 (the training defaults). Each vector env is built once
per task; timed blocks alternate (sequential, 1, 2, 4 workers, sequential, ...) so machine load hits every side
alike, and the median of the per-block rates is printed with the min..max. A finished sub-env is reset as the
trainer resets it. Besides wall-clock rates it measures CPU time per env step (user + system of this process, all
its threads, and of the worker processes, from /proc), which load from other processes inflates far less than the
rates. The scaling model: a worker's CPU cost per step ``c1`` (1 worker: its IPC and the main process included)
gives ``(cores - 1) / c1`` steps/s on a node with ``cores`` cores, one core left to the learner -- envs are
independent processes, so CPU-bound workers scale with free cores until memory bandwidth or the learner limits.

Run: ``MUJOCO_GL=egl OMP_NUM_THREADS=1 nice python bench/vector_envs.py [--seconds 6 --blocks 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

import numpy as np

TASKS = ("dmc/cheetah_run", "metaworld/reach")


def _cfg(name: str) -> dict:
    return {"name": name, "image_size": 84, "frame_stack": 3, "action_repeat": 2, "obs_type": "pixels"}


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process (all threads) and of the worker processes ``pids``."""
    t = os.times()
    total = t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _seq_rate(env, rng: np.random.Generator, seconds: float) -> float:
    env.reset(seed=int(rng.integers(1 << 30)))
    steps, start, cpu = 0, time.perf_counter(), _cpu_seconds([])
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        steps += 1
        if terminated or truncated:
            env.reset(seed=int(rng.integers(1 << 30)))
    return steps / (time.perf_counter() - start), 1000 * (_cpu_seconds([]) - cpu) / steps


def _vec_rate(venv, rng: np.random.Generator, seconds: float) -> float:
    n = venv.num_envs
    venv.reset(seed=[int(s) for s in rng.integers(1 << 30, size=n)])
    shape = (n, *venv.single_action_space.shape)
    pids = [p.pid for p in venv.processes]
    steps, start, cpu = 0, time.perf_counter(), _cpu_seconds(pids)
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
        steps += n
        done = np.logical_or(terminated, truncated)
        if done.any():
            venv.reset(seed=[int(s) for s in rng.integers(1 << 30, size=n)], options={"reset_mask": done})
    return steps / (time.perf_counter() - start), 1000 * (_cpu_seconds(pids) - cpu) / steps


def _summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):7.3g} ({min(rates):.3g}..{max(rates):.3g})"


def bench_envs(task: str, workers: list[int], seconds: float, blocks: int) -> dict:
    from robotrl.envs import make_env
    from robotrl.envs.vector import make_vector_env

    rng = np.random.default_rng(0)
    env = make_env(_cfg(task), seed=0)
    vecs = {w: make_vector_env(_cfg(task), seed=0, num_envs=w) for w in workers}
    names = ["sequential", *(f"{w} workers" for w in workers)]
    rates: dict[str, list[float]] = {k: [] for k in names}
    cpu_ms: dict[str, list[float]] = {k: [] for k in names}
    try:
        for _ in range(blocks):
            for name in names:
                w = None if name == "sequential" else int(name.split()[0])
                rate, ms = _seq_rate(env, rng, seconds) if w is None else _vec_rate(vecs[w], rng, seconds)
                rates[name].append(rate)
                cpu_ms[name].append(ms)
    finally:
        env.close()
        for v in vecs.values():
            v.close()
    seq = statistics.median(rates["sequential"])
    print(f"\n{task}: env steps/s and CPU ms per step (all processes), median over {blocks} blocks of "
          f"{seconds:.0f} s (min..max); ratio to sequential")
    for name in names:
        print(f"  {name:>12}: {_summary(rates[name])} steps/s  x{statistics.median(rates[name]) / seq:.2f}   "
              f"CPU {_summary(cpu_ms[name])} ms/step")
    out = {"task": task, "rates": rates, "cpu_ms": cpu_ms, "sequential": seq}
    if 1 in workers:
        c1 = statistics.median(cpu_ms["1 workers"])  # a worker's CPU cost per step, IPC and main process included
        node = 31 * 1000 / c1
        out.update(c1_ms=c1, node32=node)
        print(f"  per-worker CPU cost c1 = {c1:.1f} ms/step -> a 32-core node with 31 workers (one core for the "
              f"learner): 31 / c1 = {node:.0f} steps/s (x{node / seq:.1f} this run's sequential env)")
    return out


def bench_learner(seconds: float, blocks: int, workers: int, batch: int) -> dict:
    """DrQ-v2 updates/s (84x84, 1 thread) alone vs with a ``workers``-env vector env stepping in a
    background thread of the same process (its workers are separate processes, as in training)."""
    import gymnasium as gym
    import torch
    from robotrl.agents.drqv2 import DrQV2Agent
    from robotrl.envs.vector import make_vector_env

    from robotrl.replay import ReplayBuffer

    torch.set_num_threads(1)
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)})
    action = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
    agent = DrQV2Agent(space, action, "cpu", lr=1e-4, feature_dim=50, hidden_dim=1024, critic_target_tau=0.01,
                       num_expl_steps=0, update_every_steps=1, stddev_schedule="0.2", stddev_clip=0.3,
                       batch_size=batch, nstep=3, discount=0.99, seed=0)
    replay = ReplayBuffer(5000, space, 6, frame_stack=3, check_stack=False)
    rng = np.random.default_rng(0)
    replay.add_first({"pixels": rng.integers(0, 255, (9, 84, 84), dtype=np.uint8)})
    for t in range(2000):
        replay.add(rng.uniform(-1, 1, 6).astype(np.float32), 0.0,
                   {"pixels": rng.integers(0, 255, (9, 84, 84), dtype=np.uint8)}, False, t % 500 == 499)
        if t % 500 == 499 and t < 1999:
            replay.add_first({"pixels": rng.integers(0, 255, (9, 84, 84), dtype=np.uint8)})

    def updates_per_s() -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            agent.update(replay, 10**6)
            n += 1
        return n / (time.perf_counter() - start)

    venv = make_vector_env(_cfg("dmc/cheetah_run"), seed=0, num_envs=workers)
    stop, collected = threading.Event(), {"steps": 0}

    def collect() -> None:
        r = np.random.default_rng(1)
        venv.reset(seed=[1] * workers)
        while not stop.is_set():
            _, _, te, tr, _ = venv.step(r.uniform(-1, 1, (workers, 6)).astype(np.float32))
            collected["steps"] += workers
            done = np.logical_or(te, tr)
            if done.any():
                venv.reset(seed=[1] * workers, options={"reset_mask": done})

    alone, busy, env_rates = [], [], []
    try:
        updates_per_s()  # warm-up
        for _ in range(blocks):
            alone.append(updates_per_s())
            stop.clear()
            thread = threading.Thread(target=collect, daemon=True)
            collected["steps"] = 0
            start = time.perf_counter()
            thread.start()
            busy.append(updates_per_s())
            stop.set()
            thread.join()
            env_rates.append(collected["steps"] / (time.perf_counter() - start))
    finally:
        venv.close()
    print(f"\nDrQ-v2 learner updates/s (batch {batch}, 84x84, 1 thread), median over {blocks} blocks (min..max)")
    print(f"  alone:                                  {_summary(alone)}")
    print(f"  with {workers} env workers collecting:          {_summary(busy)}  "
          f"x{statistics.median(busy) / statistics.median(alone):.2f}; env steps/s meanwhile {_summary(env_rates)}")
    return {"alone": alone, "with_collection": busy, "env_rates_during": env_rates, "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--learner-workers", type=int, default=1)
    parser.add_argument("--learner-seconds", type=float, default=15.0)
    parser.add_argument("--learner-batch", type=int, default=256)
    parser.add_argument("--json", default=None, help="also write the raw rates here")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}")
    results = {"envs": [bench_envs(t, args.workers, args.seconds, args.blocks) for t in args.tasks],
               "learner": bench_learner(args.learner_seconds, args.blocks, args.learner_workers, args.learner_batch)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
