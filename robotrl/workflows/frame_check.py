"""``robotrl check-frame``: check a robot's ``frame_map`` on the arm before a policy runs.

Two things are checked, both from measurements through the safety layer:

1. **Home**: the arm's measured home end effector, mapped into the policy frame, lies within ``home_tolerance_m``
   of the training env's home hand (Meta-World's (0, 0.6, 0.2) m by default): the offset is right, and a policy
   starts where it started in training.
2. **Axes**: the hand moves ``distance_m`` along each policy axis, each sign, and back (commanded through the map,
   in steps the safety layer allows, at the control rate); the measured displacement, mapped back into the policy
   frame, must point along the commanded axis (cosine >= ``min_cosine``) with a length within
   ``[1 - length_tolerance, 1 + length_tolerance]`` of the command. A driver that moves in another frame than the
   one it reports positions in (tool frame vs base frame), a scale slip, or an axis the box blocks shows here.

Each move is printed with the arm axis it went along, so a person watching can also confirm that "policy +x" goes
where the training env's +x went (Meta-World: to the robot's right): the map's rotation itself is a statement
about the scene that only a person or a camera can check.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write_text, writable_file
from robotrl.commands import Args, Command, options
from robotrl.errors import ConfigError, RobotRLError

METAWORLD_HOME_HAND_M = (0.0, 0.6, 0.2)  # SawyerXYZEnv.hand_init_pos of most tasks (reach, push, pick-place, ...)
SETTLE_PERIODS = 5  # zero-delta commands after each move at least: asynchronous drivers reach the target, sims step
SETTLE_TIMEOUT_S = 8.0  # ... and until the hand settled (see _send_steps)
SETTLE_M = 5e-4
AXES = ("x", "y", "z")
MAX_DISTANCE_M = 0.1  # a frame check's move along each axis: enough to read a direction, small enough to be safe

FRAME_CHECK_DEFAULTS: dict[str, Any] = {"robot": "sim", "distance_m": 0.03, "policy_home": "0,0.6,0.2",
                                        "home_tolerance_m": 0.05, "min_cosine": 0.95, "length_tolerance": 0.3,
                                        "out": None}
FRAME_CHECK_DOCS = {
    "robot": "robot config (configs/robot/<name>.yaml); robot.KEY=VALUE overrides it (robot.frame_map.axes=...)",
    "distance_m": "how far the hand moves along each policy axis and sign (m)",
    "policy_home": "the training env's home hand position in its own frame, x,y,z (m; Meta-World's by default)",
    "home_tolerance_m": "largest allowed distance between policy_home and the mapped measured home (m)",
    "min_cosine": "smallest allowed cosine between the commanded and the measured direction",
    "length_tolerance": "allowed relative error of the measured move's length",
    "out": "also write the report as JSON to this file",
}


class FrameCheckError(RobotRLError):
    """The arm did not move or sit where the frame map says it does."""


@dataclass(frozen=True)
class AxisMove:
    """One move of the check: policy axis and sign, what was commanded and what was measured (m)."""

    axis: str  # "+x", "-z", ... in the policy frame
    arm_direction: str  # the arm axis the map sends it along, e.g. "-y"
    commanded: list[float]  # policy frame
    measured: list[float]  # policy frame
    measured_arm: list[float]  # arm base frame
    cosine: float
    length_ratio: float
    ok: bool


def _measured_ee(robot: Any) -> np.ndarray:
    state = robot.get_state()
    if state.ee_pos is None:
        raise FrameCheckError(f"robot={robot.inner.name} reports no end-effector position; a frame map applies to "
                              f"end-effector arms only")
    return np.asarray(state.ee_pos, np.float64)


def _send_steps(robot: Any, arm_delta: np.ndarray, steps: int, period: float) -> None:
    """``arm_delta`` in ``steps`` equal commands one control period apart, then zero commands until the hand
    settles: within SETTLE_M of the driver's commanded target where it reports one (franky: its motion generator
    ramps up slowly at a low dynamics factor, and a loaded franky-sim lags), or, after SETTLE_PERIODS, moving less
    than SETTLE_M / 5 per period (a sim's hand never quite reaches its mocap target); at most SETTLE_TIMEOUT_S."""
    from robotrl.hardware.robot import Action

    for _ in range(steps):
        robot.send_action(Action.ee(arm_delta / steps, gripper=0.0))
        time.sleep(period)
    last, deadline = _measured_ee(robot), time.monotonic() + SETTLE_TIMEOUT_S
    for i in range(int(SETTLE_TIMEOUT_S / period)):
        robot.send_action(Action.ee(np.zeros(3), gripper=0.0))
        time.sleep(period)
        state = robot.get_state()
        now = np.asarray(state.ee_pos, np.float64)
        target = state.ee_target
        at_target = target is not None and np.abs(now - np.asarray(target)).max() < SETTLE_M
        still = i >= SETTLE_PERIODS and np.abs(now - last).max() < SETTLE_M / 5  # (a sim's hand lags its mocap)
        settled = at_target or still
        if settled or time.monotonic() > deadline:
            return
        last = now


def _move(robot: Any, frame_map: Any, axis: int, sign: float, opts: dict[str, Any]) -> AxisMove:
    distance = float(opts["distance_m"])
    commanded = np.zeros(3)
    commanded[axis] = sign * distance
    arm_delta = frame_map.delta_to_arm(commanded)
    period = 1.0 / float(robot.limits.control_hz)
    step_cap = robot.limits.ee_step_from_rest()  # so that the layer clips none of them
    steps = max(1, math.ceil(float(np.abs(arm_delta).max()) / (0.9 * step_cap)))
    start = _measured_ee(robot)
    _send_steps(robot, arm_delta, steps, period)
    moved_arm = _measured_ee(robot) - start
    _send_steps(robot, -moved_arm, steps, period)  # back to where it started
    moved = frame_map.delta_to_policy(moved_arm)
    length = float(np.linalg.norm(moved))
    cosine = float(moved @ commanded / (length * distance)) if length > 0 else 0.0
    ratio = length / distance
    ok = cosine >= float(opts["min_cosine"]) and abs(ratio - 1.0) <= float(opts["length_tolerance"])
    direction = frame_map.axes[axis]
    if sign < 0:
        direction = direction[1:] if direction.startswith("-") else "-" + direction
    return AxisMove(("+" if sign > 0 else "-") + AXES[axis], direction, commanded.tolist(), moved.round(5).tolist(),
                    moved_arm.round(5).tolist(), round(cosine, 4), round(ratio, 4), ok)


def parse_policy_home(home: Any) -> np.ndarray:
    """``policy_home`` ("x,y,z" or a sequence) as three finite metres; FrameCheckError naming it otherwise."""
    try:
        value = np.asarray([float(v) for v in home.strip("[]").split(",")] if isinstance(home, str) else home,
                           np.float64)
    except (TypeError, ValueError):
        value = np.full(1, np.nan)
    if value.shape != (3,) or not np.isfinite(value).all():
        raise FrameCheckError(f"policy_home={home!r}, expected three finite numbers (m)")
    return value


def check_frame_map(robot: Any, frame_map: Any, **options: Any) -> dict[str, Any]:
    """Home the connected safety-layer ``robot`` and run the checks of the module doc; returns the report (``ok``
    false when any check failed). Options as FRAME_CHECK_DEFAULTS."""
    opts = {**FRAME_CHECK_DEFAULTS, **options}
    policy_home = parse_policy_home(opts["policy_home"])
    robot.reset_to_home()
    home_arm = _measured_ee(robot)
    home_policy = frame_map.position_to_policy(home_arm)
    home_error = float(np.linalg.norm(home_policy - policy_home))
    moves = [_move(robot, frame_map, axis, sign, opts) for axis in range(3) for sign in (1.0, -1.0)]
    robot.hold()
    home_ok = home_error <= float(opts["home_tolerance_m"])
    return {"ok": home_ok and all(m.ok for m in moves), "frame_map": frame_map.as_config(),
            "home": {"measured_arm": home_arm.round(5).tolist(), "measured_policy": home_policy.round(5).tolist(),
                     "policy_home": policy_home.tolist(), "error_m": round(home_error, 5), "ok": home_ok},
            "moves": [asdict(m) for m in moves]}


def format_report(report: dict[str, Any]) -> str:
    """The report as lines a person reads at the arm."""
    home = report["home"]
    lines = [f"frame map: axes={report['frame_map']['axes']} offset={report['frame_map']['offset']} "
             f"scale={report['frame_map']['scale']}",
             f"home: arm {home['measured_arm']} -> policy {home['measured_policy']} (expected {home['policy_home']}, "
             f"off by {home['error_m'] * 100:.1f} cm) {'ok' if home['ok'] else 'FAILED'}"]
    for m in report["moves"]:
        lines.append(f"policy {m['axis']} -> arm {m['arm_direction']}: moved {m['measured']} (policy frame), "
                     f"cos {m['cosine']:.3f}, length x{m['length_ratio']:.2f} {'ok' if m['ok'] else 'FAILED'}")
    lines.append("frame map ok" if report["ok"] else "frame map FAILED: fix robot.frame_map before running a policy")
    return "\n".join(lines)


def run_frame_check(robot: str = "sim", robot_overrides: dict[str, str] | None = None, **options: Any) -> dict[str,
                                                                                                              Any]:
    """``robotrl check-frame``: build ``robot`` (its config + overrides) behind its safety layer, check its frame map,
    print the report; raises FrameCheckError when a check failed (exit 2)."""
    import json

    from robotrl.hardware import make_robot
    from robotrl.workflows.run_env import load_robot_config

    parse_policy_home(options.get("policy_home", FRAME_CHECK_DEFAULTS["policy_home"]))  # before the arm connects
    if float(options.get("distance_m", FRAME_CHECK_DEFAULTS["distance_m"])) > MAX_DISTANCE_M:
        raise ConfigError(f"distance_m={options['distance_m']!r}, expected at most {MAX_DISTANCE_M} m: the check moves "
                          f"the hand this far along each axis and back")
    if options.get("out"):
        writable_file(options["out"], "out")
    layer = make_robot(load_robot_config(robot, robot_overrides or {}))
    with layer:
        report = check_frame_map(layer, layer.frame_map, **options)
    print(format_report(report))
    if options.get("out"):
        atomic_write_text(options["out"], json.dumps(report, indent=1))
    if not report["ok"]:
        raise FrameCheckError(f"robot={robot}: the frame map does not match the arm (see the lines above)")
    return report


# ------------------------------------------------------------------------------------------------ the command
def run_check_frame(args: Args) -> int:
    """``robotrl check-frame``: ``robot.KEY=VALUE`` arguments override the robot config."""
    run_frame_check(**args.opts, robot_overrides=args.group("robot"))
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
FRAME_CHECK_RANGES = {"distance_m": "positive", "home_tolerance_m": "positive", "min_cosine": "probability",
                      "length_tolerance": "positive"}


COMMAND = Command(
    name="check-frame", summary="check robot.frame_map on the arm (home + a move along each axis)",
    usage="robotrl check-frame robot=NAME [robot.KEY=VALUE ...] [key=value ...]",
    about="Check robot.frame_map (the training env's frame on the arm's) before a policy runs: the\nmeasured home in "
          "the policy frame, and a move along each policy axis read back.",
    run=run_check_frame,
    options=options(FRAME_CHECK_DEFAULTS, FRAME_CHECK_DOCS, FRAME_CHECK_RANGES), prefixes=("robot.",),
    examples=("robotrl check-frame robot=franka robot.hostname=172.16.0.2",
              "robotrl check-frame robot=sim robot.task=push distance_m=0.05"))
