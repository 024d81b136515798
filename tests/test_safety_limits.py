"""Limits hold in every action mode, on what the arm does (issue 23, items 3-8): the workspace box in joint mode by
forward kinematics, joint limits in end-effector mode without the caller reading state, measured overshoot past the
box, acceleration limits, velocity by the time commands reach the driver, stale readings, camera failures and
frames at the robot boundary. Mock-based drivers with a fake clock (exact periods, nothing depends on load), the
sim arm for real dynamics; franky-sim cases are in tests/test_franka_limits.py."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pytest
from robotrl.hardware import make_robot
from robotrl.hardware.franka import FrankaRobot
from robotrl.hardware.kinematics import franka_fk, franka_pose, joints_at_hand_target
from robotrl.hardware.mock import Fr3HandMock, MockRobot
from robotrl.hardware.robot import (
    Action,
    ActionMode,
    JointState,
    RobotState,
    RobotStateError,
    UnsafeActionError,
    monotonic,
)
from robotrl.hardware.safety import SafetyLayer

from robotrl.errors import ConfigError
from tests.test_hardware import FakeClock, kinds, record, robot_cfg, sends, sim_cfg

HZ = 20.0
FR3_START = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])  # franky-sim's initial pose


class Fr3Kinematic(MockRobot):
    """An in-memory FR3: the measured joints are the commanded ones and the measured end effector is their forward
    kinematics (Franka's DH model), so joint commands move the hand as on the arm. It offers ``forward_kinematics``."""

    name = "fr3-kinematic"
    joint_names: ClassVar[tuple[str, ...]] = FrankaRobot.joint_names
    action_modes: ClassVar[tuple[ActionMode, ...]] = (ActionMode.JOINT_DELTA,)
    vendor_limits = FrankaRobot.vendor_limits
    home_joints = FR3_START

    def forward_kinematics(self, q: Any) -> np.ndarray:
        return franka_fk(q)

    def _read_state(self) -> JointState:
        return JointState(self.q.copy(), np.zeros(7), franka_fk(self.q), np.array([1.0, 0, 0, 0]), 0.0, monotonic())


def after_last_send(calls: list[dict[str, Any]]) -> list[str]:
    """The driver calls after the last send (a hold must come first: nothing more was sent)."""
    last = max(i for i, c in enumerate(calls) if c["call"] == "send")
    return [c["call"] for c in calls[last + 1:]]


def fr3_layer(**limits: Any) -> tuple[SafetyLayer, FakeClock]:
    from robotrl.hardware.limits import parse_limits

    cfg = {**robot_cfg("franka")["limits"], "driver_timeout_ms": 30_000, **limits}
    clock = FakeClock()
    return SafetyLayer(Fr3Kinematic(cameras=()), parse_limits(cfg, Fr3Kinematic.vendor_limits), clock=clock), clock


# ------------------------------------------------------------------------------------------ 3: box in joint mode
def test_joint_deltas_cannot_take_the_hand_out_of_the_box():
    """Issue 23 item 3: fr3_joint4 deltas lifted the hand to z 1.09 m under a 0.75 m ceiling. Now every joint target
    the driver receives has its end effector inside the box shrunk by the braking margin, and the clip is logged."""
    layer, clock = fr3_layer()
    calls = record(layer)
    lim = layer.limits
    with layer:
        for _ in range(80):
            clock.advance(1 / HZ)
            layer.send_action(Action.joints([0, 0, 0, 0.03, 0, 0, 0]))
        hand = layer.get_state().ee_pos
    targets = [FR3_START]
    for call in sends(calls):
        targets.append(targets[-1] + call["action"].delta)
    ee = np.array([franka_fk(q) for q in targets])
    top = lim.workspace_upper[2] - getattr(lim, "workspace_margin_m", 0.0)  # (a489bdc has no margin)
    assert ee[:, 2].max() <= top + 1e-9, ee[:, 2].max()
    assert hand[2] > top - 0.01  # it did move up to the (shrunk) ceiling, not stop early
    assert any(e["kind"] == "workspace" and e["axis"] == "z" for e in layer.events)


def test_joint_box_reject_mode_holds():
    layer, clock = fr3_layer(on_limit="reject")
    calls = record(layer)
    with layer, pytest.raises(Exception, match="end-effector target on z"):
        for k in range(80):  # ramped up within the acceleration limit (reject mode refuses more)
            clock.advance(1 / HZ)
            layer.send_action(Action.joints([0, 0, 0, min(0.03, 0.0125 * (k + 1)), 0, 0, 0]))
    assert after_last_send(calls) == ["hold", "hold", "disconnect"]  # the rejection's hold, then the final stop
    assert franka_fk(FR3_START + sum(c["action"].delta for c in sends(calls)))[2] <= layer.limits.workspace_upper[2]


def test_franka_forward_kinematics_matches_the_ready_pose():
    """Franka's DH model with the hand: libfranka's ready pose puts the hand 0.307 m ahead, 0.487 m up (O_T_EE as
    franky reports it; checked against franky-sim in tests/test_franka_limits.py)."""
    np.testing.assert_allclose(franka_fk([0, -np.pi / 4, 0, -3 * np.pi / 4, 0, np.pi / 2, np.pi / 4]),
                               [0.3069, 0.0, 0.4866], atol=5e-4)
    np.testing.assert_allclose(franka_fk(FR3_START), [0.5544, 0.0, 0.5214], atol=5e-4)


def test_joints_at_a_hand_target_put_the_hand_there_at_the_same_orientation():
    """The inverse kinematics behind end-effector steps' joint limits: from 20 random FR3 poses, a hand target
    2-5 cm away is reached to 1e-5 with the orientation unchanged; an unreachable one reports its error."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = FR3_START + rng.normal(0.0, 0.3, 7)
        start = franka_pose(q)
        target = start[:3, 3] + rng.uniform(0.02, 0.05) * (v := rng.normal(size=3)) / np.linalg.norm(v)
        rest, error = joints_at_hand_target(franka_pose, q, target)
        assert error < 1e-5
        np.testing.assert_allclose(franka_pose(rest)[:3, 3], target, atol=1e-5)
        np.testing.assert_allclose(franka_pose(rest)[:3, :3], start[:3, :3], atol=1e-5)
    _, error = joints_at_hand_target(franka_pose, FR3_START, np.array([2.0, 0.0, 0.5]))  # 2 m away: out of reach
    assert error > 1.0


# ------------------------------------------------------------------------------------------ 4: joints in ee mode
class CoupledMock(MockRobot):
    """A mock whose joint3 follows the hand's z (1 rad per m), as an arm's joints follow end-effector commands."""

    def _send(self, action: Action) -> Action:
        if action.mode is ActionMode.EE_DELTA:
            self.q = self.q + np.array([0, 0, 0, 1.0, 0, 0]) * action.delta[2] * 50
        return super()._send(action)


def test_send_only_loop_in_ee_mode_holds_at_a_joint_limit():
    """Issue 23 item 4: measured joints were checked only when the caller read state; a loop that only sends now
    holds the arm at the first send after a joint passed its limit, and nothing more is sent."""
    from robotrl.hardware.limits import parse_limits

    cfg = {**robot_cfg("mock")["limits"], "driver_timeout_ms": 30_000, "workspace_upper": [0.4, 0.8, 1.0]}
    clock = FakeClock()
    layer = SafetyLayer(CoupledMock(cameras=()), parse_limits(cfg, MockRobot.vendor_limits), clock=clock)
    calls = record(layer)
    upper = layer.limits.joint_upper[3]
    with layer:
        with pytest.raises(RobotStateError, match="joint3"):
            for _ in range(200):
                clock.advance(1 / HZ)
                layer.send_action(Action.ee([0, 0, 0.02]))
        assert layer.state is RobotState.HOLD and "joint_limit_measured" in kinds(layer)
        q3 = layer.inner.q[3]
    # one command past the limit at most: 0.02 m x 50 rad/m
    assert upper < q3 <= upper + 1.0 + 1e-9
    assert after_last_send(calls)[0] == "hold"


@pytest.mark.parametrize("on_limit", ["clip", "reject"])
def test_ee_steps_stop_where_the_joints_would_pass_their_limit(on_limit):
    """Gap 24's loop of overruns: an arm that reaches each hand target between commands shows no joint velocity, so
    the measured braking curve never warns, and one 1 cm step near the elbow's singularity moved fr3_joint4 past its
    limit (held only after it was measured there: joint_limit_measured). The joints at each hand target (its
    inverse kinematics) must stay inside their limits: the step is shortened (clip) or the arm holds (reject)."""
    from robotrl.hardware.limits import parse_limits

    limit = -1.42  # 0.15 rad above the start; the hand up and forward straightens the elbow
    cfg = {**robot_cfg("franka")["limits"], "driver_timeout_ms": 30_000, "on_limit": on_limit,
           "joint_upper": [2.6, 1.6, 2.8, limit, 2.7, 4.4, 2.9]}
    layer = SafetyLayer(Fr3HandMock(), parse_limits(cfg, Fr3HandMock.vendor_limits), clock=(clock := FakeClock()))
    highest = -np.inf
    with layer:
        try:
            for _ in range(60):
                clock.advance(1 / HZ)
                layer.send_action(Action.ee([0.01, 0.0, 0.01]))
                highest = max(highest, layer.get_state().joint_pos[3])
        except UnsafeActionError as exc:
            assert on_limit == "reject" and "joint target of the hand on fr3_joint4" in str(exc), exc
            assert layer.state is RobotState.HOLD
        else:
            assert on_limit == "clip"
        q4 = layer.inner.q[3]
    print(f"fr3_joint4 ended {q4 - limit:+.5f} rad from its limit (highest {highest - limit:+.5f})")
    assert highest <= limit + 1e-4 and q4 <= limit + 1e-4  # the IK's tolerance
    assert "joint_limit_measured" not in kinds(layer) and "joint_limit" in kinds(layer)
    if on_limit == "clip":
        assert q4 > limit - 0.02  # the hand went on until the elbow was at its limit, not stopped short


# ------------------------------------------------------------------------------------------ 5: measured overshoot
def test_sim_hand_stays_inside_the_box_when_pushed_at_each_wall():
    """Issue 23 item 5: pushing at a wall left the sim's measured hand 3.7 mm past it. Targets now keep the braking
    margin and approach it on a braking curve: the measured hand never leaves the box and nothing holds."""
    layer = make_robot(sim_cfg(), clock=(clock := FakeClock()))
    lim = layer.limits
    worst = 0.0
    with layer:
        for axis in range(3):
            for sign in (1.0, -1.0):
                layer.reset_to_home()
                for _ in range(45):
                    clock.advance(1 / HZ)
                    push = np.zeros(3)
                    push[axis] = sign
                    layer.send_action(Action.ee(push, 0.0))
                    hand = layer.get_state().ee_pos
                    past = np.maximum(lim.workspace_lower - hand, hand - lim.workspace_upper)
                    worst = max(worst, float(past.max()))
                assert layer.state is RobotState.MOVING, layer.hold_reason
    assert worst <= 0.0, f"measured hand {worst * 1e3:.2f} mm outside the box"
    assert layer.counts["workspace"] > 0 and "workspace_measured" not in kinds(layer)


def test_measured_excursion_past_the_box_holds_and_is_logged():
    layer = make_robot(robot_cfg("mock", limits={"driver_timeout_ms": 30_000}), clock=(clock := FakeClock()))
    calls = record(layer)
    with layer:
        clock.advance(1 / HZ)
        layer.send_action(Action.ee([0.01, 0, 0]))
        layer.inner.ee = layer.inner.ee + [0.0, 0.0, 0.4]  # the arm overshoots its target past the 0.6 m ceiling
        with pytest.raises(RobotStateError, match="end effector z at 0.7000 m is 100.0 mm outside the box"):
            clock.advance(1 / HZ)
            layer.send_action(Action.ee([0.01, 0, 0]))
        assert layer.state is RobotState.HOLD and len(sends(calls)) == 1
    event = next(e for e in layer.events if e["kind"] == "workspace_measured")
    assert event["axis"] == "z" and event["past_m"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------ 6: acceleration
@pytest.mark.parametrize("mode", [ActionMode.JOINT_DELTA, ActionMode.EE_DELTA])
def test_alternating_full_steps_are_acceleration_limited(mode):
    """Issue 23 item 6: alternating full steps at 20 Hz (40 rad/s^2 on the mock) passed unchanged. Finite
    differences of what the driver received stay within the acceleration limit."""
    layer = make_robot(robot_cfg("mock", limits={"driver_timeout_ms": 30_000}), clock=(clock := FakeClock()))
    calls = record(layer)
    lim = layer.limits
    joint = mode is ActionMode.JOINT_DELTA
    step = lim.joint_max_step if joint else lim.ee_max_step
    accel = 20.0 if joint else 10.0  # mock.yaml's defaults: half the mock's vendor 40 rad/s^2, 20 m/s^2
    n = 6 if joint else 3
    with layer:
        for k in range(60):
            clock.advance(1 / HZ)
            layer.send_action(Action(mode, np.full(n, step * (-1) ** k)))
    deltas = np.array([c["action"].delta for c in sends(calls)])
    velocity = np.vstack([np.zeros(n), deltas * HZ])
    acc = np.abs(np.diff(velocity, axis=0)) * HZ
    assert acc.max() <= accel * (1 + 1e-9), acc.max()
    assert np.abs(deltas).max() == pytest.approx(step)  # it still moves at full step
    assert layer.counts["joint_accel" if joint else "ee_accel"] > 0
    assert np.all((lim.joint_max_acceleration if joint else lim.ee_max_acceleration) == accel)


@pytest.mark.parametrize(("limits", "message"), [
    ({"joint_max_acceleration": 12.0}, "joint_max_acceleration[0]=12.0 rad/s^2, expected in (0, 10.0]"),
    ({"ee_max_acceleration": 9.5}, "ee_max_acceleration[0]=9.5 m/s^2, expected in (0, 9.0]"),
    ({"workspace_margin_m": 0.3}, "workspace_margin_m=0.3 m, expected a number in [0, 0.25)"),
    ({"max_state_age_ms": 0}, "max_state_age_ms=0"),
])
def test_acceleration_limits_are_validated_against_fr3s(limits, message):
    cfg = robot_cfg("franka", hostname="127.0.0.1", limits=limits)
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_robot(cfg)


def test_franka_defaults_are_half_the_datasheet():
    layer = make_robot(robot_cfg("franka", hostname="127.0.0.1"))
    np.testing.assert_array_equal(layer.limits.joint_max_acceleration, [5.0] * 7)
    assert layer.limits.ee_max_acceleration == 4.5
    assert layer.limits.workspace_margin_m == pytest.approx(0.25**2 / 9.0)


def test_robot_without_vendor_acceleration_needs_one():
    cfg = sim_cfg()
    del cfg["limits"]["ee_max_acceleration"]
    with pytest.raises(ConfigError, match="robot.limits.ee_max_acceleration is required"):
        make_robot(cfg)


# ------------------------------------------------------------------------------------------ 7: velocity by arrival
def test_velocity_is_limited_by_arrival_time_not_request_time(monkeypatch):
    """Issue 23 item 7: a late hand-off to the driver thread let two capped steps reach the driver 0.3 ms apart.
    The hand-off delay is simulated on the fake clock; velocity by arrival stays within the limit."""
    from robotrl.hardware import safety

    layer = make_robot(robot_cfg("mock", limits={"driver_timeout_ms": 30_000}), clock=(clock := FakeClock()))
    calls = record(layer)
    original = safety.DriverThread.call
    delays: list[float] = []

    def late(self: Any, fn: Any, args: Any, timeout: float, **kwargs: Any) -> Any:
        if delays and getattr(fn, "__name__", "") in ("send_action", "_send_on_driver"):
            clock.advance(delays.pop())  # the driver thread picks the send up late
        return original(self, fn, args, timeout, **kwargs)

    monkeypatch.setattr(safety.DriverThread, "call", late)
    with layer:
        for k in range(20):
            clock.advance(1 / HZ if k % 2 == 0 else 0.0003)
            if k % 2 == 0:
                delays.append(1 / HZ - 0.0003)
            layer.send_action(Action.joints(np.full(6, 0.05)))
    arrivals = [c["t"] for c in sends(calls)]
    deltas = np.array([c["action"].delta for c in sends(calls)])
    speed = np.abs(deltas[1:]) / np.diff(arrivals)[:, None]
    vmax = layer.limits.joint_max_velocity
    assert np.all(speed <= vmax * (1 + 1e-9)), (speed / vmax).max()


def test_resume_keeps_the_velocity_clock():
    layer = make_robot(robot_cfg("mock", limits={"driver_timeout_ms": 30_000}), clock=(clock := FakeClock()))
    calls = record(layer)
    with layer:
        for _ in range(5):
            clock.advance(1 / HZ)
            layer.send_action(Action.joints(np.full(6, 0.05)))
        layer.hold()
        layer.resume()
        clock.advance(0.0074)
        layer.send_action(Action.joints(np.full(6, 0.05)))
    last = sends(calls)[-1]["action"].delta
    assert np.all(np.abs(last) <= layer.limits.joint_max_velocity * 0.0074 + 1e-12), last


# ------------------------------------------------------------------------------------------ 8: stale state
class FrozenClockMock(MockRobot):
    """Readings that keep one timestamp (a driver whose state stopped updating)."""

    frozen: float | None = None

    def _read_state(self) -> JointState:
        state = super()._read_state()
        self.frozen = state.timestamp if self.frozen is None else self.frozen
        return JointState(state.joint_pos, state.joint_vel, state.ee_pos, state.ee_quat, state.gripper_width,
                          self.frozen)


def test_stale_readings_hold_the_arm():
    import time

    from robotrl.hardware.limits import parse_limits

    cfg = {**robot_cfg("mock")["limits"], "driver_timeout_ms": 30_000, "max_state_age_ms": 50}
    layer = SafetyLayer(FrozenClockMock(cameras=()), parse_limits(cfg, MockRobot.vendor_limits), clock=FakeClock())
    calls = record(layer)
    with layer:
        deadline = time.monotonic() + 30
        with pytest.raises(RobotStateError, match="ms old"):
            while time.monotonic() < deadline:
                layer.send_action(Action.ee([0.001, 0, 0]))
                time.sleep(0.01)
        assert layer.state is RobotState.HOLD and layer.events[-1]["kind"] == "stale_state"
        assert layer.events[-1]["age_ms"] > 50
    assert after_last_send(calls)[0] == "hold"


class BrokenCamera:
    name, height, width = "front", 8, 8

    def connect(self) -> None: ...

    def read(self) -> Any:
        raise OSError("USB camera unplugged")

    def disconnect(self) -> None: ...


def test_camera_failure_holds_before_disconnecting():
    from robotrl.hardware.obs_checks import CameraError

    layer = make_robot(robot_cfg("mock"), clock=FakeClock())
    layer.inner.cameras = [BrokenCamera()]
    calls = record(layer)
    with pytest.raises(CameraError, match="USB camera unplugged"), layer:
        layer.send_action(Action.ee([0.001, 0, 0]))
        layer.get_observation()
    assert [c["call"] for c in calls] == ["send", "hold", "hold", "disconnect"]  # camera hold, final stop
    assert "camera_error" in kinds(layer)


# ------------------------------------------------------------------------------------------ 8: frames
class FrameMock(MockRobot):
    image: np.ndarray = np.zeros((32, 32, 3), np.uint8)

    def _read_frames(self) -> dict[str, Any]:
        from robotrl.hardware.robot import Frame

        return {"front": Frame(self.image, monotonic())}


BAD_FRAMES = [
    (np.full((32, 32, 3), 0.5, np.float32), "float32 frames \\(values in \\[0.5, 0.5\\]\\), expected uint8"),
    (np.full((32, 32, 3), 200, np.int64), "int64 frames"),
    (np.zeros((3, 32, 32), np.uint8), "channels-first frames of shape \\(3, 32, 32\\)"),
    (np.zeros((32, 32, 4), np.uint8), "frames of shape \\(32, 32, 4\\), expected"),
    (np.zeros((32, 32), np.uint8), "frames of shape \\(32, 32\\)"),
]


@pytest.mark.parametrize(("image", "message"), BAD_FRAMES)
def test_robot_env_refuses_frames_that_would_reach_the_policy_wrong(image, message):
    from robotrl.hardware.limits import parse_limits
    from robotrl.hardware.obs_checks import ObservationSpecError
    from robotrl.hardware.robot_env import RobotEnv

    FrameMock.image = image
    layer = SafetyLayer(FrameMock(cameras=("front",)), parse_limits(robot_cfg("mock")["limits"],
                                                                    MockRobot.vendor_limits))
    env = RobotEnv(layer, obs_type="pixels", image_size=32, frame_stack=1)
    try:
        with pytest.raises(ObservationSpecError, match="camera 'front' gives " + message):
            env.reset(seed=0)
    finally:
        env.close()


@pytest.mark.parametrize(("image", "message"), BAD_FRAMES)
def test_deploy_pipeline_refuses_the_same_frames(image, message):
    from robotrl.hardware.obs_checks import ObservationSpecError
    from robotrl.hardware.robot import Frame, Observation
    from robotrl.hardware.robot_obs import ObservationPipeline

    state = JointState(np.zeros(6), np.zeros(6), np.zeros(3), None, 0.0, 0.0)
    with pytest.raises(ObservationSpecError, match="camera 'front' gives " + message):
        ObservationPipeline("pixels", ("front",), 32, 1).reset(Observation(state, {"front": Frame(image, 0.0)}))


def _moving_state(q: np.ndarray, dq: np.ndarray) -> JointState:
    return JointState(joint_pos=q, joint_vel=dq, ee_pos=None, ee_quat=None, gripper_width=0.0, timestamp=monotonic())


def test_ee_mode_holds_a_joint_that_cannot_stop_before_its_limit():
    """End-effector mode commands no joint, so a joint rushing at its limit (near a singularity) is caught on its
    measured braking curve: one period at its velocity, sped up by its acceleration, then joint_max_acceleration."""
    from robotrl.hardware.limit_check import measured_violation
    from robotrl.hardware.limits import parse_limits

    limits = parse_limits({**robot_cfg("franka")["limits"], "joint_max_acceleration": 3.0},
                          FrankaRobot.vendor_limits)
    names = FrankaRobot.joint_names
    q = np.array(robot_cfg("franka")["home_rad"])
    upper = limits.joint_upper[3]
    q[3] = upper - 0.12
    fast, slow = np.zeros(7), np.zeros(7)
    fast[3], slow[3] = 0.8, 0.3  # stop points: +0.04 + 0.107 (past), +0.015 + 0.015 (inside)
    check = lambda dq, ee_mode=True, fk=franka_fk, acc=None: measured_violation(  # noqa: E731
        _moving_state(q, dq), limits, None, names, fk, ee_mode=ee_mode, joint_acc=acc)
    found = check(fast)
    assert found is not None and found[0] == "joint_limit_braking" and found[2]["joint"] == "fr3_joint4", found
    assert f"cannot stop before its limit {upper:g}" in found[1]
    assert check(slow) is None
    acc = np.zeros(7)
    acc[3] = 20.0  # speeding up: 0.3 -> 1.3 rad/s within the period
    assert check(slow, acc=acc)[0] == "joint_limit_braking"
    assert check(slow, acc=-acc) is None  # slowing down: the period at its velocity, no extra
    assert check(fast, ee_mode=False) is None  # joint mode: the commanded targets are on the braking curve already
    assert check(fast, fk=None) is None  # no kinematic model (the sim's mocap-driven joints): not watched



@pytest.mark.parametrize("mode", [ActionMode.EE_DELTA, ActionMode.JOINT_DELTA])
def test_full_speed_at_a_limit_brakes_within_the_acceleration_limit(mode):
    """README: limits are "approached on a braking curve". At the mock's defaults a plain clip at the wall would pass
    (its full speed stops within one period's acceleration), so here the acceleration is low enough that stopping
    from full speed takes several periods: the commanded velocity must fall by at most a_max / HZ per period all the
    way to rest, at the limit (minus the margin) and not before."""
    joint = mode is ActionMode.JOINT_DELTA
    accel = 2.0
    limits = {"driver_timeout_ms": 30_000, "ee_max_acceleration" if not joint else "joint_max_acceleration": accel}
    layer = make_robot(robot_cfg("mock", limits=limits), clock=(clock := FakeClock()))
    calls = record(layer)
    lim, n = layer.limits, (6 if joint else 3)
    step = lim.joint_max_step if joint else lim.ee_max_step
    with layer:
        start = layer.get_state()
        for _ in range(400):
            clock.advance(1 / HZ)
            layer.send_action(Action(mode, np.full(n, step)))
    deltas = np.array([c["action"].delta[0] for c in sends(calls)])
    velocity = np.concatenate([[0.0], deltas * HZ, [0.0]])  # from rest, and at rest after the last send
    assert np.abs(np.diff(velocity)).max() <= accel / HZ * (1 + 1e-9), np.abs(np.diff(velocity)).max()
    assert velocity.max() > 3 * accel / HZ  # it reached a speed that takes several periods to stop
    reached = (start.joint_pos[0] if joint else start.ee_pos[0]) + deltas.sum()
    wall = lim.joint_upper[0] if joint else lim.workspace_upper[0] - lim.workspace_margin_m
    assert wall - 1e-3 <= reached <= wall + 1e-9, (reached, wall)
    assert abs(deltas[-1]) < 1e-9  # at rest at the end


@pytest.mark.parametrize("binding", [{"ee_max_step": 0.004}, {"ee_max_velocity": 0.06},
                                     {"ee_max_acceleration": 1.0}])
def test_ee_step_from_rest_is_the_longest_step_the_layer_passes_from_rest(binding):
    """Moves planned from rest in steps of ``ee_step_from_rest()`` (the random start, check-frame) reach their plan:
    whichever of step, velocity or acceleration binds, that step passes unclipped and one 10% longer does not."""
    from robotrl.hardware.limit_check import MotionLimiter
    from robotrl.hardware.limits import parse_limits

    cfg = {"control_hz": HZ, "ee_max_step": 0.02, "ee_max_velocity": 0.5, "ee_max_acceleration": 20.0,
           "workspace_margin_m": 0.0, **binding}
    limits = parse_limits(robot_cfg("mock", limits=cfg)["limits"], MockRobot.vendor_limits)
    step = limits.ee_step_from_rest()
    assert step == pytest.approx({"ee_max_step": 0.004, "ee_max_velocity": 0.003,
                                  "ee_max_acceleration": 0.0025}[next(iter(binding))])
    centre = (limits.workspace_lower + limits.workspace_upper) / 2
    for scale, clipped in ((1.0, False), (1.1, True)):
        limiter = MotionLimiter(limits, MockRobot.joint_names, None)
        plan = limiter.plan(ActionMode.EE_DELTA, centre, np.full(3, scale * step), monotonic(), resynced=True)
        assert (not np.allclose(plan.delta, scale * step, rtol=0, atol=1e-12)) is clipped, (scale, plan.delta)
