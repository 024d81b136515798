"""``robotrl record``: teleoperated demonstrations on an arm, in the robotrl demo format, exported to LeRobotDataset v3.

The loop, per episode (LeRobot's ``lerobot-record`` and HIL-SERL's, on :class:`~robotrl.hardware.robot_env.RobotEnv`):

1. **Reset**: ``RobotEnv.reset`` homes the arm (``robot=sim`` also resets its scene) and holds it; the person sets
   the scene up. The episode starts at the device's first key/button event, motion or gripper toggle, or after
   ``reset_s`` seconds (0: at once). That start poll only starts the episode; it moves nothing.
2. **Record**: each agent step polls the device once. Its command, in the policy's units and frame, goes to
   ``RobotEnv.step`` as the env's operator (so every command passes the safety layer, and a person's steps are
   flagged ``intervention``); while the person is not in control the arm is sent "hold" (no motion, gripper as it
   was). A leader arm (``teleop=so101_leader``, joint positions) drives ``robot=so101`` joint to joint, as LeRobot
   does: the env is RobotEnv's joint-space variant (``hardware/robot_env_joint.py``), the leader's pose minus the
   follower's commanded target is spread over the step's sends and clipped by the safety layer. Stored per step:
   the frames (with their capture times) and proprioception, the device's command (``commanded_action``), what the
   safety layer let reach the driver (``action``), the flags and the reward (the simulator's on ``robot=sim``).
3. **End**: a success or failure key labels the episode and ends it (the poll with the key moves nothing); the
   re-record and discard keys drop it (nothing is written; re-record and discard differ only in the log line: both
   record the same episode number again); ``steps`` agent steps or a safety stop end it unlabelled.

Each kept episode is written at once, crash-safe (``robotrl.workflows.record_session``). Ctrl-C (or a lost device)
drops only the episode in progress: the arm is held and disconnected, the completed episodes stay, and the same
command with ``resume=true`` records the rest (``episodes`` is the session's total). At the end the session is
exported to a LeRobotDataset v3 (``export=DIR``, default ``<out>/lerobot``; ``export=none`` skips it).
``live_view=FILE.rrd`` logs every step (frames, commanded vs executed actions, safety events, labels) to rerun.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.errors import ConfigError
from robotrl.run_lock import release
from robotrl.workflows.record_frames import stale_tail
from robotrl.workflows.record_session import EpisodeBuffer, Session, base_meta, check_out

log = logging.getLogger(__name__)

RECORD_DEFAULTS: dict[str, Any] = {"robot": "sim", "teleop": "keyboard", "env": "metaworld/reach", "task": None,
                                   "episodes": 10, "steps": 200, "reset_s": 10.0, "out": None, "resume": False,
                                   "export": None, "seed": 0, "live_view": None}
RECORD_DOCS = {
    "robot": "robot config (configs/robot/<name>.yaml); robot.KEY=VALUE overrides it",
    "teleop": "teleop device (configs/teleop/<name>.yaml: keyboard, gamepad, spacemouse, scripted; so101_leader on "
              "robot=so101: joint to joint); teleop.KEY=VALUE",
    "env": "the training env whose observations the demos must match (image size, frame stack, action repeat); "
           "env.KEY=VALUE",
    "task": "the task instruction stored with the episodes (LeRobot's task; default: the env's task name)",
    "episodes": "episodes the session keeps in all (discarded and re-recorded ones do not count)",
    "steps": "agent steps per episode at most (each sent env.action_repeat times at robot.limits.control_hz)",
    "reset_s": "reset phase: the arm holds at home until the device moves (or a key/button event), or this many s",
    "out": "the session directory (robotrl demo format; required)",
    "resume": "continue the session in out= (after Ctrl-C or a crash); numbering continues",
    "export": "LeRobotDataset v3 directory written at the end (default <out>/lerobot; none: no export)",
    "seed": "reset seeds are seed + episode index (robot=sim's scene)",
    "live_view": "log every step to this rerun .rrd file (rerun-sdk; `rerun FILE` opens it)",
}
EXAMPLES = [
    'robotrl record robot=franka robot.hostname=172.16.0.2 teleop=spacemouse task="reach the red block" '
    "episodes=10 out=demos/franka-reach",
    "robotrl record robot=sim teleop=keyboard episodes=5 out=demos/sim-reach reset_s=3",
    "robotrl record robot=sim teleop=keyboard episodes=10 out=demos/sim-reach resume=true",
    "robotrl replay episode=demos/sim-reach/episode_000000.npz robot=sim",
]


@dataclass
class RecordSummary:
    """What a session did (printed as JSON by the CLI)."""

    out: str
    kept: int = 0  # episodes on disk at the end (resumed ones included)
    recorded: int = 0  # kept by this process
    rerecorded: int = 0
    discarded: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    export: str | None = None
    interrupted: bool = False


@dataclass
class Outcome:
    """How an episode ended: ``kind`` is "label", "time", "safety_stop", "rerecord" or "discard"."""

    kind: str
    label: str | None = None
    stop: str | None = None


class RecordInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a session; the completed episodes are on disk. The message is the CLI's one line."""


# ------------------------------------------------------------------------------------------------ the loop
def to_policy_units(action: Any, frame_map: Any, metres_per_unit: float) -> np.ndarray:
    """A device's end-effector :class:`Action` (arm frame, m, gripper 0..1) in the policy's [-1, 1] units (not
    clipped: what the person commanded)."""
    delta = frame_map.delta_to_policy(action.delta) / metres_per_unit
    return np.append(delta, 2.0 * float(action.gripper) - 1.0).astype(np.float32)


def drop_stale_tail(buffer: EpisodeBuffer, stop: str | None) -> None:
    """A camera stop ended the episode: drop the steps whose observations hold no new frame (the stopped step's and
    a frozen stream's repeats before it; ``robotrl.workflows.record_frames``), so none is written as a new frame."""
    steps = stale_tail(buffer.frame_new)
    buffer.drop_tail(steps)
    log.warning("%s: dropped the last %d step(s), whose frames were not new; the episode keeps %d step(s)",
                stop, steps, len(buffer))


def device_command(env: Any, action: Any) -> np.ndarray:
    """A device's :class:`Action` in ``env``'s policy units: end-effector deltas (:func:`to_policy_units`), or joint
    deltas on a joint-space env (``teleop=so101_leader`` on ``robot=so101``: ``JointRobotEnv.to_policy_units``)."""
    from robotrl.hardware.robot import ActionMode

    if action.mode is not env.action_mode:
        raise ConfigError(f"the teleop device gives {action.mode.value} commands, the robot env takes "
                          f"{env.action_mode.value} actions")
    if action.mode is ActionMode.JOINT_DELTA:
        return env.to_policy_units(action)
    return to_policy_units(action, env.robot.frame_map, env.metres_per_unit)


def follower_state(env: Any) -> Any:
    """The arm's state at the latest observation: what a leader arm's command is relative to (None before one)."""
    return None if env.last_observation is None else env.last_observation.state


def wait_for_start(device: Any, reset_s: float, period: float, state: Any = None) -> str:
    """The reset phase's wait (the arm holds): until a device event, motion or gripper change, or ``reset_s``;
    returns why. ``state``: the arm's, for a device whose command depends on it (a leader arm)."""
    deadline, gripper = time.monotonic() + reset_s, None
    while time.monotonic() < deadline:
        cmd = device.poll(state)
        moved = float(np.abs(cmd.action.delta).max(initial=0.0)) > 0
        if cmd.events or moved or (gripper is not None and cmd.action.gripper != gripper):
            return "device"
        gripper = cmd.action.gripper
        time.sleep(period)
    return "timeout"


class Recorder:
    """Runs episodes of ``env`` (a RobotEnv) driven by ``device``; see the module doc."""

    def __init__(self, env: Any, device: Any, live: Any = None) -> None:
        from robotrl.hardware.teleop import TeleopEvent

        self.env, self.device, self.live, self.events = env, device, live, TeleopEvent
        self.views = len(env.cameras)
        self._pending: np.ndarray | None = None
        env.operator = lambda step, obs: self._pending  # the person's command, asked by RobotEnv every step
        self._live_step = 0

    def episode(self, buffer: EpisodeBuffer, obs: dict[str, np.ndarray]) -> Outcome:
        """Record one episode from the reset observation ``obs`` into ``buffer`` (the shared loop,
        :func:`robotrl.workflows.control_loop.run_episode`, with the device as its source)."""
        from robotrl.workflows.control_loop import Step, run_episode

        env, ev = self.env, self.events
        buffer.observe(obs, self.views, env.last_observation, self.env.cameras)
        now: dict[str, Any] = {"gripper": -1.0, "seen": len(env.stats.events), "outcome": Outcome("time")}

        def source(step: int, obs: dict[str, np.ndarray]) -> np.ndarray | None:
            cmd = self.device.poll(follower_state(env))
            for event in cmd.events:
                if event in (ev.RERECORD, ev.DISCARD):
                    now["outcome"] = Outcome(event.value)
                    return None
                if event in (ev.SUCCESS, ev.FAILURE):
                    self._log_label(event.value)
                    now["outcome"] = Outcome("label", event.value)
                    return None
            hold = np.append(np.zeros(env.action_space.shape[0] - 1), now["gripper"]).astype(np.float32)
            commanded = device_command(env, cmd.action)
            self._pending = commanded if cmd.intervening else None
            now["commanded"] = commanded if cmd.intervening else None
            return hold  # RobotEnv asks the operator (self._pending) before it sends this

        def on_step(step: Step) -> None:
            info = step.info
            executed = np.asarray(info.get("sent_action", step.action), np.float32)
            executed = np.clip(executed, -1.0, 1.0)  # the demo format's range (a sent action is inside it anyway)
            now["gripper"] = float(executed[-1])
            buffer.observe(step.obs, self.views, env.last_observation, self.env.cameras)
            buffer.action.append(executed)
            commanded = now["commanded"]
            buffer.commanded.append(step.action if commanded is None else commanded)
            buffer.intervention.append(bool(info.get("intervention", False)))
            buffer.reward.append(step.reward)
            buffer.safety_events.append(int(info.get("interventions", 0)))
            if "success" in info:
                buffer.env_success.append(bool(info["success"]))
            new_events, now["seen"] = env.stats.events[now["seen"]:], len(env.stats.events)
            self._log_step(step.obs, commanded, executed, step.reward, bool(info.get("intervention", False)),
                           new_events)
            if step.truncated:
                stop = info.get("safety_stop")
                if info.get("stale_observation"):
                    drop_stale_tail(buffer, stop)
                now["outcome"] = Outcome("safety_stop" if stop else "time", stop=stop)

        run_episode(env, source, on_step, obs)
        return now["outcome"]

    def _log_step(self, obs: dict[str, np.ndarray], commanded: Any, executed: np.ndarray, reward: float,
                  intervention: bool, events: list[dict[str, Any]]) -> None:
        if self.live is None:
            return
        pixels = obs["pixels"][-3 * self.views:]
        frames = {cam: pixels[3 * v:3 * v + 3].transpose(1, 2, 0) for v, cam in enumerate(self.env.cameras)}
        self.live.step(self._live_step, frames=frames, policy_action=commanded, executed_action=executed,
                       reward=reward, intervention=intervention, events=events)
        self._live_step += 1

    def _log_label(self, label: str) -> None:
        if self.live is not None:
            self.live.step(max(self._live_step - 1, 0), label=label == "success")


def run_session(recorder: Recorder, session: Session, episodes: int, reset_s: float, seed: int,
                summary: RecordSummary) -> None:
    """Record until ``session`` holds ``episodes`` episodes (the completed ones are on disk whatever happens)."""
    env = recorder.env
    while session.count < episodes:
        index = session.count
        obs, _ = env.reset(seed=seed + index)
        print(f"episode {index}: reset; set the scene up, then move the device or press a key "
              f"(starts in {reset_s:g} s)", flush=True)
        wait_for_start(recorder.device, reset_s, env.period, follower_state(env))
        obs = env.reobserve()  # the scene as the person left it, not as it was before the wait
        print(f"episode {index}: recording", flush=True)
        buffer = EpisodeBuffer()
        outcome = recorder.episode(buffer, obs)
        if outcome.kind == "rerecord":
            summary.rerecorded += 1
        elif outcome.kind == "discard" or not len(buffer):  # a label before any step: nothing to keep
            summary.discarded += 1
        if outcome.kind in ("rerecord", "discard") or not len(buffer):
            print(f"episode {index}: {outcome.kind}: nothing written, recording episode {index} again", flush=True)
            continue
        session.write(buffer, outcome.label, seed + index, outcome.stop)
        summary.recorded += 1
        key = outcome.label or "unlabelled"
        summary.labels[key] = summary.labels.get(key, 0) + 1
        ended = outcome.label or (f"safety stop ({outcome.stop})" if outcome.stop else "time, unlabelled")
        print(f"episode {index}: kept, {len(buffer)} steps, {ended}", flush=True)


# ------------------------------------------------------------------------------------------------ entry point
def _make_device(teleop: str, overrides: dict[str, str]) -> Any:
    """The ``teleop=`` device, driving every step unless ``teleop.intervention`` says otherwise or the device has a
    dead-man button (``hold``: the gamepad's RB), which it keeps: released, the arm is sent hold."""
    from robotrl.hardware.teleop import make_teleop
    from robotrl.workflows.run_env import compose_teleop

    cfg = compose_teleop(teleop, overrides)
    if cfg.get("intervention") not in (None, "hold") and "intervention" not in overrides:
        cfg["intervention"] = "always"  # no policy runs while recording: the device drives every step
    device = make_teleop(cfg)
    if device is None:
        raise ConfigError("robotrl record needs a teleop device; teleop=none gives no actions "
                          "(valid: keyboard, gamepad, spacemouse, scripted, so101_leader)")
    return device  # end-effector devices drive RobotEnv, joint ones (so101_leader) its joint-space variant


def export_target(out: str | Path, export: str | None) -> Path | None:
    """Where the session's LeRobotDataset goes (None: ``export=none``). It replaces only an earlier export of
    robotrl's (its ``meta/robotrl.json``): any other existing path, the session itself or a folder holding it is a
    ConfigError, since the export removes what is there."""
    if export == "none":
        return None
    out = Path(out).absolute()
    target = (Path(export) if export else out / "lerobot").absolute()
    if target == out or target in out.parents:
        raise ConfigError(f"export={export!r} is the session out={str(out)!r} or holds it: the export replaces what is "
                          f"at its path; choose another export=DIR")
    if target.exists() and not (target / "meta" / "robotrl.json").is_file():
        raise ConfigError(f"export={str(target)!r} exists and is not a LeRobotDataset robotrl exported (no "
                          f"meta/robotrl.json): the export would replace it; choose a new or empty export=DIR")
    return target


def _check_export_rate(out: str | Path, export: str | None, hz: float, action_repeat: int) -> None:
    """A session to be exported needs a whole LeRobot fps (``lerobot_fps``); said before anything is recorded."""
    if export_target(out, export) is not None:
        from robotrl.lerobot_dataset import lerobot_fps

        lerobot_fps(hz, action_repeat)


def _export(session: Session, export: str | None, instruction: str) -> str | None:
    """Export the session to a LeRobotDataset v3 (replacing robotrl's earlier export); returns its path."""
    from robotrl.lerobot_dataset import export_lerobot

    target = export_target(session.out, export)
    if target is None or not session.count:
        return None
    fresh = target.with_name(f"{target.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    export_lerobot(session.out, fresh, task=instruction)
    if target.exists():
        shutil.rmtree(target)
    fresh.rename(target)
    return str(target)


def record(robot: str = "sim", teleop: str = "keyboard", env: str = "metaworld/reach", task: str | None = None,
           episodes: int = 10, steps: int = 200, reset_s: float = 10.0, out: str | None = None, resume: bool = False,
           export: str | None = None, seed: int = 0, live_view: str | None = None,
           overrides: dict[str, dict[str, str]] | None = None, device: Any = None) -> dict[str, Any]:
    """``robotrl record``: see the module doc. ``overrides`` are the ``robot.``/``teleop.``/``env.`` keys;
    ``device`` replaces the teleop device built from ``teleop`` (tests)."""
    from robotrl.envs import parse_env_cfg
    from robotrl.workflows.run_env import make_robot_env

    overrides = overrides or {}
    if not out:
        raise ConfigError("robotrl record needs out=DIR (the session directory)")
    check_out(Path(out), resume)  # before any device or arm is touched
    for key, value, low in (("episodes", episodes, 1), ("steps", steps, 1), ("reset_s", reset_s, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise ConfigError(f"{key}={value!r}, expected a number >= {low}")
    if export_target(out, export) is not None:  # a path it must not replace: refused before anything connects
        from robotrl.lerobot_dataset import _require

        _require()  # pyarrow and av: fail before recording, not after
    from omegaconf import OmegaConf

    env_over = OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.get("env", {}).items()]))
    env_cfg: dict[str, Any] = {"name": env, **env_over, "obs_type": "pixels_proprio"}  # type: ignore[dict-item]
    spec = parse_env_cfg(env_cfg)
    env_cfg["max_episode_steps"] = int(steps) * spec.action_repeat
    device = device or _make_device(teleop, overrides.get("teleop", {}))
    summary = RecordSummary(out=str(out))
    session: Session | None = None
    device.connect()  # the device before the arm (LeRobot #4166): a missing device never leaves an arm connected
    renv, live = None, None
    try:
        if live_view:
            from robotrl.live_view import LiveView

            live = LiveView(f"robotrl-record-{Path(out).name}", rrd=live_view)
        from robotrl.hardware.robot import ActionMode

        joint = device.mode is ActionMode.JOINT_DELTA  # a leader arm: joint to joint, as LeRobot's SO-101
        renv = make_robot_env(robot, env_cfg, seed, home_noise_m=0.0, robot_overrides=overrides.get("robot", {}),
                              joint=joint)
        renv.robot.rearm_hint = "check the arm and its surroundings, then run the command again with resume=true"
        if not renv.cameras:
            raise ConfigError(f"robot={robot} has no camera; demos store camera frames (robot.cameras=...)")
        _check_export_rate(out, export, renv.robot.limits.control_hz, spec.action_repeat)  # before any episode
        instruction = str(task) if task else spec.task
        meta = base_meta(env_cfg, spec, renv.robot, instruction, teleop, float(renv.robot.limits.control_hz), seed,
                         0.0)
        if joint:
            meta.update(renv.demo_meta())
        session = Session.open(out, meta, resume)
        if resume:
            print(f"resuming {out}: {session.count} episode(s) kept, recording up to {episodes}", flush=True)
        run_session(Recorder(renv, device, live), session, int(episodes), float(reset_s), int(seed), summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if renv is not None:
            renv.close()  # hold and disconnect the arm first
        device.disconnect()
        if live is not None:
            live.close()
        if session is not None:
            release(session.out, remove=True)  # another `robotrl record` may write it now
    summary.kept = session.count if session is not None else 0
    if summary.interrupted or session is None:
        raise RecordInterrupted(f"record interrupted (Ctrl-C): the arm is held and disconnected; {summary.kept} "
                                f"episode(s) kept in {out}; the same command with resume=true continues")
    summary.export = _export(session, export, instruction)
    return summary.__dict__


# ------------------------------------------------------------------------------------------------ the command
# one block appended to the module (it merges cleanly with edits of the body), hence the late import
from robotrl.commands import Args, Command, options  # noqa: E402


def run_record_command(args: Args) -> int:
    """``robotrl record``: the session summary as JSON; Ctrl-C: one line, exit code 130."""
    import json
    import sys

    overrides = {prefix: args.group(prefix) for prefix in ("robot", "teleop", "env")}
    try:
        print(json.dumps(record(**args.opts, overrides=overrides), indent=1))
    except KeyboardInterrupt as exc:  # the arm is held and disconnected, the completed episodes are on disk
        print(f"robotrl: {exc or 'record interrupted (Ctrl-C)'}", file=sys.stderr)
        return 130
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
RECORD_RANGES = {"episodes": "positive_int", "steps": "positive_int", "reset_s": "nonneg", "seed": "nonneg_int"}


COMMAND = Command(
    name="record", summary="teleoperated demos through the safety layer (demo format + LeRobot v3)",
    usage='robotrl record robot=NAME teleop=DEVICE task="..." episodes=N out=DIR [robot.KEY=VALUE teleop.KEY=VALUE '
          "env.KEY=VALUE ...]",
    about="Record teleoperated demonstrations on an arm, every command through its safety layer: a reset\nphase, "
          "labels (success/failure keys), re-record and discard keys, crash-safe episodes in the\nrobotrl demo "
          "format, resume=true after Ctrl-C, a LeRobotDataset v3 export at the end.",
    run=run_record_command, options=options(RECORD_DEFAULTS, RECORD_DOCS, RECORD_RANGES),
    prefixes=("robot.", "teleop.", "env."),
    examples=tuple(EXAMPLES))
