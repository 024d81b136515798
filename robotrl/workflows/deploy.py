"""`robotrl deploy`: run a trained policy on a robot through the safety layer, at a fixed control rate.

The loop is the one every command on an arm shares (:mod:`robotrl.workflows.control_loop`: a
:class:`~robotrl.hardware.robot_env.RobotEnv` with the training run's observation pipeline, read from the
checkpoint's ``cfg.env``: camera(s), image size, frame stack; every policy action sent ``action_repeat`` times one
control period apart, as the training env repeated it, as an end-effector delta at Meta-World's action scale through
the robot's ``frame_map``). A safety stop that ends a RobotEnv episode ends a deploy run (its error is raised).
Before the arm moves, :func:`check_compatible` refuses in one
line (ConfigError) a robot that cannot produce that observation (missing camera, wrong frame size, a state the
robot cannot measure) or take that action (dimension, mode).

Per agent step the loop logs the policy's action, what the safety layer actually sent, and whether a human
operator had taken over (``intervention``); ``dry_run`` (RobotEnv's) computes and logs actions but nothing reaches
the driver: no homing, hold or command. Episodes are
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robotrl.atomic import atomic_write_text, writable_dir
from robotrl.contract import OBS_TYPES, PROPRIO_OBS_TYPES
from robotrl.demos import prepare_new_demo_dir
from robotrl.errors import ConfigError
from robotrl.hardware.obs_checks import check_frame
from robotrl.live_view import open_live_view
from robotrl.workflows.control_loop import Step, run_episode
from robotrl.workflows.deploy_record import RECORD_FORMAT, EpisodeRecord, record_obs, write_recording  # noqa: F401
from robotrl.workflows.deploy_safety import ESTOP_KEY, KeyEStop, wants_estop_key, write_logs  # noqa: F401 (re-exported)
from robotrl.workflows.run_env import (  # noqa: F401 (Operator, ScriptedOperator: re-exported)
    Operator,
    ScriptedOperator,
    load_operator,
    robot_config,
)

log = logging.getLogger(__name__)

# What a deployable policy's actions mean, per training suite: Meta-World's 4-d (dx, dy, dz, gripper) in [-1, 1],
# 0.01 m per unit (SawyerXYZEnv.action_scale). dm-control / gym actions are joint torques of other bodies.
ARM_SUITES = {"metaworld": {"action_dim": 4, "metres_per_unit": 0.01}}
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
    def name(self) -> str:  # (the env spec's attributes robot_config reads)
        return self.env_name

    @property
    def camera(self) -> tuple[str, ...]:
        return self.cameras

    @property
    def uses_pixels(self) -> bool:
        return "pixels" in OBS_TYPES[self.obs_type]

    @property
    def uses_proprio(self) -> bool:
        return self.obs_type in PROPRIO_OBS_TYPES


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


# ------------------------------------------------------------------------------------------------ the loop
Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class DeployResult:
    """Filled in as the loop runs, so that what happened before an exception is still logged."""

    episodes: int = 0  # episodes started
    sends: int = 0  # commands the safety layer passed to the driver
    interventions: int = 0  # agent steps driven by the operator
    periods_ms: list[float] = field(default_factory=list)  # a dry run's scheduled time between would-be commands
    events: list[dict[str, Any]] = field(default_factory=list)  # operator take-over / hand-back
    log: list[dict[str, Any]] = field(default_factory=list)  # one row per agent step
    records: list[EpisodeRecord] = field(default_factory=list)  # one per episode, when recording


def arm_env(robot: Any, spec: PolicySpec, steps: int, dry_run: bool = False, operator: Operator | None = None,
            live: Any = None) -> Any:
    """The shared loop's RobotEnv for ``spec``'s policy on a SafetyLayer ``robot``: its cameras (when the robot has
    them: a proprio policy's recording stores their frames), image size, frame stack, action repeat and scale."""
    from robotrl.hardware.robot_env import RobotEnv

    cameras = spec.cameras if all(c in robot.camera_names for c in spec.cameras) else ()
    return RobotEnv(robot, obs_type=spec.obs_type, image_size=spec.image_size, frame_stack=spec.frame_stack,
                    action_repeat=spec.action_repeat, max_agent_steps=steps, metres_per_unit=spec.metres_per_unit,
                    info={"name": spec.env_name, "task": spec.task}, operator=operator, live=live, cameras=cameras,
                    dry_run=dry_run)


def run_deploy(robot: Any, spec: PolicySpec, policy: Policy, episodes: int, steps: int, hz: float | None = None,
               dry_run: bool = False, operator: Operator | None = None, on_reset: Callable[[], None] | None = None,
               record: bool = False, result: DeployResult | None = None, live: Any = None) -> DeployResult:
    """Run ``episodes`` episodes of ``steps`` agent steps on a connected SafetyLayer ``robot`` through the shared
    loop (:func:`arm_env`, :func:`~robotrl.workflows.control_loop.run_episode`) at the robot's
    ``limits.control_hz`` (``hz``, if given, must be it).

    With ``record`` each episode is kept as an :class:`EpisodeRecord` (``result.records``, the one in progress
    included). ``live`` (a :class:`robotrl.live_view.ArmLog`) gets each step's frames, policy and executed
    actions and safety events. A safety stop ends the run with its error; exceptions propagate: the caller's
    ``with robot`` block then holds and disconnects.
    """
    if hz is not None and float(hz) != float(robot.limits.control_hz):
        raise ConfigError(f"hz={hz} but the robot's limits.control_hz is {robot.limits.control_hz}: the loop runs at "
                          f"the rate the safety layer checks (build the robot with robot_config(..., hz))")
    result = DeployResult() if result is None else result
    check_frames(spec, robot.get_observation(), robot.inner.name)  # before RobotEnv's own frame check: a hint
    env = arm_env(robot, spec, steps, dry_run, operator, live)
    try:
        for episode in range(episodes):
            result.episodes += 1
            obs, _ = env.reset()
            if on_reset is not None:
                on_reset()
            rec = EpisodeRecord() if record else None
            if rec is not None:
                result.records.append(rec)
                record_obs(rec, env)
            _deploy_episode(env, policy, episode, result, rec, obs)
            if env.stop_error is not None:  # the safety layer stopped the arm: the run ends with its error
                raise env.stop_error
    finally:
        env.live = None  # the caller's (deploy closes it)
        env.stop_worker()
    return result


def _deploy_episode(env: Any, policy: Policy, episode: int, result: DeployResult, rec: EpisodeRecord | None,
                    obs: dict[str, np.ndarray]) -> None:
    """One episode of the shared loop, logged as deploy's rows and operator events (and recorded with ``rec``)."""
    state = {"taken_over": False, "t0": 0.0, "action": None, "last_send": None}

    def source(step: int, obs: dict[str, np.ndarray]) -> np.ndarray:
        state["t0"] = time.monotonic()
        state["action"] = np.asarray(policy(obs), dtype=np.float32)
        return np.clip(state["action"], -1.0, 1.0)  # the policy's range (RobotEnv refuses others)

    def on_step(step: Step) -> None:
        human = bool(step.info.get("intervention"))
        if human != state["taken_over"]:
            state["taken_over"] = human
            kind = "take_over" if human else "hand_back"
            result.events.append({"kind": kind, "episode": episode, "step": step.index, "t": state["t0"]})
            log.info("operator %s at episode %d step %d", kind, episode, step.index)
        command = step.info["executed_action"] if human else step.action
        sent = step.info["sent_actions"]
        result.interventions += int(human)
        result.sends += len(sent)
        for t in env.send_times if env.dry_run else ():
            if state["last_send"] is not None:
                result.periods_ms.append((t - state["last_send"]) * 1000)
            state["last_send"] = t
        result.log.append({"episode": episode, "step": step.index, "policy_action": state["action"].tolist(),
                           "sent_action": None if env.dry_run else [u.tolist() for u in sent],
                           "intervention": human, "step_ms": round((time.monotonic() - state["t0"]) * 1000, 3)})
        log.info("episode %d step %d action %s%s%s", episode, step.index, np.round(command, 4).tolist(),
                 " (operator)" if human else "", " (dry run: not sent)" if env.dry_run else "")
        if rec is not None and not step.info.get("stale_observation") and (env.dry_run or sent):
            record_obs(rec, env)
            # Recorded in [-1, 1] as the demo format requires; the clip only matters for a human's raw input.
            # (the mean over the action repeat: the step's net displacement per send, what the arm executed)
            rec.action.append(np.clip(command if env.dry_run else step.info["sent_action"], -1.0, 1.0))
            rec.intervention.append(human)

    steps = run_episode(env, source, on_step, obs)
    if state["taken_over"]:
        result.events.append({"kind": "hand_back", "episode": episode, "step": steps, "t": time.monotonic()})


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
    if record:
        prepare_new_demo_dir(Path(record), "record")  # before the arm moves
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
    writable_dir(out_dir, "out")  # before the arm connects: logs that cannot be written are refused, not lost
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
    from robotrl.workflows.policy import load_policy

    policy = load_policy(checkpoint, device)
    return policy.cfg, policy.action_dim, policy, policy.reset, policy.checkpoint, []


def _remote_policy(server: str, token: str | None, timeout_s: float) -> tuple[Any, int, Policy, Any, Path,
                                                                              list[dict[str, Any]]]:

    from robotrl.workflows.policy_server import AsyncPolicyClient, PolicyClient

    client = AsyncPolicyClient(PolicyClient(server, token or os.environ.get("ROBOTRL_POLICY_TOKEN", ""),
                                            timeout_s=timeout_s))
    remote = client.client.spec()
    cfg = OmegaConf.create({"env": remote["env"], "agent": {"name": remote["agent"]}})
    return cfg, int(remote["action_dim"]), client, client.reset, Path(remote["checkpoint"]), client.events


DEPLOY_DEFAULTS: dict[str, Any] = {"checkpoint": None, "robot": "sim", "hz": None, "episodes": 1, "steps": None,
                                   "dry_run": False, "record": None, "out": None, "operator": None, "device": "cpu",
                                   "server": None, "token": None, "policy_timeout_s": 2.0, "estop_key": "auto",
                                   "live_view": None}


# ------------------------------------------------------------------------------------------------ the command
# one block appended to the module (it merges cleanly with edits of the body), hence the late import
from robotrl.commands import Args, Command, options  # noqa: E402

DEPLOY_DOCS = {
    "checkpoint": "run dir, its checkpoints/ dir, or one checkpoint",
    "robot": "sim | mock | so101 | ... (configs/robot/NAME.yaml; sim: the Meta-World Sawyer rendering the training "
             "camera)",
    "hz": "control rate of the commands (null: the robot's limits.control_hz)",
    "episodes": "episodes, each starting from the robot's home pose",
    "steps": "agent steps per episode (null: the training episode length)",
    "dry_run": "compute and log actions, send nothing",
    "record": "DIR: record the episodes in the robotrl demo format (+ per-step `intervention` flag)",
    "out": "DIR where steps.jsonl, events.jsonl and summary.json go (default <run>/deploy/<robot>-<time>)",
    "operator": "MOD:FN human-intervention hook: FN() returns a callable (step, obs) -> action or None",
    "device": "torch device for the policy",
    "server": "HOST:PORT, instead of checkpoint=: a remote policy (`robotrl serve`)",
    "token": "with server=: the server's shared secret (default $ROBOTRL_POLICY_TOKEN)",
    "policy_timeout_s": "with server=: how long to wait for (or retry) the server before stopping; meanwhile no "
                        "command reaches the arm and the watchdog holds it",
    "estop_key": "auto | true | false (auto: on when stdin is a terminal): typing e + Enter is a software e-stop; "
                 "the arm holds, the run ends with an error, and it does not re-arm (a new run does)",
    "live_view": "FILE or HOST:PORT: show the run in rerun (pip install 'robotrl[live]'): camera frames, policy vs "
                 "executed actions, safety events; FILE.rrd is written (open it with `rerun FILE.rrd`), HOST:PORT "
                 "streams to a viewer",
}


def run_deploy_command(args: Args) -> int:
    """``robotrl deploy``: the summary as JSON; Ctrl-C: one line, exit code 130."""
    try:
        print(json.dumps(deploy(**args.opts, robot_overrides=args.group("robot")), indent=1))
    except KeyboardInterrupt as exc:  # the arm was stopped and disconnected first; the line says so (or what failed)
        print(f"robotrl: {exc or 'deploy interrupted (Ctrl-C)'}", file=sys.stderr)
        return 130
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
DEPLOY_RANGES = {"episodes": "positive_int", "policy_timeout_s": "positive"}


COMMAND = Command(
    name="deploy", summary="run a policy on a robot through the safety layer",
    usage="robotrl deploy checkpoint=PATH robot=NAME [key=value ...] [robot.KEY=VALUE ...]",
    about="Run a trained policy on a robot (configs/robot/NAME.yaml) behind the safety layer, at a fixed control "
          "rate, with\nthe observation pipeline of its training run (camera, image size, frame stack, action repeat, "
          "action scale).",
    run=run_deploy_command, options=options(DEPLOY_DEFAULTS, DEPLOY_DOCS, DEPLOY_RANGES), prefixes=("robot.",),
    examples=("robotrl deploy checkpoint=runs/metaworld/reach/drqv2/seed1 robot=sim episodes=2",
              "robotrl deploy server=127.0.0.1:50051 token=secret robot=franka robot.hostname=172.16.0.2 dry_run=true"),
    footer="robot.KEY=VALUE overrides the robot config, e.g. robot.cameras=[corner2] robot.limits.on_limit=reject.\n"
           "Ctrl-C (homing included) stops and holds the arm, disconnects it, and exits 130 with one line.")
