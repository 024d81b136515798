"""Random shift on a CPU: one slice copy per image (robotrl's CPU path) vs the one integer gather (its GPU path).

    OMP_NUM_THREADS=1 python bench/random_shift.py [--rounds 5]

Both produce the same channels-last images (``tests/test_drqv2.py``). Cases: MR.Q's encoder step (6 x 256 stacked
84x84 RGB frames, uint8), a 256-frame batch (DrQ-v2, MR.Q's value step), and float input. Rounds alternate the
two; median seconds per call and the ratio gather / copies. Also times the cast to float that follows in the conv
stacks, since the layout each leaves decides its cost. ``--update``: MR.Q pixel updates/s (batch 256, 3 stacked
84x84 RGB frames, encoder every 4 updates) with each, alternating rounds of 4 updates in one process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robotrl.augment import _shift_by_copies, _shift_by_gather, sample_shifts
from robotrl.malloc import reuse_freed_memory


def seconds(fn, x: torch.Tensor, shifts: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x, 4, shifts).float()
    return time.perf_counter() - start


def mrq_updates(rounds: int) -> None:
    import sys
    from pathlib import Path

    import robotrl.agents.mrq as mrq

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mrq_speed import fill, robotrl_agent

    agent, replay = robotrl_agent(True, fill(True, 1000, 500, 0), 20_000, 4)
    for i in range(2):
        agent.update(replay, i)
    rates: dict[str, list[float]] = {"gather": [], "copies": []}
    for _ in range(rounds):
        for name, fn in (("gather", _shift_by_gather), ("copies", _shift_by_copies)):
            mrq.random_shift = fn
            start = time.perf_counter()
            for i in range(4):
                agent.update(replay, i)
            rates[name].append(4 / (time.perf_counter() - start))
    gather, copies = statistics.median(rates["gather"]), statistics.median(rates["copies"])
    print(f"MR.Q pixel update: gather {gather:.3f}/s, copies {copies:.3f}/s (median of {rounds}), "
          f"ratio {copies / gather:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--update", action="store_true", help="also MR.Q pixel updates/s with each (3 rounds)")
    args = parser.parse_args()
    print(f"malloc: {reuse_freed_memory(True)}; torch threads {torch.get_num_threads()}")
    cases = {"1536 x 9x84x84 uint8 (MR.Q encoder step)": (1536, torch.uint8),
             "256 x 9x84x84 uint8 (DrQ-v2 / MR.Q value step)": (256, torch.uint8),
             "256 x 9x84x84 float32": (256, torch.float32)}
    for name, (n, dtype) in cases.items():
        x = torch.randint(0, 256, (n, 9, 84, 84)).to(dtype)
        shifts = sample_shifts(n, 4, "cpu")
        times: dict[str, list[float]] = {"gather": [], "copies": []}
        for _ in range(args.rounds):
            times["gather"].append(seconds(_shift_by_gather, x, shifts))
            times["copies"].append(seconds(_shift_by_copies, x, shifts))
        gather, copies = statistics.median(times["gather"]), statistics.median(times["copies"])
        print(f"{name}: gather {gather * 1e3:.1f} ms, copies {copies * 1e3:.1f} ms (shift + cast to float, median of "
              f"{args.rounds}), ratio {gather / copies:.2f}x", flush=True)
    if args.update:
        mrq_updates(3)


if __name__ == "__main__":
    main()
