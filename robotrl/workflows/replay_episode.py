"""``robotrl replay``: play a recorded episode's executed actions back on an arm, through the safety layer.

The episode (``episode=DIR/episode_NNNNNN.npz`` of a ``robotrl record`` session; ``robotrl deploy record=``
directories hold no env settings and are refused in one line) is replayed through
:class:`~robotrl.hardware.robot_env.RobotEnv` with the recording's env settings (action repeat, control rate from
``robot.limits``) from the same reset seed: each stored ``action`` (what the safety layer let reach
the driver when it was recorded) is sent ``action_repeat`` times, as then. The report is how far the replay's
proprioception (hand xyz in the policy frame, finger opening) drifts from the recorded one, step by step: the
maximum, mean and final hand distance (m) and the largest opening difference, with the safety layer's
interventions and stop, if any. ``max_drift_m`` turns the report into a check (exit 1 above it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import writable_file
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.params import given, require

REPLAY_DEFAULTS: dict[str, Any] = {"episode": None, "robot": "sim", "max_drift_m": None, "max_drift_rad": None,
                                   "out": None}
REPLAY_DOCS = {
    "episode": "the recorded episode: DIR/episode_NNNNNN.npz of a robotrl record session (required)",
    "robot": "robot config (configs/robot/<name>.yaml) to replay on; robot.KEY=VALUE overrides it",
    "max_drift_m": "fail (exit 1) when the hand drifts further than this from the recording (m)",
    "max_drift_rad": "a joint-space session (teleop=so101_leader): fail when a joint drifts further than this (rad)",
    "out": "also write the report as JSON to this file",
}
REPLAY_RANGES = {"max_drift_m": "positive", "max_drift_rad": "positive"}  # checked as the command line is parsed
_EPISODE = re.compile(r"episode_(\d{6})\.npz$")


class ReplayDriftError(Exception):
    """The replay drifted further than ``max_drift_m``."""


def _load(episode: str) -> tuple[dict[str, Any], Any, int]:
    """(session meta, the episode, its index) for an episode file path."""
    from robotrl.demos import load_demos, load_meta

    path = Path(episode)
    match = _EPISODE.search(path.name)
    if not match or not path.is_file():
        raise ConfigError(f"episode={episode!r}: expected an existing DIR/episode_NNNNNN.npz of a recorded session")
    index = int(match.group(1))
    meta_path = path.parent / "meta.json"
    if not meta_path.is_file():
        raise DemoFormatError(f"{meta_path}: missing (episode= must sit in a robotrl record session directory)")
    meta = load_meta(path.parent)  # a damaged meta.json is one line naming it
    if index >= meta["num_episodes"]:
        raise DemoFormatError(f"{path}: episode {index} is not one of the {meta['num_episodes']} episodes that "
                              f"{meta_path} counts (an unfinished write)")
    if not isinstance(meta.get("env"), dict):
        raise DemoFormatError(f"{meta_path}: no 'env' settings (replay needs a robotrl record session's meta.json)")
    return meta, load_demos(path.parent)[index], index


def replay_on(env: Any, actions: np.ndarray, recorded_state: np.ndarray, seed: int) -> dict[str, Any]:
    """Reset ``env`` (a RobotEnv) with ``seed``, send ``actions`` and compare the proprioception with
    ``recorded_state`` ((T+1, >=4): hand xyz, opening; a JointRobotEnv's: joint angles, opening); returns the drift
    report."""
    from robotrl.workflows.control_loop import Step, run_episode

    joint = getattr(env, "joint_names", None)
    width = 4 if joint is None else len(joint) + 1
    obs, _ = env.reset(seed=seed)
    replayed = [np.asarray(obs["state"][:width], np.float64)]
    stops: list[str] = []

    def on_step(step: Step) -> None:
        replayed.append(np.asarray(step.obs["state"][:width], np.float64))
        if step.info.get("safety_stop"):  # (it also ends the episode)
            stops.append(step.info["safety_stop"])

    run_episode(env, lambda i, _obs: np.asarray(actions[i], np.float32) if i < len(actions) else None, on_step, obs)
    stop = stops[0] if stops else None
    got = np.stack(replayed)
    want = np.asarray(recorded_state[: len(got), :width], np.float64)
    common = {"steps": len(got) - 1, "recorded_steps": len(actions),
              "opening_drift_max": round(float(np.abs(got[:, -1] - want[:, -1]).max()), 6),
              "safety_interventions": env.intervention_total(), "safety_stop": stop}
    if joint is not None:  # per joint, rad
        drift = np.abs(got[:, :-1] - want[:, :-1]).max(axis=1)
        return {**common, "joint_drift_max_rad": round(float(drift.max()), 6),
                "joint_drift_final_rad": round(float(drift[-1]), 6)}
    hand = np.linalg.norm(got[:, :3] - want[:, :3], axis=1)
    return {**common,
            "hand_drift_max_m": round(float(hand.max()), 6), "hand_drift_mean_m": round(float(hand.mean()), 6),
            "hand_drift_final_m": round(float(hand[-1]), 6), "start_offset_m": round(float(hand[0]), 6)}


def replay(episode: str | None = None, robot: str = "sim", max_drift_m: Any = None, out: str | None = None,
           robot_overrides: dict[str, str] | None = None, max_drift_rad: Any = None) -> dict[str, Any]:
    """``robotrl replay``: see the module doc; returns the report (raises ReplayDriftError past ``max_drift_m``)."""
    from robotrl.workflows.run_env import make_robot_env

    if not episode:
        raise ConfigError("robotrl replay needs episode=DIR/episode_NNNNNN.npz")
    require("", positive=given(max_drift_m=max_drift_m, max_drift_rad=max_drift_rad))  # finite: inf is no check
    limit = None if max_drift_m is None else float(max_drift_m)
    rad_limit = None if max_drift_rad is None else float(max_drift_rad)
    if out:
        writable_file(out, "out")  # before the arm connects, not after the replay
    meta, ep, index = _load(episode)
    joint = meta.get("action_space") == "joint"  # recorded by a leader arm through JointRobotEnv
    if (limit if joint else rad_limit) is not None:
        wrong, want = ("max_drift_m", "max_drift_rad (joint angles)") if joint else ("max_drift_rad", "max_drift_m")
        raise ConfigError(f"{wrong}= does not apply to {episode} ({'a joint-space' if joint else 'an end-effector'} "
                          f"session); use {want}")
    env_cfg = {**meta["env"], "obs_type": "proprio"}  # the drift is measured on proprioception: no camera needed
    env_cfg["max_episode_steps"] = max(int(env_cfg.get("max_episode_steps") or 0),
                                       len(ep.action) * int(meta.get("action_repeat", 1)))
    seeds = meta.get("episode_seeds") or []
    seed = int(seeds[index]) if index < len(seeds) else int(meta.get("seed", 0)) + index
    env = make_robot_env(robot, env_cfg, seed, home_noise_m=float(meta.get("home_noise_m", 0.0)),
                         robot_overrides=robot_overrides, joint=joint)
    env.robot.rearm_hint = "check the arm and its surroundings, then run the command again"
    try:
        report = replay_on(env, ep.action, ep.obs["state"], seed)
    finally:
        env.close()
    report.update(episode=str(episode), robot=robot, recorded_on=meta.get("robot"))
    key, bound, unit = ("joint_drift_max_rad", rad_limit, "rad") if joint else ("hand_drift_max_m", limit, "m")
    whole = report["steps"] == report["recorded_steps"]  # a safety stop ends the replay early
    report["ok"] = bound is None or (whole and report[key] <= bound)
    print(json.dumps(report, indent=1))
    if out:
        from robotrl.atomic import atomic_write_text

        atomic_write_text(out, json.dumps(report, indent=1))
    if not report["ok"] and not whole:
        raise ReplayDriftError(f"replay stopped at step {report['steps']} of {report['recorded_steps']} "
                               f"({report['safety_stop'] or 'cut short'}): max_drift_{unit}={bound} checks the whole "
                               f"episode")
    if not report["ok"]:
        raise ReplayDriftError(f"replay drifted {report[key]:.4f} {unit} from the recording, more than "
                               f"max_drift_{unit}={bound}")
    return report


# ------------------------------------------------------------------------------------------------ the command
# one block appended to the module (it merges cleanly with edits of the body), hence the late import
from robotrl.commands import Args, Command, options  # noqa: E402


def run_replay_command(args: Args) -> int:
    """``robotrl replay``: exit code 1 (one line) when the replay drifted past ``max_drift_m``."""
    import sys

    try:
        replay(**args.opts, robot_overrides=args.group("robot"))
    except ReplayDriftError as exc:
        print(f"robotrl: {exc}", file=sys.stderr)
        return 1
    return 0


COMMAND = Command(
    name="replay", summary="play a recorded episode back; report the proprioception drift",
    usage="robotrl replay episode=DIR/episode_NNNNNN.npz robot=NAME [robot.KEY=VALUE ...]",
    about="Play a recorded episode's executed actions back on a robot through its safety layer (same\nenv settings "
          "and reset seed) and report how far its proprioception drifts from the recording.",
    run=run_replay_command, options=options(REPLAY_DEFAULTS, REPLAY_DOCS, REPLAY_RANGES), prefixes=("robot.",),
    examples=("robotrl replay episode=demos/sim-reach/episode_000000.npz robot=sim max_drift_m=0.005",))
