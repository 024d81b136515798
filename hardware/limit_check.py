"""The safety layer's per-command limits and measured-state checks (kept out of ``safety.py``, which calls them).

**Commands** (:class:`MotionLimiter`), per joint or axis, in order; each stage is reported separately:

1. step and velocity: ``|delta| <= tau * min(v_max, max_step * control_hz)``, where ``tau = min(dt, 1 / control_hz)``
   and ``dt`` is the time since the previous command *reached the driver* (its arrival on the driver thread, which
   :meth:`MotionLimiter.arrived` records), not since it was requested: hand-off jitter can only lengthen ``dt``
   as the driver sees it, and ``resume()`` keeps this history. A position-controlled arm reaches a target in about
   one period whatever the gap, so a long gap does not allow a longer step.
2. acceleration: the commanded velocity ``delta / tau`` changes by at most ``a_max * tau`` from the previous
   command's (zero after the targets were re-read: hold, resume, homing, a mode switch).
3. position: joint limits (joint mode) or the workspace box (end-effector mode) shrunk by ``workspace_margin_m``,
   approached on a braking curve: the target's velocity towards a limit is at most what ``a_max`` can stop before
   it (``v * tau + v^2 / 2a <= distance``), so the commanded target never has to stop abruptly at a wall.
4. joint mode with forward kinematics (``hardware/kinematics.py``): the end-effector position of the joint target,
   and of the point where the joints would stop braking at ``a_max`` from the target's velocity, must lie in the
   same shrunk box; the joint delta is scaled down until they do (bisection).
5. end-effector mode with a pose model (``hardware/kinematics.py``): the joints where the arm would rest at the
   hand's target (inverse kinematics from the measured joints) must be ``IK_JOINT_MARGIN_RAD`` inside their limits;
   the hand's delta is scaled down until they are (bisection).

A target already outside a limit (synced from a measured pose) may stay or move back, never further out.
Position limits win over acceleration where both cannot hold.

**Measurements** (:func:`measured_violation`): a joint outside its limits or non-finite, the measured end effector
outside the (unshrunk) box on an axis where the commanded target is inside it (an overshoot), or a reading older
than ``max_state_age_ms``: each holds the arm (``safety.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from robotrl.hardware.kinematics import Kinematics, Pose, joints_at_hand_target
from robotrl.hardware.limits import SafetyLimits
from robotrl.hardware.robot import Action, ActionMode, JointState, monotonic

from robotrl.safety_events import E

AXES = ("x", "y", "z")
BISECTION_STEPS = 20  # the joint-mode box scale is found to 2^-20 of the requested delta
IK_BISECTION_STEPS = 10  # an end-effector step's joint-limit scale, to 2^-10 (each try solves the arm's IK: 3.8 ms
# a command at a limit, 0.2-0.5 ms in free motion; bench/ee_joint_limits.py)
IK_TOLERANCE = 1e-4  # a hand target the joints cannot reach within this (m and rad) counts as past a limit
# an end-effector target's joints stay this far inside their limits: an arm resting right at a limit would hold on
# the measured braking check at its first tremor (franky-sim: 0.00025 rad/s at rest)
IK_JOINT_MARGIN_RAD = 0.01


@dataclass(frozen=True)
class Stage:
    """One limit stage of a command: what came in and what it allowed (``_report`` logs or rejects the change)."""

    kind: E
    names: tuple[str, ...]
    requested: np.ndarray
    applied: np.ndarray
    what: str

    def __iter__(self) -> Any:  # unpacks as SafetyLayer._report's arguments
        return iter((self.kind, self.names, self.requested, self.applied, self.what))


@dataclass
class Plan:
    delta: np.ndarray
    tau: float
    stages: list[Stage] = field(default_factory=list)


def braking_speed(distance: np.ndarray, accel: np.ndarray, tau: float) -> np.ndarray:
    """The largest velocity v >= 0 with ``v * tau + v^2 / (2 a) <= distance`` (0 at or past the limit)."""
    d = np.maximum(distance, 0.0)
    with np.errstate(invalid="ignore"):
        v = -accel * tau + np.sqrt((accel * tau) ** 2 + 2 * accel * d)
    return np.where(np.isfinite(accel), v, d / tau)  # unlimited acceleration: just do not pass the limit


class MotionLimiter:
    """Command limits with the history they need (arrival time, last commanded velocity per mode)."""

    def __init__(self, limits: SafetyLimits, joint_names: tuple[str, ...], fk: Kinematics | None,
                 pose: Pose | None = None) -> None:
        self.limits, self.joint_names, self.fk, self.pose = limits, joint_names, fk, pose
        self.period = 1.0 / limits.control_hz
        self.last_arrival: float | None = None
        self._velocity: dict[ActionMode, np.ndarray] = {}
        self._target: dict[ActionMode, np.ndarray] = {}
        self._planned_from = np.zeros(0)
        n = len(joint_names)
        lim = limits
        j_acc = np.full(n, np.inf) if lim.joint_max_acceleration is None else np.asarray(lim.joint_max_acceleration)
        self._joint = (lim.joint_lower, lim.joint_upper, np.minimum(lim.joint_max_velocity,
                       lim.joint_max_step / self.period), j_acc)
        m = lim.workspace_margin_m
        self.box = (lim.workspace_lower + m, lim.workspace_upper - m)
        self._ee = (*self.box, np.full(3, min(lim.ee_max_velocity, lim.ee_max_step / self.period)),
                    np.full(3, lim.ee_max_acceleration))

    def arrived(self, t: float) -> None:
        """A command reached the driver at ``t`` (called on the driver thread, just before the driver's send)."""
        self.last_arrival = t

    def commit(self, mode: ActionMode, delta: np.ndarray, tau: float) -> None:
        """Remember what was sent (from the target the last plan started at): the next command's acceleration is
        measured against this velocity, and its target against this one."""
        self._velocity = {mode: np.asarray(delta, np.float64) / tau}
        self._target = {mode: self._planned_from + delta}

    def _previous_velocity(self, mode: ActionMode, current: np.ndarray, resynced: bool) -> np.ndarray:
        """The last command's velocity; zero after the targets were re-read (the arm was held or homed). Not reset
        after a mere gap: on time or late (tau = one period either way), the same commands are limited the same way,
        so a seeded episode replays exactly; a gap past ``watchdog_ms`` holds the arm, which re-reads the targets."""
        last = self._target.get(mode)
        moved = last is None or last.shape != current.shape or not np.allclose(last, current, rtol=0, atol=1e-12)
        return np.zeros_like(current) if resynced or moved else self._velocity[mode]

    def plan(self, mode: ActionMode, current: np.ndarray, requested: np.ndarray, now: float,
             resynced: bool, measured_q: np.ndarray | None = None) -> Plan:
        """The limited delta for a command requested at ``now`` from the commanded target ``current``
        (``measured_q``: the joints just read, for an end-effector step's joint limits)."""
        self._planned_from = np.array(current, np.float64)
        dt = self.period if self.last_arrival is None else max(now - self.last_arrival, 0.0)
        tau = max(min(dt, self.period), 1e-9)
        joint = mode is ActionMode.JOINT_DELTA
        lower, upper, vcap, accel = self._joint if joint else self._ee
        names = self.joint_names if joint else AXES
        kinds = (E.JOINT_STEP, E.JOINT_ACCEL, E.JOINT_LIMIT) if joint else (E.EE_STEP, E.EE_ACCEL, E.WORKSPACE)
        plan = Plan(np.clip(requested, -vcap * tau, vcap * tau), tau)
        plan.stages.append(Stage(kinds[0], names, requested, plan.delta, "delta"))
        v_prev = self._previous_velocity(mode, current, resynced)
        accelerated = np.clip(plan.delta, (v_prev - accel * tau) * tau, (v_prev + accel * tau) * tau)
        plan.stages.append(Stage(kinds[1], names, plan.delta, accelerated, "delta"))
        hi = np.where(current > upper, 0.0, braking_speed(upper - current, accel, tau) * tau)
        lo = np.where(current < lower, 0.0, -braking_speed(current - lower, accel, tau) * tau)
        plan.delta = np.clip(accelerated, lo, hi)
        plan.stages.append(Stage(kinds[2], names, current + accelerated, current + plan.delta, "target"))
        if joint and self.fk is not None:
            self._box_by_fk(plan, current, accel)
        if not joint and self.pose is not None and measured_q is not None and np.all(np.isfinite(measured_q)):
            self._joints_by_ik(plan, current, np.asarray(measured_q, np.float64))
        return plan

    def _joints_by_ik(self, plan: Plan, current: np.ndarray, measured_q: np.ndarray) -> None:
        """Scale the hand's delta down until the joints where the arm comes to rest at the new target (its inverse
        kinematics from the measured joints) are ``IK_JOINT_MARGIN_RAD`` inside their limits; a joint already
        outside them at the current target may not move further out. In end-effector mode the joints are not
        commanded: near a singularity a 1 cm hand step moves the elbow by a tenth of a radian, and an arm that reaches
        each target between slow commands shows no velocity that would warn the measured checks."""
        lower, upper = self.limits.joint_lower + IK_JOINT_MARGIN_RAD, self.limits.joint_upper - IK_JOINT_MARGIN_RAD

        def outside(target: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
            q, error = joints_at_hand_target(self.pose, measured_q, target)
            return np.maximum(np.maximum(lower - q, q - upper), 0.0), q, error

        wanted_out, wanted_q, wanted_error = outside(current + plan.delta)
        if wanted_error <= IK_TOLERANCE and not np.any(wanted_out):
            return
        already, _, _ = outside(current)

        def inside(scale: float) -> bool:
            out, _, error = outside(current + scale * plan.delta)
            return error <= IK_TOLERANCE and bool(np.all(out <= already + 1e-9))

        if wanted_error <= IK_TOLERANCE and np.all(wanted_out <= already + 1e-9):
            return  # moving back towards the limits, or no further out
        ok, bad = 0.0, 1.0
        for _ in range(IK_BISECTION_STEPS):
            mid = (ok + bad) / 2
            ok, bad = (mid, bad) if inside(mid) else (ok, mid)
        wanted = current + plan.delta
        plan.delta = plan.delta * ok
        if np.any(wanted_out > already + 1e-9):
            plan.stages.append(Stage(E.JOINT_LIMIT, self.joint_names, wanted_q,
                                     np.clip(wanted_q, lower - already, upper + already), "joint target of the hand"))
        else:  # the joints could not reach the hand's target (a singularity, out of reach)
            plan.stages.append(Stage(E.JOINT_LIMIT, AXES, wanted, current + plan.delta, "unreachable hand target"))

    def _box_by_fk(self, plan: Plan, current: np.ndarray, accel: np.ndarray) -> None:
        """Scale the joint delta down until the end effector of the target, and of where the joints would stop
        braking at ``accel`` from the target's velocity, is in the shrunk box (on an axis where the current target's
        end effector is already outside, it may not move further out)."""
        here = self.fk(current)
        lo, hi = np.minimum(self.box[0], here), np.maximum(self.box[1], here)
        finite = np.isfinite(accel)

        def inside(scale: float) -> bool:
            target = current + scale * plan.delta
            v = scale * plan.delta / plan.tau
            stop = target + np.where(finite, v * np.abs(v) / (2 * np.where(finite, accel, 1.0)), 0.0)
            ee, ee_stop = self.fk(target), self.fk(stop)
            return bool(np.all((ee >= lo) & (ee <= hi) & (ee_stop >= lo) & (ee_stop <= hi)))

        wanted = self.fk(current + plan.delta)
        if inside(1.0):
            return
        ok, bad = 0.0, 1.0
        for _ in range(BISECTION_STEPS):
            mid = (ok + bad) / 2
            ok, bad = (mid, bad) if inside(mid) else (ok, mid)
        plan.delta = plan.delta * ok
        plan.stages.append(Stage(E.WORKSPACE, AXES, wanted, np.clip(wanted, lo, hi), "end-effector target"))


def bad_action(action: Action, modes: tuple[ActionMode, ...], joint_names: tuple[str, ...],
               driver: str) -> tuple[str, str, dict[str, Any]] | None:
    """Why ``action`` cannot be limited at all, as ``(kind, message, extra)``: an unsupported mode, a wrong shape, or
    a non-finite value (no meaningful clipped value exists for NaN/inf; the layer rejects and holds)."""
    if action.mode not in modes:
        return E.BAD_ACTION, (f"{action.mode.value} actions are not supported by {driver}, expected one of "
                              f"{[m.value for m in modes]}"), {}
    names = joint_names if action.mode is ActionMode.JOINT_DELTA else AXES
    delta = np.asarray(action.delta)
    if delta.shape != (len(names),):
        return E.BAD_ACTION, (f"{action.mode.value} delta has shape {delta.shape}, expected ({len(names)},) for "
                              f"{list(names)}"), {}
    values = np.append(delta.astype(np.float64), float(action.gripper))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        axes = [(names + ("gripper",))[i] for i in bad]
        return E.NONFINITE, f"non-finite action on {axes}: {values[bad].tolist()}", {"axes": axes}
    return None


def measured_violation(state: JointState, limits: SafetyLimits, commanded_ee: np.ndarray | None,
                       joint_names: tuple[str, ...], fk: Kinematics | None, ee_mode: bool = False,
                       joint_acc: np.ndarray | None = None) -> tuple[str, str, dict[str, Any]] | None:
    """Why a measured state must hold the arm, as ``(kind, detail, extra)``, or None. ``commanded_ee``: the
    end-effector position of the current commanded target (None when unknown: the box is then not watched). With a
    kinematic model the measured hand is the forward kinematics of the measured joints (as libfranka computes
    ``O_T_EE``; franky-sim reports an ``O_T_EE`` that leads its joints by 2-4 cm while moving), else the driver's.

    In end-effector mode (``ee_mode``) the joints are not commanded, so nothing keeps them on a braking curve: on an
    arm with a kinematic model (its measured joints are the arm's own) a joint that would pass its limit before it
    can stop holds the arm: one control period at its measured velocity, sped up by its measured acceleration
    (``joint_acc``, from the last readings; near a singularity joints accelerate under a steady hand), then braking at
    ``joint_max_acceleration``. There a joint moves fast for a slow hand (fr3_joint4 at 1.8 rad/s for 0.28 m/s on
    franky-sim), and a hold once it was past its limit let the Cartesian stop carry it 0.2 rad further. (Where the
    arm comes to rest at each hand target is limited before the send: ``MotionLimiter._joints_by_ik``.)"""
    age_ms = (monotonic() - state.timestamp) * 1e3
    if not age_ms <= limits.max_state_age_ms:  # (NaN timestamps included)
        return E.STALE_STATE, (f"robot state reading is {age_ms:.0f} ms old (max_state_age_ms="
                                f"{limits.max_state_age_ms:g})"), {"age_ms": round(age_ms, 1)}
    q = np.asarray(state.joint_pos)
    bad = np.flatnonzero(~np.isfinite(q) | (q < limits.joint_lower) | (q > limits.joint_upper))
    if bad.size:
        i = int(bad[0])
        return E.JOINT_LIMIT_MEASURED, f"{joint_names[i]} at {q[i]:.4f} rad", {"joint": joint_names[i],
                                                                                "value": float(q[i])}
    if ee_mode and fk is not None and limits.joint_max_acceleration is not None:
        dq = np.asarray(state.joint_vel, np.float64)
        found = _joint_cannot_stop(q, dq, np.zeros_like(dq) if joint_acc is None else joint_acc, limits, joint_names)
        if found is not None:
            return found
    measured = state.ee_pos if fk is None else fk(q)
    if measured is None or commanded_ee is None:
        return None
    ee, lo, hi = np.asarray(measured, np.float64), limits.workspace_lower, limits.workspace_upper
    target_in = (commanded_ee >= lo) & (commanded_ee <= hi)
    out = np.flatnonzero(target_in & ((ee < lo) | (ee > hi) | ~np.isfinite(ee)))
    if out.size:
        i = int(out[0])
        past = float(max(lo[i] - ee[i], ee[i] - hi[i]))
        return E.WORKSPACE_MEASURED, (f"end effector {AXES[i]} at {ee[i]:.4f} m is {past * 1e3:.1f} mm outside the "
                                      f"box [{lo[i]:g}, {hi[i]:g}]"), {"axis": AXES[i], "value": float(ee[i]),
                                                                        "past_m": past}
    return None


def _joint_cannot_stop(q: np.ndarray, dq: np.ndarray, ddq: np.ndarray, limits: SafetyLimits,
                       joint_names: tuple[str, ...]) -> tuple[str, str, dict[str, Any]] | None:
    """A joint whose stop point (one control period from ``dq``, sped up by ``ddq`` where it speeds the joint up,
    then braking at ``joint_max_acceleration``) is past a limit, as ``(kind, detail, extra)``."""
    period = 1.0 / limits.control_hz
    speeding = np.where(ddq * dq > 0, ddq, 0.0)
    v = dq + speeding * period
    stop = q + dq * period + 0.5 * speeding * period**2 + v * np.abs(v) / (2 * limits.joint_max_acceleration)
    bad = np.flatnonzero(~np.isfinite(stop) | (stop < limits.joint_lower) | (stop > limits.joint_upper))
    if not bad.size:
        return None
    i = int(bad[0])
    limit = limits.joint_upper[i] if dq[i] > 0 else limits.joint_lower[i]
    return E.JOINT_LIMIT_BRAKING, (f"{joint_names[i]} at {q[i]:.4f} rad moving {dq[i]:+.3f} rad/s cannot stop before "
                                   f"its limit {limit:g} (stop point {stop[i]:.4f})"), {
        "joint": joint_names[i], "value": float(q[i]), "velocity": float(dq[i]), "stop_point": float(stop[i])}
