"""Env parity with facebookresearch/MRQ: robotrl's dm-control env gives the reference's observations and rewards.

    MUJOCO_GL=egl python bench/mrq_env_parity.py --ref /work/.mirror/facebookresearch+MRQ/repo \\
        --task walker_walk --seed 1 --episodes 2

The reference's ``env_preprocessing.Env("Dmc-[visual-]<domain>-<task>", seed)`` (read from its git dir, never copied
into robotrl) and robotrl's ``make_env`` with the trainer's dm-control defaults (84x84 RGB from camera 0, 3 stacked
frames, action repeat 2, 500 agent steps per episode) are built with the same seed and stepped with the same uniform
random actions, for pixels and for state. The script prints the largest difference of every observation, reward and
episode end over the episodes and exits 1 unless all are equal (the state after rounding the reference's float64 to
robotrl's float32).

robotrl's env is reset without a seed here, so that both continue the suite's one random stream from episode to
episode as the reference does; the trainer instead resets every episode from its own derived seed (for exact resume),
which draws initial states from the same distribution but not the same ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mrq_parity import load_reference  # noqa: E402
from robotrl.envs import make_env  # noqa: E402
from robotrl.envs.rendering import ensure_gl  # noqa: E402


def compare(ref_env_mod, task: str, obs_type: str, seed: int, episodes: int) -> dict[str, float]:
    """Largest |robotrl - reference| of obs and reward, and the count of steps whose episode ends disagree."""
    domain, task_name = task.split("_", 1)
    visual = "visual-" if obs_type == "pixels" else ""
    ref = ref_env_mod.Env(f"Dmc-{visual}{domain}-{task_name.replace('_', '-')}", seed)
    mine = make_env({"name": f"dmc/{task}", "obs_type": obs_type}, seed)
    rng = np.random.default_rng(seed)
    worst = {"obs": 0.0, "reward": 0.0, "end_mismatches": 0.0, "steps": 0.0}

    def obs_diff(ours: dict[str, np.ndarray], theirs: np.ndarray) -> float:
        # the reference keeps dm-control's float64 state; robotrl stores float32 (the agents' input dtype)
        return float(np.abs(ours[obs_type].astype(np.float64) - theirs.astype(ours[obs_type].dtype)).max())

    for _ in range(episodes):
        obs, _ = mine.reset()
        worst["obs"] = max(worst["obs"], obs_diff(obs, ref.reset()))
        done = False
        while not done:
            action = rng.uniform(-1, 1, mine.action_space.shape).astype(np.float32)
            obs, reward, terminated, truncated, _ = mine.step(action)
            ref_obs, ref_reward, ref_terminated, ref_truncated = ref.step(action)
            worst["obs"] = max(worst["obs"], obs_diff(obs, ref_obs))
            worst["reward"] = max(worst["reward"], abs(reward - ref_reward))
            worst["end_mismatches"] += (terminated, truncated) != (ref_terminated, ref_truncated)
            worst["steps"] += 1
            done = terminated or truncated or ref_terminated or ref_truncated
    mine.close()
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", type=Path, required=True, help="facebookresearch/MRQ git dir or checkout")
    parser.add_argument("--task", default="walker_walk", help="dm-control <domain>_<task>")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=2)
    args = parser.parse_args()
    ensure_gl()  # before the reference's env imports dm_control (robotrl's GL set-up order)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ref_env_mod = load_reference(args.ref, Path(tmp), module="env_preprocessing")
        for obs_type in ("pixels", "state"):
            worst = compare(ref_env_mod, args.task, obs_type, args.seed, args.episodes)
            print(f"{args.task} {obs_type}, seed {args.seed}, {args.episodes} episodes ({int(worst['steps'])} agent "
                  f"steps): max |obs diff| {worst['obs']:.3g}, max |reward diff| {worst['reward']:.3g}, "
                  f"episode-end mismatches {int(worst['end_mismatches'])}")
            ok &= worst["obs"] == 0 and worst["reward"] == 0 and worst["end_mismatches"] == 0
    print("equal" if ok else "DIFFERENT")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
