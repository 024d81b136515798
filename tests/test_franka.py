"""robot=franka against franky-sim: the real franky-control client (libfranka's network protocol) talks to a MuJoCo
FR3 server on a loopback address, so the driver code under test is exactly what talks to a real arm. franky-sim
enforces no limits of its own, so every clip asserted here is the safety layer's (reliability cases 5, 6, 8, 11)."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np
import pytest
from robotrl.hardware import make_robot
from robotrl.hardware.robot import Action, ActionMode, DriverError, EStopError, RobotState, RobotStateError

from robotrl.errors import ConfigError
from tests.franky_helpers import FrankySim

franky = pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if importlib.util.find_spec("franky_sim") is None:  # not imported here: the server runs in its own process
    pytest.skip("the robot=franka tests need franky-sim (in the dev extra)", allow_module_level=True)

HZ = 20.0


@pytest.fixture(scope="module")
def sim():
    with FrankySim() as server:  # killed at teardown, and by the kernel if this process dies first
        yield server


class Recorder:
    """Wraps franky's Robot / Gripper: records exactly what the driver sent (motion targets, stops, gripper widths)
    and forwards everything else."""

    def __init__(self, inner: Any, log: list[tuple[str, Any]]) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "log", log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def move(self, motion: Any, asynchronous: bool = False) -> Any:
        if isinstance(motion, (franky.JointStopMotion, franky.CartesianStopMotion)):
            self.log.append(("stop", None))
        elif isinstance(motion, franky.JointMotion):
            self.log.append(("joint", np.array(motion.target.position)))
        elif isinstance(motion, franky.CartesianMotion):
            self.log.append(("ee", np.array(motion.target.pose.end_effector_pose.translation)))
        else:
            self.log.append(("other", motion))
        return self._inner.move(motion, asynchronous=asynchronous)

    def move_async(self, width: float, speed: float) -> Any:  # the gripper
        self.log.append(("gripper", width))
        return self._inner.move_async(width, speed)


def franka_cfg(host: str, **limits: Any) -> dict[str, Any]:
    # joint_max_acceleration: FR3's 10 rad/s^2 (not half): the tests start 2 cm joint steps from rest at 20 Hz
    base = {"control_hz": HZ, "watchdog_ms": 400, "driver_timeout_ms": 3000, "on_limit": "clip",
            "workspace_lower": [0.3, -0.3, 0.2], "workspace_upper": [0.7, 0.3, 0.7], "ee_max_step": 0.01,
            "ee_max_velocity": 0.25, "joint_max_step": 0.03, "joint_max_acceleration": 10.0}
    return {"name": "franka", "hostname": host, "realtime": "ignore", "relative_dynamics_factor": 0.3,
            "home_rad": [0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785],  # franky-sim's initial pose
            "limits": {**base, **limits}}


def connect(host: str, **limits: Any) -> tuple[Any, list[tuple[str, Any]]]:
    safe = make_robot(franka_cfg(host, **limits))
    safe.connect()
    log: list[tuple[str, Any]] = []
    safe.inner.arm = Recorder(safe.inner.arm, log)
    safe.inner.gripper = Recorder(safe.inner.gripper, log)
    return safe, log


def stream(safe: Any, actions: list[Action]) -> list[Action]:
    """Send ``actions`` at HZ; returns what was sent."""
    sent = []
    for a in actions:
        sent.append(safe.send_action(a))
        time.sleep(1 / HZ)
    return sent


def settle(safe: Any, mode_action: Action, reached: Any, timeout_s: float = 8.0) -> Any:
    """Keep sending zero deltas (the watchdog's keep-alive) until ``reached(state)`` or ``timeout_s``: franky-sim
    falls behind real time on a loaded machine, so the arm's lag behind its target varies. Returns the last state."""
    zero = Action(mode_action.mode, np.zeros_like(mode_action.delta), mode_action.gripper)
    deadline = time.monotonic() + timeout_s
    while not reached(state := safe.get_state()) and time.monotonic() < deadline:
        stream(safe, [zero])
    return state


# ------------------------------------------------------------------------------------------------ config (no sim)
@pytest.mark.parametrize(("change", "message"), [
    ({"hostname": "???"}, "robot.hostname"),
    ({"realtime": "sometimes"}, "robot.realtime='sometimes'"),
    ({"relative_dynamics_factor": 1.5}, "relative_dynamics_factor=1.5"),
    ({"home_rad": [0.0, 0.0, 0.0, 0.0, 0.0, 1.57, 0.785]}, "robot.home_rad[3]=0.0 (fr3_joint4)"),
    ({"limits": {"joint_lower": [-3.0] + [-1.0] * 6}}, "outside the vendor range"),
    ({"limits": {"joint_max_velocity": 3.0}}, "joint_max_velocity[0]=3.0"),
])
def test_config_is_validated_before_connecting(change, message):
    cfg = franka_cfg("127.0.0.1")
    if "limits" in change:
        cfg["limits"] = {**cfg["limits"], **change["limits"]}
    else:
        cfg.update(change)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make_robot(cfg)


# ------------------------------------------------------------------------------------------------ against franky-sim
def test_connect_observe_and_joint_delta_move(sim):
    safe, log = connect(sim.host)
    try:
        obs = safe.get_observation()
        q0 = obs.state.joint_target  # the commanded target (the measured pose at connect)
        assert obs.state.joint_pos.shape == (7,) and obs.state.joint_vel.shape == (7,)
        sim_start = [0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785]  # franky-sim's initial pose
        np.testing.assert_allclose(obs.state.joint_pos, sim_start, atol=0.02)
        assert 0.4 < obs.state.ee_pos[0] < 0.7 and abs(obs.state.ee_pos[1]) < 0.05  # in front of the base
        assert abs(np.linalg.norm(obs.state.ee_quat) - 1) < 1e-6
        assert 0.0 <= obs.state.gripper_width <= 0.08
        delta = np.array([0.02, -0.02, 0.02, 0.02, 0.02, 0.02, 0.02])
        action = Action.joints(delta, gripper=0.5)  # gripper 0.5: the hand's 4 cm, as franky-sim starts
        stream(safe, [action] * 4)
        targets = [t for kind, t in log if kind == "joint"]
        for k in range(4):  # exactly the commanded targets, k+1 deltas from the start
            np.testing.assert_allclose(targets[k], q0 + (k + 1) * delta, atol=1e-9)
        assert safe.state is RobotState.MOVING
        state = settle(safe, action, lambda s: np.allclose(s.joint_pos, q0 + 4 * delta, atol=0.03))
        np.testing.assert_allclose(state.joint_pos, q0 + 4 * delta, atol=0.03)  # franky-sim's own test tolerance
    finally:
        safe.disconnect()
    assert safe.state is RobotState.DISCONNECTED and ("stop", None) in log  # a controlled stop before disconnect


def test_ee_delta_move_after_a_joint_move_starts_from_the_measured_pose(sim):
    safe, log = connect(sim.host)
    try:
        stream(safe, [Action.joints(np.full(7, 0.01), gripper=0.5)] * 2)  # then switch: stop, re-read, stream EE
        ee0 = safe.get_state().ee_pos
        action = Action.ee([0.0, 0.0, -0.01], gripper=0.5)
        stream(safe, [action] * 4)
        ee_targets = [t for kind, t in log if kind == "ee"]
        assert ("stop", None) in log[log.index(next(e for e in log if e[0] == "ee")) - 1:]  # stopped before switching
        np.testing.assert_allclose(ee_targets[3], ee0 + [0.0, 0.0, -0.04], atol=0.005)
        state = settle(safe, action, lambda s: np.allclose(s.ee_pos, ee0 + [0.0, 0.0, -0.04], atol=0.025))
        np.testing.assert_allclose(state.ee_pos, ee0 + [0.0, 0.0, -0.04], atol=0.025)
    finally:
        safe.disconnect()


def test_out_of_box_and_too_large_targets_are_clipped_before_franky_sees_them(sim):
    safe, log = connect(sim.host)
    try:
        ee0 = safe.get_state().ee_pos
        top = float(ee0[2]) + 0.015  # a workspace whose ceiling is 1.5 cm above the hand
        safe.disconnect()
        safe, log = connect(sim.host, workspace_upper=[0.7, 0.3, top])
        ee0 = safe.get_state().ee_target  # the commanded target the layer starts from
        # Too large (0.5 m per step) and soon out of the box: every target franky sees is <= 1 cm from the previous
        # one and below the ceiling less the braking margin, approached on the braking curve.
        sent = stream(safe, [Action.ee([0.0, 0.0, 0.5], gripper=1.7)] * 6)
        ee_targets = np.array([t for kind, t in log if kind == "ee"])
        steps = np.diff(np.vstack([ee0, ee_targets]), axis=0)
        assert np.all(np.abs(steps) <= 0.01 + 1e-9), steps
        inner = top - safe.limits.workspace_margin_m
        assert np.all(ee_targets[:, 2] <= inner + 1e-9) and ee_targets[-1, 2] == pytest.approx(inner, abs=2e-4)
        dz = [s.delta[2] for s in sent]  # what was sent: shrinking steps up to the (shrunk) ceiling
        assert all(a >= b >= 0 for a, b in zip(dz, dz[1:], strict=False)) and dz[0] > 0, dz
        assert safe.counts["ee_step"] >= 6 and safe.counts["workspace"] >= 2
        assert {e["axis"] for e in safe.events if e["kind"] == "workspace"} == {"z"}
        assert [w for kind, w in log if kind == "gripper"] == [0.0]  # command 1.7 clipped to 1 (closed): width 0
        assert safe.counts["gripper"] == 6
        # Joint steps: 1 rad requested on joint 1; from rest, 10 rad/s^2 x (50 ms)^2 = 0.025 rad reaches franky
        # (joint_max_step 0.03 would allow more; the acceleration limit binds first).
        safe.hold()
        safe.resume()
        q0 = safe.get_state().joint_target
        stream(safe, [Action.joints([1.0, 0, 0, 0, 0, 0, 0], gripper=1.0)])
        np.testing.assert_allclose([t for kind, t in log if kind == "joint"][-1] - q0, [0.025, 0, 0, 0, 0, 0, 0],
                                   atol=1e-9)
        assert any(e["kind"] == "joint_step" and e["axis"] == "fr3_joint1" for e in safe.events)
        assert any(e["kind"] == "joint_accel" and e["axis"] == "fr3_joint1" for e in safe.events)
    finally:
        safe.disconnect()


def test_estop_mid_motion_stops_and_refuses_until_rearmed(sim):
    safe, log = connect(sim.host)
    try:
        stream(safe, [Action.joints(np.full(7, 0.02), gripper=0.5)] * 3)
        safe.estop("test button")
        assert safe.state is RobotState.HOLD and log[-1] == ("stop", None)
        n = len(log)
        with pytest.raises(EStopError):
            safe.send_action(Action.joints(np.zeros(7)))
        assert len(log) == n  # nothing more was written
        q_stop = safe.get_state().joint_pos
        time.sleep(0.3)
        assert np.max(np.abs(safe.get_state().joint_pos - q_stop)) < 0.01  # the arm stays where it stopped
        assert any(e["kind"] == "estop" and e["detail"] == "test button" for e in safe.events)
        safe.rearm()
        stream(safe, [Action.joints(np.zeros(7), gripper=0.5)])
        assert log[-1][0] == "joint"
    finally:
        safe.disconnect()


def test_killed_server_faults_the_robot_and_nothing_more_is_written():
    with FrankySim() as server:  # its own: this test kills it
        safe, log = connect(server.host, driver_timeout_ms=1500)
        stream(safe, [Action.joints(np.full(7, 0.01), gripper=0.5)] * 2)
        server.kill()
        n = len(log)
        t_kill = time.monotonic()
        with pytest.raises(DriverError):  # franky's control thread stores libfranka's UDP timeout; a send re-raises it
            while time.monotonic() - t_kill < 5.0:
                safe.send_action(Action.joints(np.full(7, 0.001), gripper=0.5))
                time.sleep(1 / HZ)
        print(f"link loss detected after {time.monotonic() - t_kill:.3f} s")
        assert safe.state is RobotState.FAULT
        assert any(e["kind"] in ("driver_error", "driver_timeout") for e in safe.events)
        sent_after = [e for e in log[n:] if e[0] == "joint"]
        with pytest.raises(RobotStateError):
            safe.send_action(Action.joints(np.zeros(7)))
        assert [e for e in log[n:] if e[0] == "joint"] == sent_after  # FAULT: nothing more reaches franky
        safe.disconnect()
        assert safe.state is RobotState.DISCONNECTED and safe.events[-1]["kind"] == "disconnect"


# ------------------------------------------------------------------------------------------------ deploy on franky-sim
@pytest.fixture(scope="module")
def proprio_run(tmp_path_factory):
    """A tiny DrQ-v2 trained on Meta-World reach with env.obs_type=proprio: hand xyz + gripper, now and one env
    step before, which an arm without cameras can produce."""
    from tests.deploy_helpers import train_reach_policy

    return train_reach_policy(tmp_path_factory.mktemp("reach-proprio"), "env.obs_type=proprio")


@pytest.mark.slow  # ~26 s; franky-sim episodes with resets stay in the default suite (test_robot_env_franka.py)
def test_deploy_episode_on_franky_sim(proprio_run, tmp_path, monkeypatch):
    """`robotrl deploy robot=franka` end to end: the franky client under the safety layer drives franky-sim.

    Meta-World's action scale is 0.01 m per unit per send; franka.yaml's caps (1 cm per command, 0.25 m/s) admit
    that at 20 Hz, so the test tightens them (3 mm per command, 0.05 m/s) and makes the operator push full scale
    for two agent steps: the safety layer must clip what reaches franky, axis by axis."""
    import json

    from robotrl.hardware.frame_map import parse_frame_map
    from robotrl.hardware.franka import FrankaRobot

    from robotrl.workflows.deploy import ScriptedOperator, deploy
    from robotrl.workflows.run_env import load_robot_config

    received: list[Action] = []  # what the safety layer passed to the franky driver
    original = FrankaRobot._send
    monkeypatch.setattr(FrankaRobot, "_send", lambda self, a: (received.append(a), original(self, a))[1])
    cap = 0.003  # m per command (ee_max_step); ee_max_velocity 0.05 m/s x 50 ms is 2.5 mm
    steps, push = 6, [1.0, -1.0, -1.0, 0.0]
    with FrankySim() as server:
        overrides = {"hostname": server.host, "realtime": "ignore", "relative_dynamics_factor": 0.3,
                     "home_rad": [0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785],  # franky-sim's initial pose: a short home
                     "limits.watchdog_ms": 2000, "limits.driver_timeout_ms": 3000,  # 2 shared cores
                     "limits.ee_max_step": cap, "limits.ee_max_velocity": 0.05}
        summary = deploy(str(proprio_run), robot="franka", hz=HZ, steps=steps, robot_overrides=overrides,
                         operator=ScriptedOperator([(2, 4, push)]), out=str(tmp_path / "out"))
    assert summary["error"] is None and summary["robot"] == "franka"
    assert summary["steps"] == steps and summary["sends"] == 2 * steps == len(received)  # action_repeat 2
    assert summary["final_state"] == "disconnected" and summary["intervention_steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "out" / "steps.jsonl").read_text().splitlines()]
    sent = np.array([r["sent_action"] for r in rows]).reshape(2 * steps, 4)  # policy units, as logged
    deltas = np.array([a.delta for a in received])  # FR3's base frame
    assert all(a.mode is ActionMode.EE_DELTA for a in received)
    frame_map = parse_frame_map(load_robot_config("franka", {})["frame_map"])  # Meta-World's frame on FR3's
    policy_deltas = np.array([frame_map.delta_to_policy(d) for d in deltas])
    np.testing.assert_allclose(sent[:, :3] * 0.01, policy_deltas, atol=1e-9)  # the log is exactly what franky got
    assert np.all(np.abs(deltas) <= cap + 1e-9)  # nothing above the cap reached the driver
    # The operator's full-scale push (1 cm per send) arrives as exactly the cap on every axis.
    # The operator's full-scale push (1 cm per send; agent steps 2-3 = sends 4-7) arrives clipped to the same cap on
    # every axis, in the pushed direction: ee_max_velocity x the measured period (~2.5 mm at 20 Hz; the sends are on
    # a fixed grid, so one that went out late leaves the next a shorter period), at most ee_max_step.
    pushed = policy_deltas[4:8] * np.sign(push[:3])
    assert np.all((pushed > 0) & (pushed <= cap + 1e-9)), pushed
    np.testing.assert_allclose(pushed, np.repeat(pushed[:, :1], 3, axis=1), atol=1e-12)
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    clipped = [e for e in events if e["kind"] == "ee_step"]
    assert {e["axis"] for e in clipped} == {"x", "y", "z"} and len(clipped) >= 12  # 4 sends x 3 axes
    assert summary["safety_counts"]["ee_step"] == len(clipped)
    kinds = [e["kind"] for e in events if e.get("source") == "safety"]
    assert kinds[:2] == ["connect", "home"] and kinds[-2:] == ["stop", "disconnect"]  # held, then disconnected
