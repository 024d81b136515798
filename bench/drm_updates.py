"""DrM full-update time vs DrQ-v2 in the same run, and the dormant-ratio computation's share of an update.

Usage:
  python bench/drm_updates.py [--threads 2] [--blocks 5] [--per-block 3] [--batch 256] [--size 84]

Same synthetic batches, batch size, image size and thread count as ``bench/drqv2_updates.py`` (whose helpers are
imported). Timed blocks alternate between the agents so that the machine's slow spells hit all of them:
  * drqv2        DrQ-v2 without the dormant diagnostic (``dormant_every=0``);
  * drqv2+diag   DrQ-v2 with the default diagnostic (``dormant_every`` from configs/agent/drqv2.yaml);
  * drm          DrM with configs/agent/drm.yaml's defaults (the ratio on every update, value network, awaken
                 exploration; no perturbation falls inside the timed steps, it runs once per 100k steps and is
                 timed separately).
Then the dormant-ratio computation alone (``agent.actor_dormant(features)`` on the batch's features), timed in
blocks interleaved with DrQ-v2 updates, as a fraction of a DrQ-v2 update and of a DrM update.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from robotrl.agents.drm import DrMAgent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drqv2_updates import HPARAMS, CyclingReplay, make_batches, make_ours, summary, time_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DRM_KEYS = ("dormant_threshold", "target_dormant_ratio", "dormant_temp", "perturb", "perturb_interval",
            "min_perturb_factor", "max_perturb_factor", "perturb_rate", "awaken_exploration",
            "expectile_exploitation", "expectile", "target_lambda", "lambda_temp", "lambda_schedule")


def composed_agent(name: str) -> dict:
    """``configs/agent/<name>.yaml`` as hydra composes it (defaults lists included), unresolved."""
    from omegaconf import OmegaConf

    from robotrl.overrides import compose_config

    return OmegaConf.to_container(compose_config([f"agent={name}"]).agent, resolve=False)


def make_drm(batch: int, size: int) -> DrMAgent:
    cfg = composed_agent("drm")  # drm.yaml with its defaults list (the DrQ-v2 part) composed
    ref = make_ours(batch, size)  # for the spaces
    return DrMAgent(ref.observation_space, ref.action_space, "cpu", batch_size=batch, nstep=3, discount=0.99, seed=0,
                    **HPARAMS, **{k: cfg[k] for k in DRM_KEYS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=84)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diag_every = composed_agent("drqv2")["dormant_every"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    print(f"== batch {args.batch}, 9x{args.size}x{args.size}; drqv2.yaml dormant_every={diag_every}")

    batches = make_batches(2, args.batch, args.size)
    drq = make_ours(args.batch, args.size)
    drq.dormant_every = 0
    diag = make_ours(args.batch, args.size)
    diag.dormant_every = diag_every
    drm = make_drm(args.batch, args.size)
    replays = {name: CyclingReplay(batches) for name in ("drqv2", "drqv2+diag", "drm")}
    # steps start past num_expl_steps (2000) so awaken exploration is live, and stay off the perturbation interval
    start = 2 * HPARAMS["num_expl_steps"]
    runners = {"drqv2": lambda s: drq.update(replays["drqv2"], start + s),
               "drqv2+diag": lambda s: diag.update(replays["drqv2+diag"], start + s),
               "drm": lambda s: drm.update(replays["drm"], start + s)}

    feats = drq._encode(drq._augment(replays["drqv2"].batches[0].obs)).detach()
    runners["dormant ratio"] = lambda s: drq.actor_dormant(feats)
    for run in runners.values():  # warm-up (allocator, oneDNN primitive caches)
        run(0)
        run(1)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.blocks):
        for name, run in runners.items():
            n = args.per_block * (10 if name == "dormant ratio" else 1)
            times[name].append(1e3 / time_block(run, n))  # ms per call
    for name, xs in times.items():
        print(f"  {name:<14} ms per {'call' if name == 'dormant ratio' else 'update'}: {summary(xs)}")
    for name in ("drqv2+diag", "drm"):
        ratios = [a / b for a, b in zip(times[name], times["drqv2"], strict=True)]
        print(f"  ratio {name} / drqv2 update time (per interleaved block): {summary(ratios)}")
    dr = statistics.median(times["dormant ratio"])
    share_drq, share_drm = (100 * dr / statistics.median(times[k]) for k in ("drqv2", "drm"))
    print(f"  dormant-ratio computation / drm update: {share_drm:.2f}% (DrM runs it on every update)")
    print(f"  dormant-ratio computation / drqv2 update: {share_drq:.2f}% when it runs; every {diag_every}th "
          f"update by default, i.e. {share_drq / max(diag_every, 1):.2f}% amortised")
    t = time.perf_counter()
    drm.perturb_networks()
    print(f"  one DrM perturbation (every {drm.perturb_interval} steps): {1e3 * (time.perf_counter() - t):.1f} ms")


if __name__ == "__main__":
    main()
