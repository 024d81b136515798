"""How much of MR.Q's value batches robotrl draws where facebookresearch/MRQ's buffer would not, measured on real runs.

    python bench/mrq_replay_mask.py 'runs/mrq_state/walker_walk/seed*/checkpoints/frame_*/replay'

The reference's buffer (``MRQ/buffer.py``) never samples a start among the last ``max(enc_horizon, Q_horizon)`` = 5
steps of an episode (its sampling mask); robotrl's replay samples every step with an action, shortening the n-step
horizon at the end of an episode (the last ``nstep - 1`` = 2 steps). For each saved replay (a run's checkpoint,
LAP priorities included) this prints the share of the value batch's sampling probability (priority / total, as both
buffers draw it) on those last-5 starts and on the shortened ones, and the ratio of robotrl's reward scale (mean
|reward| over steps) to the reference's (which also counts each episode's reward-less final slot). An episode in
progress counts as if it ended at its last stored step; a run's checkpoints are taken between episodes, where there
is none.
"""

from __future__ import annotations

import argparse
import glob

import numpy as np

from robotrl.replay import ReplayBuffer

REFERENCE_MASKED = 5  # max(enc_horizon, Q_horizon) in the reference's defaults


def mask_shares(replay: ReplayBuffer, nstep: int = 3) -> dict[str, float]:
    """Sampling-probability shares of the value batch on the reference-masked and the shortened-horizon starts."""
    filled = min(replay._head, replay.capacity)
    has_action = replay._arrays["has_action"][:filled]
    episode = replay._arrays["episode_start"][:filled]
    starts, counts = np.unique(episode[has_action], return_counts=True)
    length = dict(zip(starts.tolist(), counts.tolist(), strict=True))
    steps_left = np.array([length.get(int(e), 0) for e in episode]) - (np.arange(filled) - episode)
    if replay.prioritized:
        weight = replay._priority.get(np.arange(filled))
    else:
        weight = has_action.astype(np.float64)
    weight = np.where(has_action, weight, 0.0)
    total = weight.sum()
    rewards = np.abs(replay._arrays["reward"][:filled][has_action])
    return {"episodes": float(len(length)),
            "masked": float(weight[steps_left <= REFERENCE_MASKED].sum() / total),
            "shortened": float(weight[steps_left < nstep].sum() / total),
            "max_priority": float(weight.max()), "mean_priority": float(weight[has_action].mean()),
            "scale_ratio": float(rewards.mean() / (rewards.sum() / (rewards.size + len(length))))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pattern", help="glob of saved replays (a run's checkpoints/frame_*/replay)")
    args = parser.parse_args()
    paths = sorted(glob.glob(args.pattern))
    if not paths:
        raise SystemExit(f"no replay matches {args.pattern!r}")
    print("| replay | episodes | share on the reference's masked starts | share on shortened n-step starts | "
          "max / mean priority | reward scale ratio |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        s = mask_shares(ReplayBuffer.load(path))
        print(f"| {path} | {s['episodes']:.0f} | {s['masked']:.4f} | {s['shortened']:.4f} | "
              f"{s['max_priority']:.2f} / {s['mean_priority']:.2f} | {s['scale_ratio']:.4f} |")


if __name__ == "__main__":
    main()
