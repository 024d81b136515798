"""Issue 23 items 3 and 4 on franky-sim (the real franky client against a MuJoCo FR3 that enforces no limits of its
own): joint deltas cannot lift the hand out of the box, and a send-only end-effector loop holds at a joint limit.
Real time at 20 Hz; bounds are on positions, not timing. (Item 5, the measured hand at a wall, is held on the sim
arm in tests/test_safety_limits.py: on franky-sim an end-effector stream pushed at the ceiling hit franky's
intermittent planner failure, Ruckig -111, in most runs.)"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
from robotrl.hardware.kinematics import franka_fk
from robotrl.hardware.robot import Action, DriverError, RobotState, RobotStateError

from tests.franky_helpers import FrankySim

pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if importlib.util.find_spec("franky_sim") is None:
    pytest.skip("the robot=franka tests need franky-sim (in the dev extra)", allow_module_level=True)

from tests.test_franka import HZ, connect  # noqa: E402  (after the skips: it imports franky)

BOX_TOP = 0.7  # tests/test_franka.py's franka_cfg box: [0.3, -0.3, 0.2] .. [0.7, 0.3, 0.7]
# Accelerations franky's motion generator can follow at the tests' relative_dynamics_factor 0.3 (FR3: 0.3 x 10 rad/s^2
# and 0.3 x 9 m/s^2): targets faster than that outrun the arm, which then overshoots them.
FOLLOWABLE = {"joint_max_acceleration": 3.0, "ee_max_acceleration": 2.0}


def planner_flake(exc: DriverError, highest: float) -> None:
    """franky's motion planner on franky-sim intermittently fails while a stream decelerates (Ruckig error -111 on
    about one run in four here): not what these tests check. The hand measured until then must be below the
    ceiling all the same; then the test is an expected failure instead of a pass."""
    assert highest <= BOX_TOP, highest
    if "Motion planner failed" in str(exc):
        pytest.xfail(f"franky-sim planner failure, not a limit: {exc}")
    raise exc


def hand_z(safe) -> float:
    """The hand's height from franky-sim's measured joints (Franka's DH model, as libfranka computes O_T_EE;
    franky-sim's own O_T_EE leads its joints by 2-4 cm while moving, so it is not used)."""
    return float(franka_fk(safe.get_state().joint_pos)[2])


@pytest.fixture(scope="module")
def sim():
    with FrankySim() as server:
        yield server


def test_fk_model_matches_franky_sims_pose_at_rest(sim):
    safe, _ = connect(sim.host)
    try:
        safe.reset_to_home()
        time.sleep(0.5)
        state = safe.get_state()
        np.testing.assert_allclose(franka_fk(state.joint_pos), state.ee_pos, atol=1e-3)
    finally:
        safe.disconnect()


def test_joint4_deltas_stop_at_the_ceiling_on_franky_sim(sim):
    """Issue 23 item 3 as found: fr3_joint4 deltas lifted the hand 0.342 m through the ceiling, no event. Now every
    joint target franky receives has its hand (and its braking stop point) below the ceiling less the margin. The
    measured hand may still pass the ceiling on franky-sim, whose joints overshoot a stopped joint-mode target by
    ~2-3 cm (more than the default v^2 / 2a margin): then the layer holds the arm (workspace_measured), logged."""
    safe, log = connect(sim.host, watchdog_ms=2000, **FOLLOWABLE)
    safe.reset_to_home()  # (the module's server keeps the pose the previous test left)
    highest = 0.0
    try:
        for k in range(90):
            safe.send_action(Action.joints([0, 0, 0, 0.03 if k < 70 else 0.0, 0, 0, 0], gripper=0.5))
            highest = max(highest, hand_z(safe))
            time.sleep(1 / HZ)
    except RobotStateError:
        assert safe.hold_reason.startswith("workspace_measured: end effector z"), safe.hold_reason
    except DriverError as exc:
        planner_flake(exc, highest)
    finally:
        safe.disconnect()
    print(f"highest measured hand z {highest:.4f} m, ceiling {BOX_TOP} m, hold: {safe.hold_reason}")
    targets = [t for kind, t in log if kind == "joint"]
    assert max(franka_fk(q)[2] for q in targets) <= BOX_TOP - safe.limits.workspace_margin_m + 1e-9
    assert BOX_TOP - 0.03 < highest < BOX_TOP + 0.01, highest  # up to the ceiling; held if it went past
    assert any(e["kind"] == "workspace" and e["axis"] == "z" for e in safe.events)


@pytest.mark.parametrize("period_s", [1 / HZ, 0.095])
def test_send_only_ee_loop_holds_at_fr3_joint4s_limit(sim, period_s):
    """Issue 23 item 4 as found: a loop that only sends end-effector deltas took fr3_joint4 past its limit. Here the
    limit is set 0.15 rad above the start and the hand is pushed up and forward (which straightens the elbow: near
    that singularity fr3_joint4 reached 1.8 rad/s for a 0.28 m/s hand). Holding only once the measured joint was past
    its limit let franky's Cartesian stop carry it on to 0.2 rad past it; the arm must stop inside its limit. At
    0.095 s per period (the slowest loop that is not an overrun at 20 Hz; CI once failed the nominal rate on a loaded
    machine) the measured braking curve alone held too late: the arm stopped 0.06 rad past the limit. Now the hand's
    steps are also shortened where the joints at their target would pass the limit, so the arm either holds on its
    braking curve (it is still moving) or rests at the limit less IK_JOINT_MARGIN_RAD."""
    limit = -1.42
    safe, log = connect(sim.host, watchdog_ms=2000, joint_upper=[2.6, 1.6, 2.8, limit, 2.7, 4.4, 2.9], **FOLLOWABLE)
    safe.reset_to_home()
    held_at = None
    try:
        try:
            for _ in range(120):
                start = time.monotonic()
                safe.send_action(Action.ee([0.01, 0.0, 0.01], gripper=0.5))
                time.sleep(max(0.0, period_s - (time.monotonic() - start)))
        except RobotStateError:
            assert safe.state is RobotState.HOLD and safe.events[-1]["kind"] == "joint_limit_braking", safe.hold_reason
            assert safe.events[-1]["joint"] == "fr3_joint4"
            held_at = safe.events[-1]["value"]
        else:  # never held: every step from the first one shortened at the limit was cut to nothing
            assert any(e["kind"] == "joint_limit" and e["axis"] == "fr3_joint4" for e in safe.events)
        n = len(log)
        after = []
        for _ in range(5):  # the stop is over when the hold returns; the joint stays where it stopped
            after.append(safe.get_state().joint_pos[3])
            time.sleep(0.25)
    finally:
        safe.disconnect()
    held = "not held" if held_at is None else f"held at {held_at - limit:+.4f} rad from its limit"
    print(f"fr3_joint4 {held}, then at {max(after) - limit:+.4f}")
    assert held_at is None or held_at < limit  # held before the joint reached its limit, on its braking curve
    assert max(after) <= limit, after  # and the arm stopped inside it
    # the arm stays there: franky-sim's joints lag its Cartesian stop, so they may still close up to ~0.02 rad in the
    # first 0.25 s after the hold returned (seen at 0.095 s per period), then they rest
    assert max(after[2:]) - min(after[2:]) < 0.002, after
    if held_at is not None:
        assert [kind for kind, _ in log[n:] if kind in ("joint", "ee")] == []  # nothing sent after the hold


def test_a_slow_ee_loop_rests_inside_fr3_joint4s_limit(sim):
    """Gap 24: at 0.3 s per command franky-sim's arm reaches each hand target and rests, so the measured braking
    curve sees no velocity, and one 1 cm step moved fr3_joint4 0.075 rad, from inside its limit to 0.06 rad past it
    (the overrun check held only after five such steps; it is turned off here). The steps must be shortened so that
    the arm rests inside the limit, accepting commands (a clip, not a hold), the shortening logged on fr3_joint4."""
    limit = -1.42
    safe, log = connect(sim.host, watchdog_ms=2000, max_consecutive_overruns=1000,
                        joint_upper=[2.6, 1.6, 2.8, limit, 2.7, 4.4, 2.9], **FOLLOWABLE)
    safe.reset_to_home()
    joint4 = []
    try:
        for _ in range(12):
            start = time.monotonic()
            safe.send_action(Action.ee([0.01, 0.0, 0.01], gripper=0.5))
            time.sleep(max(0.0, 0.3 - (time.monotonic() - start)))
            joint4.append(safe.get_state().joint_pos[3])
        assert safe.state is RobotState.MOVING, safe.hold_reason
    finally:
        safe.disconnect()
    print("fr3_joint4 from its limit:", np.round(np.array(joint4) - limit, 4).tolist())
    assert max(joint4) <= limit and joint4[-1] > limit - 0.02, joint4  # up to the limit less the 0.01 margin
    assert any(e["kind"] == "joint_limit" and e["axis"] == "fr3_joint4" for e in safe.events)
