"""`robotrl eval`: run a checkpointed policy on seeded, randomised initial states and gate on success/return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from robotrl.atomic import atomic_write_text
from robotrl.commands import Args, Command, options
from robotrl.envs import make_env
from robotrl.errors import CheckpointError, ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.workflows.baselines import compare, trivial_baselines_for
from robotrl.workflows.policy import load_policy
from robotrl.workflows.rollout import run_episodes, summarize


def evaluate_checkpoint(checkpoint: str, episodes: int, seed: int, min_success: float, min_return: float,
                        video: bool, out: str | None, device: str, baselines: bool = True) -> dict[str, Any]:
    """Play ``episodes`` episodes with seeds ``seed .. seed+episodes-1``; write episodes.jsonl, summary.json, mp4.

    With ``baselines``, uniform random and constant-action policies play the same seeds (``summary["baselines"]``)
    and ``summary["vs_baselines"]`` says which of them the policy beats (:mod:`robotrl.workflows.baselines`).
    ``passed`` in the summary is False when the success rate is below ``min_success`` or the mean return below
    ``min_return`` (the CLI exits 1 then). A success gate on a task without a success signal is an error.
    """
    if episodes < 1:  # a mean over no episodes is NaN, which summary.json (strict JSON) cannot hold
        raise ConfigError(f"episodes={episodes}, expected >= 1")
    loaded = load_policy(checkpoint, device)
    cfg, path = loaded.cfg, loaded.checkpoint
    out_dir = Path(out) if out else path.parent.parent / "eval" / path.name
    out_dir.mkdir(parents=True, exist_ok=True)
    env = make_env(cfg.env, seed=int(cfg.seed))
    beat = Heartbeat(f"eval {cfg.env.name}")
    played = {"steps": 0}

    def policy(obs: dict[str, Any]) -> Any:
        played["steps"] += 1
        beat.tick(lambda: f"{played['steps']} steps of {episodes} episodes")
        return loaded(obs)

    results = run_episodes(env, policy, range(seed, seed + episodes), out_dir / "video.mp4" if video else None,
                           on_reset=loaded.reset)
    summary = summarize(results)
    if baselines:
        summary["baselines"] = trivial_baselines_for(cfg.env, range(seed, seed + episodes), seed)
        summary["vs_baselines"] = compare(summary, {k: summary["baselines"][k] for k in ("random", "constant")})
    env.close()
    env_info = dict(getattr(env, "robotrl_info", {}))
    # the env info's "seed" is the training run's seed; next to the eval seeds it read as one of them
    env_info["train_seed"] = env_info.pop("seed", None)
    summary.update({"checkpoint": str(path), "env": cfg.env.name, "agent": cfg.agent.name,
                    "eval_seeds": [seed, seed + episodes - 1], **env_info,
                    # the policy may have been trained on a model reward (reward=clip ...); eval always plays the
                    # env's own reward, so return_mean is the ground-truth return
                    "trained_reward": str(OmegaConf.select(cfg, "reward.name", default="env")),
                    "return_is": "ground_truth"})
    if min_success >= 0 and summary["success_rate"] is None:
        raise CheckpointError(f"min_success={min_success} but {cfg.env.name} defines no success signal; "
                              f"use min_return instead")
    failures = []
    if summary["return_mean"] < min_return:
        failures.append(f"return_mean {summary['return_mean']:.4g} < min_return {min_return:g}")
    if min_success >= 0 and summary["success_rate"] < min_success:
        failures.append(f"success_rate {summary['success_rate']:.4g} < min_success {min_success:g}")
    summary["passed"] = not failures
    summary["failed_gates"] = failures
    summary["out"] = str(out_dir)
    atomic_write_text(out_dir / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in results))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------ the command
EVAL_DEFAULTS: dict[str, Any] = {"checkpoint": None, "episodes": 10, "seed": 1_000_000, "min_success": -1.0,
                                 "min_return": float("-inf"), "video": True, "out": None, "device": "auto",
                                 "baselines": True}
EVAL_DOCS = {
    "checkpoint": "a run dir, its checkpoints/ dir or one checkpoint dir (required)",
    "episodes": "evaluation episodes; episode i resets with seed + i",
    "seed": "first episode's seed (the trainer's eval seeds start at 1000000)",
    "min_success": "exit 1 if the success rate is below this (tasks with a success signal only)",
    "min_return": "exit 1 if the mean return is below this",
    "video": "write an mp4 of the first episode",
    "baselines": "also play uniform random and constant actions on the same seeds, and warn if they are not beaten",
    "out": "output dir for episodes.jsonl, summary.json, video.mp4 (default <checkpoint>/eval)",
    "device": "auto | cpu | cuda | cuda:N",
}


def run_eval(args: Args) -> int:
    """``robotrl eval``: the summary as JSON; exit code 1 if below ``min_success``/``min_return``."""
    import sys

    opts = args.opts
    if opts["checkpoint"] is None:
        raise ConfigError("robotrl eval needs checkpoint=PATH (a run dir, its checkpoints/ dir or one checkpoint)")
    if opts["min_success"] > 1:
        raise ConfigError(f"min_success={opts['min_success']:g}, expected a success rate in [0, 1] (or < 0: no gate)")
    summary = evaluate_checkpoint(**opts)
    print(json.dumps(summary, indent=1))
    print(f"wrote {summary['out']}/summary.json, episodes.jsonl" + (", video.mp4" if opts["video"] else ""))
    if "vs_baselines" in summary and not summary["vs_baselines"]["beats_all"]:
        print(f"robotrl: warning: the policy's return ({summary['return_mean']:.1f}) is not clearly above "
              f"{', '.join(summary['vs_baselines']['not_beaten'])} on the same seeds (see \"baselines\"): it may "
              f"be saturated or stuck, not learning", file=sys.stderr)
    if not summary["passed"]:
        print(f"robotrl eval: below the gate: {'; '.join(summary['failed_gates'])}", file=sys.stderr)
    return 0 if summary["passed"] else 1


# robotrl.params kinds of the numeric options, checked as the command line is parsed
EVAL_RANGES = {"episodes": "positive_int", "seed": "nonneg_int"}


COMMAND = Command(
    name="eval", summary="evaluate a checkpoint on seeded episodes; exit 1 below the gate",
    usage="robotrl eval checkpoint=PATH [key=value ...]",
    about="Play a checkpoint's policy on seeded episodes and gate on success rate or return.",
    run=run_eval, options=options(EVAL_DEFAULTS, EVAL_DOCS, EVAL_RANGES),
    examples=("robotrl eval checkpoint=runs/metaworld/reach/drqv2/seed3 episodes=20 min_success=0.8",
              "robotrl eval checkpoint=runs/dmc/walker_walk/drqv2/seed1 min_return=900 video=false"))
