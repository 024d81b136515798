"""DrQ-v2 full-update throughput: robotrl's agent vs the facebookresearch/drqv2 reference, in the same run.

Usage:
  REF_DRQV2=/tmp/drqv2 python bench/drqv2_updates.py [--threads 2] [--blocks 5] [--per-block 3]
      [--batch 256] [--size 84] [--small 128x64] [--compile] [--bf16]
      [--no-profile]

Both agents update on the same pre-generated synthetic batches (so batch generation is not timed), with the
same batch size and thread count; timed blocks alternate ours/reference so that the machine's slow spells hit
both. Prints updates/s (median and min..max over blocks) and the ratio per block, then a torch.profiler
breakdown of our update (which ops the time goes to), then the same for a smaller setting (no reference run).
Without REF_DRQV2 only our agent is timed. The reference checkout lives outside the repo and is only imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from robotrl.agents.drqv2 import DrQV2Agent

from robotrl.types import Batch

HPARAMS = {"lr": 1e-4, "feature_dim": 50, "hidden_dim": 1024, "critic_target_tau": 0.01, "num_expl_steps": 2000,
           "update_every_steps": 1, "stddev_schedule": "linear(1.0,0.1,100000)", "stddev_clip": 0.3}


def make_batches(n: int, batch: int, size: int, frames: int = 9, action_dim: int = 1) -> list[tuple]:
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 255, (batch, frames, size, size), dtype=np.uint8),
             rng.uniform(-1, 1, (batch, action_dim)).astype(np.float32),
             rng.normal(size=(batch, 1)).astype(np.float32), np.full((batch, 1), 0.99**3, np.float32),
             rng.integers(0, 255, (batch, frames, size, size), dtype=np.uint8)) for _ in range(n)]


class CyclingReplay:
    """``sample`` for our agent, ``__next__`` for the reference: both cycle over the same batches."""

    def __init__(self, batches: list[tuple]):
        self.np_batches = batches
        self.batches = [Batch({"pixels": torch.as_tensor(o)}, torch.as_tensor(a), torch.as_tensor(r),
                              torch.as_tensor(d), {"pixels": torch.as_tensor(n)}) for o, a, r, d, n in batches]
        self.i = 0

    def sample(self, batch_size: int) -> Batch:
        self.i += 1
        return self.batches[self.i % len(self.batches)]

    def __next__(self) -> tuple:
        self.i += 1
        return self.np_batches[self.i % len(self.np_batches)]


def make_ours(batch: int, size: int, compile: bool = False, bf16: bool = False, frames: int = 9,
              action_dim: int = 1) -> DrQV2Agent:
    obs_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (frames, size, size), np.uint8)})
    act_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    return DrQV2Agent(obs_space, act_space, "cpu", batch_size=batch, nstep=3, discount=0.99, compile=compile,
                      bf16=bf16, seed=0, **HPARAMS)


def make_reference(size: int) -> object:
    sys.path.insert(0, os.environ["REF_DRQV2"])
    from drqv2 import DrQV2Agent as RefAgent  # the reference checkout, outside this repo

    return RefAgent(obs_shape=(9, size, size), action_shape=(1,), device="cpu", use_tb=False, **HPARAMS)


def time_block(update: Callable[[int], object], n: int) -> float:
    t = time.perf_counter()
    for s in range(n):
        update(s)
    return n / (time.perf_counter() - t)


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def profile_breakdown(agent: DrQV2Agent, replay: CyclingReplay, n: int = 2) -> None:
    """Share of our update's self CPU time per op group (convolutions, ReLU, GEMMs, copies, ...)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(n):
            agent.update(replay, s)
    groups = {"conv forward": ("mkldnn_convolution", "convolution_overrideable"),
              "conv backward": ("convolution_backward",),
              "relu fwd/bwd": ("clamp_min", "relu", "threshold_backward"),
              "linear (GEMM)": ("addmm", "aten::mm", "aten::bmm"),
              "copies / casts / aug gather": ("copy_", "index", "_to_copy", "contiguous"),
              "pixel scaling": ("aten::div", "aten::sub")}
    totals = dict.fromkeys([*groups, "other"], 0.0)
    for evt in prof.key_averages():
        if not evt.key.startswith("aten::"):
            continue
        group = next((g for g, keys in groups.items() if any(k in evt.key for k in keys)), "other")
        totals[group] += evt.self_cpu_time_total
    total = sum(totals.values())
    print(f"  profile of our update ({n} updates, self CPU time {total / 1e3 / n:.0f} ms/update):")
    for g, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"    {g:<28} {100 * t / total:5.1f}%")


def compare(args: argparse.Namespace, with_reference: bool = True) -> None:
    batches = make_batches(2, args.batch, args.size)
    ours, ours_replay = make_ours(args.batch, args.size), CyclingReplay(batches)
    runners = {"robotrl": lambda s: ours.update(ours_replay, s)}
    if args.compile:
        t = time.perf_counter()
        comp, comp_replay = make_ours(args.batch, args.size, compile=True), CyclingReplay(batches)
        comp.update(comp_replay, 0)
        comp.update(comp_replay, 1)
        print(f"  torch.compile: first two updates took {time.perf_counter() - t:.1f} s (compile + run)")
        runners["robotrl compiled"] = lambda s: comp.update(comp_replay, s)
    if args.bf16:
        bf, bf_replay = make_ours(args.batch, args.size, bf16=True), CyclingReplay(batches)
        runners["robotrl bf16"] = lambda s: bf.update(bf_replay, s)
    if with_reference and "REF_DRQV2" in os.environ:
        ref, ref_replay = make_reference(args.size), CyclingReplay(batches)
        runners["reference"] = lambda s: ref.update(ref_replay, s)
    elif with_reference:
        print("  (REF_DRQV2 not set: timing robotrl only)")
    for run in runners.values():  # warm-up (allocator, oneDNN primitive caches)
        run(0)
        run(1)
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.blocks):
        for name, run in runners.items():
            rates[name].append(time_block(run, args.per_block))
    for name, xs in rates.items():
        print(f"  {name:<18} updates/s: {summary(xs)}")
    if "reference" in rates:
        for name in [k for k in rates if k != "reference"]:
            ratios = [a / b for a, b in zip(rates[name], rates["reference"], strict=True)]
            print(f"  ratio {name} / reference (per interleaved block): {summary(ratios)}")
    if args.profile:
        profile_breakdown(ours, ours_replay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--small", default="128x64", help="BATCHxSIZE of the smaller setting ('' to skip)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd agent")
    parser.add_argument("--bf16", action="store_true", help="also time the agent with bf16 autocast convs")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    print(f"== batch {args.batch}, 9x{args.size}x{args.size}")
    compare(args)
    if args.small:
        batch, size = (int(v) for v in args.small.split("x"))
        small = argparse.Namespace(**{**vars(args), "batch": batch, "size": size})
        print(f"== batch {batch}, 9x{size}x{size} (robotrl only: the reference hard-codes 84x84's 35x35 maps)")
        compare(small, with_reference=False)


if __name__ == "__main__":
    main()
