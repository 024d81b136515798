"""Issue 23 items 3-5 on franky-sim (the real franky client against a MuJoCo FR3 that enforces no limits of its own):
joint deltas cannot lift the hand out of the box, a send-only end-effector loop holds at a joint limit, and the
measured hand stays inside the box when pushed at a wall. Real time at 20 Hz; bounds are on positions, not timing."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
from robotrl.hardware.kinematics import franka_fk
from robotrl.hardware.robot import Action, RobotState, RobotStateError

from tests.franky_helpers import FrankySim

pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if importlib.util.find_spec("franky_sim") is None:
    pytest.skip("the robot=franka tests need franky-sim (in the dev extra)", allow_module_level=True)

from tests.test_franka import HZ, connect  # noqa: E402  (after the skips: it imports franky)

BOX_TOP = 0.7  # tests/test_franka.py's franka_cfg box: [0.3, -0.3, 0.2] .. [0.7, 0.3, 0.7]


@pytest.fixture(scope="module")
def sim():
    with FrankySim() as server:
        yield server


def test_fk_model_matches_franky_sims_pose_at_rest(sim):
    safe, _ = connect(sim.host)
    try:
        state = safe.get_state()
        np.testing.assert_allclose(franka_fk(state.joint_pos), state.ee_pos, atol=1e-3)
    finally:
        safe.disconnect()


def test_joint4_deltas_stop_at_the_ceiling_on_franky_sim(sim):
    """Issue 23 item 3 as found: fr3_joint4 deltas lifted the hand 0.342 m through the ceiling, no event."""
    safe, log = connect(sim.host, watchdog_ms=2000)
    highest = 0.0
    try:
        for _ in range(70):
            safe.send_action(Action.joints([0, 0, 0, 0.03, 0, 0, 0], gripper=0.5))
            highest = max(highest, float(safe.get_state().ee_pos[2]))
            time.sleep(1 / HZ)
        for _ in range(20):  # let the arm arrive
            safe.send_action(Action.joints(np.zeros(7), gripper=0.5))
            highest = max(highest, float(safe.get_state().ee_pos[2]))
            time.sleep(1 / HZ)
        assert safe.state is RobotState.MOVING, safe.hold_reason
    finally:
        safe.disconnect()
    targets = [t for kind, t in log if kind == "joint"]
    assert max(franka_fk(q)[2] for q in targets) <= BOX_TOP - safe.limits.workspace_margin_m + 1e-9
    assert BOX_TOP - 0.03 < highest <= BOX_TOP, highest  # it went up to the ceiling, and not through it
    assert any(e["kind"] == "workspace" and e["axis"] == "z" for e in safe.events)


def test_send_only_ee_loop_holds_at_fr3_joint4s_limit(sim):
    """Issue 23 item 4 as found: a loop that only sends end-effector deltas took fr3_joint4 past its limit. Here the
    limit is set 0.15 rad above the start and the hand is pushed up and forward (which straightens the elbow)."""
    safe, log = connect(sim.host, watchdog_ms=2000, joint_upper=[2.6, 1.6, 2.8, -1.42, 2.7, 4.4, 2.9])
    try:
        with pytest.raises(RobotStateError, match="fr3_joint4"):
            for _ in range(200):
                safe.send_action(Action.ee([0.01, 0.0, 0.01], gripper=0.5))
                time.sleep(1 / HZ)
        assert safe.state is RobotState.HOLD and safe.events[-1]["kind"] == "joint_limit_measured"
        time.sleep(0.5)
        q4 = safe.get_state().joint_pos[3]
    finally:
        safe.disconnect()
    print(f"fr3_joint4 stopped {q4 + 1.42:+.4f} rad from its limit")
    assert q4 < -1.42 + 0.03  # held within about one command of the limit


def test_measured_hand_stays_inside_when_pushed_at_the_ceiling(sim):
    """Issue 23 item 5 as found: pushing at a wall left the measured hand up to 1.6 cm past it on franky-sim."""
    safe, _ = connect(sim.host, watchdog_ms=2000)
    highest = 0.0
    try:
        for k in range(90):
            push = 0.01 if k < 70 else 0.0
            safe.send_action(Action.ee([0.0, 0.0, push], gripper=0.5))
            highest = max(highest, float(safe.get_state().ee_pos[2]))
            time.sleep(1 / HZ)
        assert safe.state is RobotState.MOVING, safe.hold_reason
    finally:
        safe.disconnect()
    print(f"highest measured hand z {highest:.4f} m, ceiling {BOX_TOP} m")
    assert BOX_TOP - 0.03 < highest <= BOX_TOP
