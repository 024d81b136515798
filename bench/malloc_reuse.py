"""Updates/s and resident memory with and without ``reuse_freed_memory`` (robotrl/malloc.py), CPU, same run.

    OMP_NUM_THREADS=1 python bench/malloc_reuse.py [--rounds 3] [--updates 4] [--cases mrq_pixels,drqv2,mrq_state]

Each measurement is a fresh subprocess (the setting is process-wide and glibc's state is not reset), alternating
off / on within each round so that the machine's slow spells hit both; it builds the agent, runs 2 warm-up updates,
times ``--updates`` more, and reports updates/s, minor page faults per update and its peak resident size. Cases:
MR.Q from 3 stacked 84x84 RGB frames (batch 256, LAP replay of 1,000 random steps, encoder every 4 updates: the
encoder step amortised as in training), DrQ-v2 from 84x84 (batch 256), MR.Q from a 24-d state (batch 256).
Median over rounds; the ratio is on-median / off-median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

CHILD = """
import json, resource, sys, time
import torch
sys.path.insert(0, {bench!r})
from robotrl.malloc import reuse_freed_memory
reuse_freed_memory({on})
torch.set_num_threads(1)
case, n = {case!r}, {updates}
if case in ("mrq_pixels", "mrq_state"):
    from mrq_speed import fill, robotrl_agent
    pixels = case == "mrq_pixels"
    agent, replay = robotrl_agent(pixels, fill(pixels, 1000, 500, 0), 20_000, 4)
    update = lambda i: agent.update(replay, i)
else:
    from drqv2_updates import CyclingReplay, make_batches, make_ours
    agent, replay = make_ours(256, 84), CyclingReplay(make_batches(2, 256, 84))
    update = lambda i: agent.update(replay, 10_000 + i)
for i in range(2):
    update(i)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
for i in range(n):
    update(2 + i)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"updates_per_s": n / seconds, "faults_per_update": (usage.ru_minflt - faults) / n,
                  "peak_rss_mb": usage.ru_maxrss / 1024}}))
"""


def measure(case: str, on: bool, updates: int) -> dict[str, float]:
    code = CHILD.format(bench=str(BENCH), on=on, case=case, updates=updates)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=4, help="timed updates per measurement (after 2 warm-up)")
    parser.add_argument("--cases", default="mrq_pixels,drqv2,mrq_state")
    args = parser.parse_args()
    for case in args.cases.split(","):
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for on in (False, True):
                runs[on].append(measure(case, on, args.updates if case != "mrq_state" else 10 * args.updates))
        med = {on: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for on, rs in runs.items()}
        off_rates = ", ".join(f"{r['updates_per_s']:.3f}" for r in runs[False])
        on_rates = ", ".join(f"{r['updates_per_s']:.3f}" for r in runs[True])
        print(f"{case}: off {med[False]['updates_per_s']:.3f} updates/s ({off_rates}), "
              f"{med[False]['faults_per_update']:.0f} faults/update, peak RSS {med[False]['peak_rss_mb']:.0f} MB | "
              f"on {med[True]['updates_per_s']:.3f} updates/s ({on_rates}), "
              f"{med[True]['faults_per_update']:.0f} faults/update, peak RSS {med[True]['peak_rss_mb']:.0f} MB | "
              f"ratio {med[True]['updates_per_s'] / med[False]['updates_per_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
