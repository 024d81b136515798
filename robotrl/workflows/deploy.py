"""`robotrl deploy`: run a trained policy on a robot through the safety layer, at a fixed control rate.

The observation pipeline is the training run's, read from the checkpoint's config: the camera(s), image size and
frame stack of ``cfg.env``; every policy action is sent ``action_repeat`` times (one send per control tick), as
the training env repeated it; a normalized action becomes an end-effector delta with Meta-World's action scale
(``robotrl.hardware.robot.ee_action_from_policy``). Before the arm moves, :func:`check_compatible` refuses in one
line (ConfigError) a robot that cannot produce that observation (missing camera, wrong frame size, a state the
robot cannot measure) or take that action (dimension, mode).

Per agent step the loop logs the policy's action, what the safety layer actually sent, and whether a human
operator had taken over (``intervention``); ``dry_run`` computes and logs actions but sends nothing. Episodes are
recorded in the robotrl demo format (``robotrl.envs.demos``, so MoDem can train from them) with one extra
per-step array ``intervention`` (T,) bool marking the operator's segments.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.contract import OBS_TYPES, PROPRIO_OBS_TYPES
from robotrl.errors import ConfigError
from robotrl.hardware.obs_checks import check_frame
from robotrl.hardware.robot_env import GRIPPER_NORM_M, Rate, proprio  # noqa: F401 (GRIPPER_NORM_M: re-exported)
from robotrl.live_view import open_live_view
from robotrl.workflows.deploy_safety import ESTOP_KEY, KeyEStop, wants_estop_key, write_logs  # noqa: F401 (re-exported)
from robotrl.workflows.run_env import (  # noqa: F401 (Operator, ScriptedOperator: re-exported)
    Operator,
    ScriptedOperator,
    load_operator,
    load_robot_config,
)

log = logging.getLogger(__name__)

# What a deployable policy's actions mean, per training suite: Meta-World's 4-d (dx, dy, dz, gripper) in [-1, 1],
# 0.01 m per unit (SawyerXYZEnv.action_scale). dm-control / gym actions are joint torques of other bodies.
ARM_SUITES = {"metaworld": {"action_dim": 4, "metres_per_unit": 0.01}}
# Meta-World's proprioception (_get_curr_obs_combined_no_goal): hand xyz (m), finger distance / 0.1 m clipped to
# [0, 1]; the *_proprio obs types see it for this env step and the previous one (obs[0:4] and obs[18:22]).
# proprio() and Rate are shared with RobotEnv (robotrl.hardware.robot_env), which trains on the same observations.
PIXEL_KEYS = ("pixels",)
RECORD_FORMAT = "robotrl deploy recording (robotrl demo format v1 + intervention)"
REARM_HINT = ("check the arm and its surroundings, then start a new `robotrl deploy` run (each run starts with the "
              "e-stop released)")


# ------------------------------------------------------------------------------------------------ spec
@dataclass(frozen=True)
class PolicySpec:
    """What the policy was trained with (from the checkpoint's ``cfg.env``)."""

    env_name: str
    suite: str
    task: str
    obs_type: str
    cameras: tuple[str, ...]
    image_size: int
    frame_stack: int
    action_repeat: int
    action_dim: int
    metres_per_unit: float
    max_agent_steps: int

    @classmethod
    def from_config(cls, cfg: Any, action_dim: int) -> PolicySpec:
        from robotrl.envs import parse_env_cfg

        spec = parse_env_cfg(cfg.env)
        if spec.suite not in ARM_SUITES:
            raise ConfigError(f"checkpoint policy was trained on {spec.name}, whose actions are not arm commands; "
                              f"deploy runs policies of suites {sorted(ARM_SUITES)}")
        from robotrl.envs.metaworld import DEFAULT_CAMERA, DEFAULT_MAX_STEPS
        from robotrl.envs.rendering import camera_tuple

        max_env_steps = spec.max_episode_steps or DEFAULT_MAX_STEPS
        return cls(spec.name, spec.suite, spec.task, spec.obs_type, tuple(camera_tuple(spec.camera, DEFAULT_CAMERA)),
                   spec.image_size, spec.frame_stack, spec.action_repeat, action_dim,
                   ARM_SUITES[spec.suite]["metres_per_unit"], math.ceil(max_env_steps / spec.action_repeat))

    @property
    def uses_pixels(self) -> bool:
        return "pixels" in OBS_TYPES[self.obs_type]

    @property
    def uses_proprio(self) -> bool:
        return self.obs_type in PROPRIO_OBS_TYPES


def robot_config(robot: str, spec: PolicySpec, hz: float | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """``configs/robot/<robot>.yaml`` + ``robot.key=value`` overrides; ``robot=sim`` renders the policy's scene,
    cameras and image size unless overridden; ``hz`` sets ``limits.control_hz`` (the rate monitor's nominal)."""
    from robotrl.hardware import robot_class

    scene = robot_class(robot).renders_env_scene  # robot=sim: the policy's own Meta-World scene
    base = {"task": spec.task, "cameras": list(spec.cameras), "image_size": spec.image_size} if scene else None
    cfg = load_robot_config(robot, overrides, base)
    if hz is not None:
        cfg.setdefault("limits", {})["control_hz"] = hz
    return cfg


def check_compatible(spec: PolicySpec, robot: Any) -> None:
    """Refuse (ConfigError, one line) a robot that cannot produce the policy's observation or take its action."""
    from robotrl.hardware.robot import ActionMode

    if spec.action_dim != ARM_SUITES[spec.suite]["action_dim"]:
        raise ConfigError(f"policy outputs {spec.action_dim}-d actions, expected "
                          f"{ARM_SUITES[spec.suite]['action_dim']} (dx, dy, dz, gripper) for a {spec.suite} policy")
    if ActionMode.EE_DELTA not in robot.action_modes:
        raise ConfigError(f"robot={robot.inner.name} takes {[m.value for m in robot.action_modes]} actions, but the "
                          f"policy outputs ee_delta (dx, dy, dz, gripper)")
    if "state" in OBS_TYPES[spec.obs_type] and not spec.uses_proprio:
        # Meta-World's full state holds object and goal positions: no robot measures them.
        raise ConfigError(f"policy observes env.obs_type={spec.obs_type!r} (object and goal positions), which "
                          f"robot={robot.inner.name} cannot measure; deploy runs pixels and *_proprio policies")
    missing = [c for c in spec.cameras if c not in robot.camera_names] if spec.uses_pixels else []
    if missing:
        raise ConfigError(f"policy needs camera {missing[0]!r} but robot={robot.inner.name} has cameras "
                          f"{list(robot.camera_names)}")


def check_frames(spec: PolicySpec, observation: Any, robot_name: str) -> None:
    """The first observation must fit: frames of the policy's image size (no silent resize: crop and field of view
    would differ), an end-effector position for proprioception."""
    if spec.uses_proprio and observation.state.ee_pos is None:
        raise ConfigError(f"robot={robot_name} reports no end-effector position, which the policy's "
                          f"env.obs_type={spec.obs_type!r} needs")
    frames = observation.frames
    want = (spec.image_size, spec.image_size, 3)
    for cam in spec.cameras if spec.uses_pixels else ():
        shape = tuple(check_frame(cam, frames[cam].image).shape)  # dtype and layout: ObservationSpecError
        if shape != want:
            raise ConfigError(f"robot={robot_name} camera {cam!r} gives {shape} frames, policy expects {want} "
                              f"(a camera device: crop it square and set robot.cameras.{cam}.resize="
                              f"{spec.image_size}; a simulated one: robot.image_size={spec.image_size})")


# ------------------------------------------------------------------------------------------------ pipeline
class ObservationPipeline:
    """Robot observations -> the training env's observation: per frame the views concatenated along channels
    in camera order (3 * views, H, W), the last ``frame_stack`` frames stacked oldest first, padded at reset; for
    ``*_proprio`` policies a "state" of this env step's proprioception and the previous env step's (the arm as it
    was before the last send of the action repeat, :meth:`between_sends`), as Meta-World's ``obs[0:4], obs[18:22]``.
    """

    def __init__(self, spec: PolicySpec, frame_map: Any = None) -> None:
        from robotrl.hardware.frame_map import IDENTITY

        self.spec = spec
        self.frame_map = IDENTITY if frame_map is None else frame_map  # the robot's robot.frame_map
        self._frames: deque[np.ndarray] = deque(maxlen=spec.frame_stack)
        self._prev: np.ndarray | None = None
        self.proprio = np.zeros(8, np.float32)  # the last observation's 8-d proprioception (recorded as state)

    def frame(self, observation: Any) -> np.ndarray:
        views = [check_frame(c, observation.frames[c].image, self.spec.image_size).transpose(2, 0, 1)
                 for c in self.spec.cameras]
        return np.ascontiguousarray(np.concatenate(views, axis=0))

    def between_sends(self, state: Any) -> None:
        """The arm's state read between two sends of one action repeat (the last one read becomes "previous")."""
        self._prev = proprio(state, self.frame_map)

    def _obs(self, observation: Any) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.spec.uses_pixels:
            out["pixels"] = np.concatenate(list(self._frames), axis=0)
        current = proprio(observation.state, self.frame_map)
        self.proprio = np.concatenate([current, current if self._prev is None else self._prev])
        self._prev = current  # with action_repeat 1 the previous env step is the previous agent step
        if self.spec.uses_proprio:
            out["state"] = self.proprio
        return out

    def reset(self, observation: Any) -> dict[str, np.ndarray]:
        self._frames.clear()
        self._prev = None  # at reset Meta-World's previous proprioception is the current one
        if self.spec.uses_pixels:
            self._frames.extend([self.frame(observation)] * self.spec.frame_stack)
        return self._obs(observation)

    def step(self, observation: Any) -> dict[str, np.ndarray]:
        if self.spec.uses_pixels:
            self._frames.append(self.frame(observation))
        return self._obs(observation)


def measured_state(observation: Any, pipeline: ObservationPipeline) -> np.ndarray:
    """What a recording stores as ``state``: Meta-World's 8-d proprioception (this env step, previous env step;
    ``proprio_index`` 0..7 in meta.json, so ``*_proprio`` agents load it), then joint positions (rad)."""
    return np.concatenate([pipeline.proprio, np.asarray(observation.state.joint_pos, np.float32)]).astype(np.float32)


# ------------------------------------------------------------------------------------------------ recording
@dataclass
class EpisodeRecord:
    """One episode's arrays in the demo format, plus the operator flag."""

    pixels: list[np.ndarray] = field(default_factory=list)
    state: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    intervention: list[bool] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        t = len(self.action)
        return {
            "pixels": np.stack(self.pixels).astype(np.uint8),
            "state": np.stack(self.state).astype(np.float32),
            "action": np.stack(self.action).astype(np.float32),
            "reward": np.zeros(t, np.float32),  # a robot has no reward signal; documented in meta.json
            "terminated": np.zeros(t, bool),
            "success": np.zeros(t, bool),
            "intervention": np.asarray(self.intervention, bool),
        }


def write_recording(out: Path, spec: PolicySpec, episodes: list[EpisodeRecord], robot: Any,
                    extra: dict[str, Any]) -> Path:
    """Write ``episodes`` as a demo directory (episode npz files, then meta.json last, all atomic)."""
    from robotrl.demos import FORMAT_VERSION, episode_file

    out.mkdir(parents=True, exist_ok=True)
    lengths = []
    for i, ep in enumerate(episodes):
        with atomic_write(out / episode_file(i)) as f:
            np.savez_compressed(f, **ep.arrays())
        lengths.append(len(ep.action))
    proprio_names = ["ee.x", "ee.y", "ee.z", "gripper.opening"]
    state_names = proprio_names + [f"prev.{n}" for n in proprio_names] + [f"{j}.pos" for j in robot.joint_names]
    meta = {
        "format_version": FORMAT_VERSION, "format": RECORD_FORMAT, "name": spec.env_name, "suite": spec.suite,
        "task": spec.task, "image_size": spec.image_size, "frame_stack": spec.frame_stack,
        "action_repeat": spec.action_repeat, "camera": spec.cameras[0], "cameras": list(spec.cameras),
        "state_dim": len(state_names), "state_names": state_names, "proprio_index": list(range(8)),
        "action_dim": spec.action_dim,
        "action_units": f"[-1, 1]: dx dy dz x {spec.metres_per_unit} m, gripper (+1 closed)",
        "reward": "none: robots have no reward signal, stored as 0", "robot": robot.inner.name,
        "num_episodes": len(episodes), "episode_lengths": lengths,
        "episode_interventions": [int(np.sum(ep.intervention)) for ep in episodes], **extra,
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return out


# ------------------------------------------------------------------------------------------------ the loop
Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class DeployResult:
    """Filled in as the loop runs, so that what happened before an exception is still logged."""

    episodes: int = 0  # episodes started
    sends: int = 0  # commands the safety layer passed to the driver
    interventions: int = 0  # agent steps driven by the operator
    periods_ms: list[float] = field(default_factory=list)  # time between consecutive commands
    events: list[dict[str, Any]] = field(default_factory=list)  # operator take-over / hand-back
    log: list[dict[str, Any]] = field(default_factory=list)  # one row per agent step
    records: list[EpisodeRecord] = field(default_factory=list)  # one per episode, when recording


def run_deploy(robot: Any, spec: PolicySpec, policy: Policy, episodes: int, steps: int, hz: float,
               dry_run: bool = False, operator: Operator | None = None, on_reset: Callable[[], None] | None = None,
               record: bool = False, result: DeployResult | None = None, live: Any = None) -> DeployResult:
    """Run ``episodes`` episodes of ``steps`` agent steps on a connected SafetyLayer ``robot``.

    With ``record`` each episode is kept as an :class:`EpisodeRecord` (``result.records``, the one in progress
    included). ``live`` (a :class:`robotrl.live_view.ArmLog`) gets each step's frames, policy and executed
    actions and safety events. Exceptions propagate: the caller's ``with robot`` block then holds and disconnects.
    """
    from robotrl.hardware.robot import ee_action_from_policy

    result = DeployResult() if result is None else result
    pipeline = ObservationPipeline(spec, robot.frame_map)
    rows, events, periods = result.log, result.events, result.periods_ms
    for episode in range(episodes):
        result.episodes += 1
        if not dry_run:  # homing moves the arm: a dry run sends nothing at all
            robot.reset_to_home()
        observation = robot.get_observation()
        if episode == 0:
            check_frames(spec, observation, robot.inner.name)
        obs = pipeline.reset(observation)
        if on_reset is not None:
            on_reset()
        rec = EpisodeRecord() if record else None
        if rec is not None:
            result.records.append(rec)
            rec.pixels.append(pipeline.frame(observation))
            rec.state.append(measured_state(observation, pipeline))
        taken_over = False
        rate, last_send = Rate(hz), None
        for step in range(steps):
            t0 = time.monotonic()
            action = np.asarray(policy(obs), dtype=np.float32)
            human = operator(step, obs) if operator is not None else None
            if (human is not None) != taken_over:
                taken_over = human is not None
                kind = "take_over" if taken_over else "hand_back"
                events.append({"kind": kind, "episode": episode, "step": step, "t": t0})
                log.info("operator %s at episode %d step %d", kind, episode, step)
            command = np.asarray(human, np.float32) if taken_over else action
            result.interventions += int(taken_over)
            sent_units = []
            # Sends of one action repeat are one period apart (the training env's physics steps per action); the
            # first follows inference at once, and the next observation is read one period after the last send.
            for repeat in range(spec.action_repeat):
                send_t = rate.wait() if repeat else rate.mark()
                if repeat and not dry_run:  # the arm after the previous send: "previous" proprioception
                    pipeline.between_sends(robot.get_state())
                if last_send is not None:
                    periods.append((send_t - last_send) * 1000)
                last_send = send_t
                if not dry_run:
                    sent = robot.send_action(ee_action_from_policy(command, spec.metres_per_unit, robot.frame_map))
                    result.sends += 1
                    # What reached the driver, back in policy units (the safety layer may have clipped it).
                    sent_units.append(np.append(robot.frame_map.delta_to_policy(sent.delta) / spec.metres_per_unit,
                                                2.0 * sent.gripper - 1.0))
            rate.wait()
            sent_mean = np.mean(sent_units, axis=0) if sent_units else None
            observation = robot.get_observation()
            obs = pipeline.step(observation)
            rows.append({"episode": episode, "step": step, "policy_action": action.tolist(),
                         "sent_action": None if dry_run else [u.tolist() for u in sent_units],
                         "intervention": taken_over,
                         "step_ms": round((time.monotonic() - t0) * 1000, 3)})
            if live is not None:
                live.log(observation.frames, policy_action=action, executed_action=sent_mean, intervention=taken_over)
            log.info("episode %d step %d action %s%s%s", episode, step, np.round(command, 4).tolist(),
                     " (operator)" if taken_over else "", " (dry run: not sent)" if dry_run else "")
            if rec is not None:
                rec.pixels.append(pipeline.frame(observation))
                rec.state.append(measured_state(observation, pipeline))
                # Recorded in [-1, 1] as the demo format requires; the clip only matters for a human's raw input.
                # (the mean over the action repeat: the step's net displacement per send, what the arm executed)
                rec.action.append(np.clip(command if dry_run else sent_mean, -1.0, 1.0))
                rec.intervention.append(taken_over)
        if taken_over:
            events.append({"kind": "hand_back", "episode": episode, "step": steps, "t": time.monotonic()})
    return result


# ------------------------------------------------------------------------------------------------ entry point
def _number(key: str, value: Any, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}, expected a positive {kind.__name__}") from None
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{key}={value!r}, expected a positive {kind.__name__}")
    return number


def deploy(checkpoint: str | None = None, robot: str = "sim", hz: Any = None, episodes: int = 1, steps: Any = None,
           dry_run: bool = False, record: str | None = None, out: str | None = None, device: str = "cpu",
           operator: Operator | str | None = None, robot_overrides: dict[str, Any] | None = None,
           server: str | None = None, token: str | None = None, policy_timeout_s: float = 2.0,
           estop_key: bool | str | None = None, live_view: str | None = None) -> dict[str, Any]:
    """Load the policy, build ``robot`` behind the safety layer, check compatibility, run; returns a summary.

    The policy is the checkpoint's agent, or with ``server=host:port`` a remote :mod:`robotrl.workflows.policy_server`
    (token from ``token`` or ``$ROBOTRL_POLICY_TOKEN``), whose checkpoint config gives the pipeline. Writes
    ``<out>/steps.jsonl`` (one row per agent step), ``<out>/events.jsonl`` (safety, operator and policy-server
    events) and ``<out>/summary.json``, also when the run ends in an error; ``record`` gets the episodes in the
    demo format. With ``estop_key`` (default: when stdin is a terminal) ``e`` + Enter on stdin is an e-stop
    (:class:`KeyEStop`); the run then ends with EStopError, the arm held and disconnected. ``live_view`` (an
    ``.rrd`` file, or HOST:PORT of a running rerun viewer) shows the run in rerun.
    """
    hz = None if hz is None else _number("hz", hz, float)
    steps = None if steps is None else _number("steps", steps, int)
    if episodes < 1:
        raise ConfigError(f"episodes={episodes}, expected >= 1")
    key_estop = wants_estop_key(estop_key, sys.stdin)
    if (checkpoint is None) == (server is None):
        given = "both were given" if server else "neither was given"
        raise ConfigError(f"robotrl deploy needs checkpoint=PATH (local policy) or server=HOST:PORT (remote, its "
                          f"checkpoint is the server's), not both; {given}")
    policy_timeout_s = _number("policy_timeout_s", policy_timeout_s, float)
    if not logging.getLogger().handlers:  # the CLI: per-step actions and safety events on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    source = _remote_policy(server, token, policy_timeout_s) if server else _local_policy(checkpoint, device)
    cfg, action_dim, policy, on_reset, path, policy_events = source
    spec = PolicySpec.from_config(cfg, action_dim)
    steps = spec.max_agent_steps if steps is None else steps
    if isinstance(operator, str):
        operator = load_operator(operator)
    from robotrl.hardware import make_robot

    layer = make_robot(robot_config(robot, spec, hz, robot_overrides or {}))
    layer.rearm_hint = REARM_HINT
    check_compatible(spec, layer)
    missing = [c for c in spec.cameras if c not in layer.camera_names]
    if record and missing:  # a proprio-only policy needs no camera, but the demo format stores frames
        raise ConfigError(f"record= stores camera {missing[0]!r} frames, but robot={robot} has cameras "
                          f"{list(layer.camera_names)}")
    rate_hz = float(layer.limits.control_hz)
    result = DeployResult()
    base = Path("deploy") if server else path.parent.parent / "deploy"
    out_dir = Path(out) if out else base / f"{robot}-{time.strftime('%Y%m%d-%H%M%S')}"
    error: BaseException | None = None
    key = None
    live = open_live_view(live_view, layer)
    try:
        with layer:
            key = KeyEStop(layer, sys.stdin).start() if key_estop else None
            run_deploy(layer, spec, policy, episodes, steps, rate_hz, dry_run, operator, on_reset,
                       record=bool(record), result=result, live=live)
    except KeyboardInterrupt as exc:  # Ctrl-C: the arm already stopped, held and disconnected; logged below
        error = exc
    except BaseException as exc:  # the arm already holds and is disconnected; log, then re-raise
        error = exc
        raise
    finally:
        if key is not None:
            key.stop()
        if live is not None:
            live.flush()
            live.view.close()
        if server:
            policy.client.close()  # type: ignore[attr-defined]
        result.events.extend(policy_events)
        summary = write_logs(out_dir, result, layer, error, {
            "checkpoint": str(path), "policy": f"remote {server}" if server else "local", "env": spec.env_name,
            "agent": str(cfg.agent.name), "robot": robot, "dry_run": dry_run, "hz": rate_hz})
        complete = [r for r in result.records if len(r.action)]  # an episode cut short is kept, marked in meta
        if record and complete:
            write_recording(Path(record), spec, complete, layer, {"checkpoint": str(path), "dry_run": dry_run,
                                                                  "hz": rate_hz, "error": summary["error"]})
            summary["record"] = str(record)
            atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    if isinstance(error, KeyboardInterrupt):
        raise DeployInterrupted(f"deploy interrupted (Ctrl-C): the arm {_stop_outcome(summary)}; logs in {out_dir}")
    return summary


class DeployInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a deploy run after its logs were written; the message is the one line the CLI prints."""


def _stop_outcome(summary: dict[str, Any]) -> str:
    """How the arm ended, for the Ctrl-C line: stopped cleanly, or what failed (never 'fine' after a failure)."""
    if not summary["stop_failures"] and summary["final_state"] == "disconnected":
        return "was stopped, held and disconnected"
    return f"ended {summary['final_state']} after {summary['stop_failures'][:1] or 'an error'}"


def _local_policy(checkpoint: Any, device: str) -> tuple[Any, int, Policy, Any, Path, list[dict[str, Any]]]:
    from robotrl.workflows.evaluate import load_policy

    cfg, agent, path = load_policy(Path(checkpoint), device)
    big = int(torch.iinfo(torch.int64).max)  # past every exploration schedule: the deterministic policy

    def policy(o: dict[str, np.ndarray]) -> np.ndarray:
        return agent.act(o, big, eval_mode=True)

    return cfg, int(agent.action_space.shape[0]), policy, getattr(agent, "reset", None), path, []


def _remote_policy(server: str, token: str | None, timeout_s: float) -> tuple[Any, int, Policy, Any, Path,
                                                                              list[dict[str, Any]]]:

    from robotrl.workflows.policy_server import AsyncPolicyClient, PolicyClient

    client = AsyncPolicyClient(PolicyClient(server, token or os.environ.get("ROBOTRL_POLICY_TOKEN", ""),
                                            timeout_s=timeout_s))
    remote = client.client.spec()
    cfg = OmegaConf.create({"env": remote["env"], "agent": {"name": remote["agent"]}})
    return cfg, int(remote["action_dim"]), client, client.reset, Path(remote["checkpoint"]), client.events


DEPLOY_HELP = """usage: robotrl deploy checkpoint=PATH robot=NAME [options] [robot.KEY=VALUE ...]

Run a trained policy on a robot (configs/robot/NAME.yaml) behind the safety layer, at a fixed control rate, with
the observation pipeline of its training run (camera, image size, frame stack, action repeat, action scale).

  checkpoint=PATH   run dir, its checkpoints/ dir, or one checkpoint
  server=HOST:PORT  or: a remote policy (`robotrl serve`), token from token=... or $ROBOTRL_POLICY_TOKEN
  policy_timeout_s=F  with server=: how long to wait for (or retry) the server before stopping (default 2.0);
                    meanwhile no command reaches the arm and the watchdog holds it
  robot=NAME        sim | mock | so101 | ... (default sim: the Meta-World Sawyer rendering the training camera)
  hz=F              control rate of the commands (default: the robot's limits.control_hz)
  episodes=N        episodes, each starting from the robot's home pose (default 1)
  steps=N           agent steps per episode (default: the training episode length)
  dry_run=BOOL      compute and log actions, send nothing (default false)
  record=DIR        record the episodes in the robotrl demo format (+ per-step `intervention` flag)
  out=DIR           where steps.jsonl, events.jsonl and summary.json go (default <run>/deploy/<robot>-<time>)
  operator=MOD:FN   human-intervention hook: FN() returns a callable (step, obs) -> action or None
  device=DEV        torch device for the policy (default cpu)
  estop_key=WHEN    auto | true | false (default auto: on when stdin is a terminal): typing e + Enter is a
                    software e-stop; the arm holds, the run ends with an error, and it does not re-arm (a new run
                    does). Ctrl-C (homing included) stops and holds the arm, disconnects it, and
                    exits 130 with one line.
  live_view=FILE    show the run in rerun (pip install 'robotrl[live]'): camera frames, policy vs executed actions,
                    safety events; FILE.rrd is written (open it with `rerun FILE.rrd`), HOST:PORT streams to a viewer
  robot.KEY=VALUE   override the robot config, e.g. robot.cameras=[corner2] robot.limits.on_limit=reject
"""

DEPLOY_DEFAULTS: dict[str, Any] = {"checkpoint": None, "robot": "sim", "hz": None, "episodes": 1, "steps": None,
                                   "dry_run": False, "record": None, "out": None, "operator": None, "device": "cpu",
                                   "server": None, "token": None, "policy_timeout_s": 2.0, "estop_key": "auto",
                                   "live_view": None}

