"""``robotrl sim2real``: the same policy and seeds on several robots, side by side (the sim-to-real gap report).

Each robot runs ``episodes`` episodes through :class:`~robotrl.hardware.robot_env.RobotEnv` (the env the policy
trains in on an arm: safety layer, control rate, randomised home start from the same seeds) and gets one column:
success rate (where the robot has a detector: ``robot=sim``'s simulator), return (likewise), the policy's action
statistics (per-dimension mean and std), the hand's measured displacement per agent step, safety-layer
interventions and safety stops per episode, overruns and the agent-step period. ``gap`` holds each robot's
differences from the first one (the reference, normally ``sim``).

    robotrl sim2real checkpoint=runs/metaworld/reach/drqv2/seed1 robots=sim,franka franka.hostname=172.16.0.2
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robotrl.atomic import atomic_write_text, writable_dir
from robotrl.commands import Args, Command, options
from robotrl.errors import ConfigError
from robotrl.workflows.control_loop import Step, run_episode
from robotrl.workflows.run_env import load_robot_config, make_robot_env

GAP_DEFAULTS: dict[str, Any] = {"checkpoint": None, "robots": "sim,franka", "episodes": 3, "seed": 0, "steps": None,
                                "home_noise_m": 0.02, "out": None, "device": "cpu"}
GAP_DOCS = {
    "checkpoint": "a trained run dir (its env settings and policy); a franka without cameras needs a proprio policy",
    "robots": "comma-separated robot configs (configs/robot/<name>.yaml); the first is the reference",
    "episodes": "episodes per robot, reset seeds seed .. seed + episodes - 1 on every robot",
    "seed": "first reset seed",
    "steps": "agent steps per episode (default: the training env's episode length)",
    "home_noise_m": "randomised start: hand offset uniform in [-x, x]^3 m, per reset seed (the same on every robot)",
    "out": "directory for gap.json (default: <checkpoint>/sim2real)",
    "device": "auto | cpu | cuda",
}
Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


def robot_config(name: str, overrides: dict[str, str]) -> dict[str, Any]:
    """``configs/robot/<name>.yaml`` with ``<name>.KEY=VALUE`` overrides (the loader every command uses;
    :func:`make_robot_env` then sets what the env fixes through :func:`robotrl.workflows.run_env.robot_config`)."""
    return load_robot_config(name, overrides)


def _episode(env: Any, policy: Policy, obs: dict[str, np.ndarray], actions: list[np.ndarray],
             hand_steps: list[float], periods: list[float]) -> tuple[float, bool | None]:
    """One episode of the shared loop from the reset observation ``obs``; returns (return, success or None)."""
    now: dict[str, Any] = {"return": 0.0, "success": None, "t0": 0.0,
                           "hand": np.asarray(env.robot.get_state().ee_pos, float)}

    def source(step: int, obs: dict[str, np.ndarray]) -> np.ndarray:
        now["t0"] = time.monotonic()
        return np.asarray(policy(obs), np.float32)

    def on_step(step: Step) -> None:
        periods.append(time.monotonic() - now["t0"])
        hand = np.asarray(env.robot.get_state().ee_pos, float)
        hand_steps.append(float(np.linalg.norm(hand - now["hand"])))
        now["hand"] = hand
        actions.append(step.action)
        now["return"] += step.reward
        if "success" in step.info:
            now["success"] = bool(now["success"]) or bool(step.info["success"])

    run_episode(env, source, on_step, obs)
    return now["return"], now["success"]


def run_robot(env: Any, policy: Policy, seeds: list[int], on_reset: Callable[[], None] | None = None) -> dict[str, Any]:
    """Episodes on one RobotEnv; returns the robot's column of the report."""
    actions, hand_steps, periods, episodes = [], [], [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        if on_reset is not None:
            on_reset()
        ret, success = _episode(env, policy, obs, actions, hand_steps, periods)
        safety = env.last_episode
        episodes.append({"seed": seed, "return": ret, "success": success, "steps": safety.steps,
                         "interventions": safety.interventions, "overruns": safety.overruns,
                         "safety_stop": safety.stop})
    acts = np.array(actions)
    successes = [e["success"] for e in episodes if e["success"] is not None]
    has_reward = getattr(env, "_ground_truth", None) is not None
    return {
        "episodes": episodes,
        "success_rate": float(np.mean(successes)) if successes else None,
        "return_mean": float(np.mean([e["return"] for e in episodes])) if has_reward else None,
        "action_mean": acts.mean(axis=0).round(4).tolist(),
        "action_std": acts.std(axis=0).round(4).tolist(),
        "hand_step_mm": round(float(np.mean(hand_steps)) * 1e3, 3),
        "interventions_per_episode": float(np.mean([e["interventions"] for e in episodes])),
        "safety_stops": sum(e["safety_stop"] is not None for e in episodes),
        "overruns_per_episode": float(np.mean([e["overruns"] for e in episodes])),
        "step_ms": round(float(np.mean(periods)) * 1e3, 2),
    }


def gap_report(policy: Policy, env_cfg: Any, robots: dict[str, dict[str, Any]], seeds: list[int],
               home_noise_m: float = 0.02, on_reset: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``policy`` on every robot (in order, one connected at a time) and compare each with the first."""
    columns: dict[str, Any] = {}
    for name, cfg in robots.items():
        env = make_robot_env(cfg, env_cfg, seed=seeds[0], home_noise_m=home_noise_m)
        try:
            columns[name] = run_robot(env, policy, seeds, on_reset)
        finally:
            env.close()
    reference, *others = list(columns)
    ref = columns[reference]
    gap = {}
    for name in others:
        col = columns[name]
        gap[name] = {
            "action_mean": (np.subtract(col["action_mean"], ref["action_mean"])).round(4).tolist(),
            "action_std": (np.subtract(col["action_std"], ref["action_std"])).round(4).tolist(),
            "hand_step_mm": round(col["hand_step_mm"] - ref["hand_step_mm"], 3),
            "interventions_per_episode": col["interventions_per_episode"] - ref["interventions_per_episode"],
            "success_rate": None if col["success_rate"] is None or ref["success_rate"] is None
            else col["success_rate"] - ref["success_rate"],
        }
    return {"seeds": seeds, "reference": reference, "robots": columns, "gap": gap}


def table(report: dict[str, Any]) -> str:
    """The report's columns as a plain-text table."""
    rows = ["success_rate", "return_mean", "action_mean", "action_std", "hand_step_mm", "interventions_per_episode",
            "safety_stops", "overruns_per_episode", "step_ms"]
    names = list(report["robots"])
    lines = [f"{'':28}" + "".join(f"{n:>34}" for n in names)]
    for row in rows:
        cells = [report["robots"][n][row] for n in names]
        lines.append(f"{row:28}" + "".join(f"{'n/a' if c is None else str(c):>34}" for c in cells))
    return "\n".join(lines)


def sim2real(checkpoint: str | None = None, robots: str = "sim,franka", episodes: int = 3, seed: int = 0,
             steps: int | None = None, home_noise_m: float = 0.02, out: str | None = None, device: str = "cpu",
             robot_overrides: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """``robotrl sim2real``: load the checkpoint's policy and env settings, run the report, write ``gap.json``."""
    from robotrl.workflows.policy import load_policy

    if checkpoint is None:
        raise ConfigError("robotrl sim2real needs checkpoint=<run dir>")
    names = [n.strip() for n in str(robots).split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError(f"robots={robots!r}: name at least two robots to compare, e.g. robots=sim,franka")
    episodes = int(episodes)
    if episodes < 1:
        raise ConfigError(f"episodes={episodes}, expected >= 1")
    policy = load_policy(checkpoint, device)
    cfg, path = policy.cfg, policy.checkpoint
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    if steps is not None:
        env_cfg["max_episode_steps"] = int(steps) * int(env_cfg.get("action_repeat", 1))
    configs = {n: robot_config(n, (robot_overrides or {}).get(n, {})) for n in names}
    out_dir = Path(out) if out else Path(checkpoint) / "sim2real"
    writable_dir(out_dir, "out")  # before any robot connects: an error after the episodes wastes them
    report = gap_report(policy, env_cfg, configs, list(range(int(seed), int(seed) + episodes)),
                        float(home_noise_m), policy.reset)
    report["checkpoint"] = str(path)
    atomic_write_text(out_dir / "gap.json", json.dumps(report, indent=1))
    print(table(report))
    return report


# ------------------------------------------------------------------------------------------------ the command
def run_gap_report(args: Args) -> int:
    """``robotrl sim2real``: ``ROBOT.KEY=VALUE`` arguments override ``configs/robot/ROBOT.yaml`` of a robot in
    ``robots``."""
    opts = args.opts
    names = {n.strip() for n in str(opts["robots"]).split(",")}
    overrides: dict[str, dict[str, str]] = {}
    for arg in args.extra:
        key, _, value = arg.partition("=")
        robot, _, rest = key.partition(".")
        if robot not in names:
            raise ConfigError(f"{key}: {robot!r} is not one of robots={opts['robots']} (override as ROBOT.KEY=VALUE)")
        overrides.setdefault(robot, {})[rest] = value
    sim2real(**opts, robot_overrides=overrides)
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
GAP_RANGES = {"episodes": "positive_int", "seed": "nonneg_int", "home_noise_m": "nonneg", "steps": "positive_int"}


COMMAND = Command(
    name="sim2real", summary="sim-to-real gap report: one policy, same seeds, several robots",
    usage="robotrl sim2real checkpoint=RUN [robots=sim,franka] [ROBOT.KEY=VALUE ...] [key=value ...]",
    about="The sim-to-real gap report: success, action statistics, hand motion, safety interventions and\ntiming per "
          "robot, through RobotEnv, from the same reset seeds. ROBOT.KEY=VALUE overrides configs/robot/ROBOT.yaml.",
    run=run_gap_report, options=options(GAP_DEFAULTS, GAP_DOCS, GAP_RANGES), prefixes=("*",),
    examples=("robotrl sim2real checkpoint=runs/metaworld/reach/drqv2/seed1 robots=sim,franka "
              "franka.hostname=172.16.0.2 episodes=5",))
