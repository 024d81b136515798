"""robot.frame_map (hardware/frame_map.py) and `robotrl check-frame` (robotrl/workflows/frame_check.py): the training
env's frame on the arm's, validated before connecting and checked on the arm by moving it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from robotrl.hardware import make_robot
from robotrl.hardware.frame_map import IDENTITY, FrameMap, parse_frame_map
from robotrl.hardware.mock import MockRobot
from robotrl.hardware.robot import Action
from robotrl.hardware.safety import SafetyLayer

from robotrl.errors import ConfigError
from robotrl.workflows.frame_check import check_frame_map, format_report
from robotrl.workflows.run_env import load_robot_config

MW_HOME = np.array([0.0, 0.6, 0.2])  # Meta-World's home hand
FR3_READY_EE = np.array([0.307, 0.0, 0.487])  # FR3's end effector at libfranka's ready pose (home_rad)


def test_identity_by_default_and_round_trips():
    assert parse_frame_map(None).is_identity and parse_frame_map({}).is_identity
    fmap = parse_frame_map({"axes": ["-y", "x", "z"], "offset": [-0.293, 0.0, 0.287], "scale": 2.0})
    assert fmap.axes == ["-y", "x", "z"] and not fmap.is_identity
    p = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(fmap.position_to_policy(fmap.position_to_arm(p)), p)
    np.testing.assert_allclose(fmap.delta_to_policy(fmap.delta_to_arm(p)), p)
    np.testing.assert_allclose(fmap.delta_to_arm([1.0, 0.0, 0.0]), [0.0, -2.0, 0.0])  # policy +x = arm -y, scaled


def test_franka_config_puts_metaworlds_home_on_fr3s_ready_pose():
    """The shipped map (configs/robot/franka.yaml): Meta-World's x (right), y (away from the base), z (up) on FR3's
    base frame (x forward, y left, z up), and the home hand on the ready pose's end effector."""
    fmap = parse_frame_map(load_robot_config("franka", {"hostname": "127.0.0.1"})["frame_map"])
    np.testing.assert_allclose(fmap.position_to_arm(MW_HOME), FR3_READY_EE, atol=1e-9)
    np.testing.assert_allclose(fmap.delta_to_arm([0.01, 0, 0]), [0, -0.01, 0])  # right = -y on the FR3
    np.testing.assert_allclose(fmap.delta_to_arm([0, 0.01, 0]), [0.01, 0, 0])  # away from the base = +x
    # Meta-World's reachable hand box maps into the arm's default workspace box around the home pose.
    assert np.all(fmap.position_to_arm([0.0, 0.6, 0.2]) > [0.25, -0.35, 0.10])


@pytest.mark.parametrize(("cfg", "message"), [
    ({"axes": ["x", "y"]}, "has 2 entries"),
    ({"axes": ["x", "x", "z"]}, "names arm axis 'x' more than once"),
    ({"axes": ["x", "w", "z"]}, "robot.frame_map.axes[1]='w'"),
    ({"axes": "xyz"}, "robot.frame_map.axes='xyz'"),
    ({"offset": [0.0, float("nan"), 0.0]}, "robot.frame_map.offset="),
    ({"offset": [0.0, 0.0]}, "expected three finite numbers"),
    ({"scale": 0}, "robot.frame_map.scale=0"),
    ({"scale": True}, "robot.frame_map.scale=True"),
    ({"rotation": [[1, 0, 0]]}, "unknown key robot.frame_map.rotation"),
])
def test_bad_frame_maps_are_one_line_errors_before_connecting(cfg, message):
    robot_cfg = load_robot_config("mock", {})
    robot_cfg["frame_map"] = cfg
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_robot(robot_cfg)


def test_make_robot_attaches_the_map():
    layer = make_robot(load_robot_config("franka", {"hostname": "127.0.0.1"})) if importlib.util.find_spec(
        "franky") else make_robot(load_robot_config("sim", {}))
    assert isinstance(layer.frame_map, FrameMap)


class TwistedMock(MockRobot):
    """A driver that moves in a frame rotated 90 degrees about z from the one it reports positions in (a tool-frame vs
    base-frame mix-up): the check must catch it."""

    def _send(self, action: Action) -> Action:
        dx, dy, dz = action.delta
        return super()._send(Action(action.mode, np.array([-dy, dx, dz]), action.gripper))


def mock_layer(cls: type = MockRobot) -> SafetyLayer:
    from robotrl.hardware.limits import parse_limits

    cfg = load_robot_config("mock", {})
    driver = cls.from_config({k: cfg[k] for k in ("cameras", "image_size", "faults")})
    return SafetyLayer(driver, parse_limits(cfg["limits"], MockRobot.vendor_limits))


FAST = {"distance_m": 0.02}


def test_check_passes_on_a_consistent_arm_and_names_where_each_axis_went():
    with mock_layer() as layer:
        home = layer.get_state().ee_pos  # the mock's home (0, 0.5, 0.3)
        report = check_frame_map(layer, IDENTITY, policy_home=",".join(map(str, home)), **FAST)
    assert report["ok"], format_report(report)
    assert [m["axis"] for m in report["moves"]] == ["+x", "-x", "+y", "-y", "+z", "-z"]
    assert all(abs(m["length_ratio"] - 1) < 0.05 and m["cosine"] > 0.99 for m in report["moves"])


def test_check_fails_on_a_driver_moving_in_another_frame():
    with mock_layer(TwistedMock) as layer:
        home = layer.get_state().ee_pos
        report = check_frame_map(layer, IDENTITY, policy_home=",".join(map(str, home)), **FAST)
    assert not report["ok"]
    failed = [m["axis"] for m in report["moves"] if not m["ok"]]
    assert failed == ["+x", "-x", "+y", "-y"]  # z is untouched by the twist
    assert "policy +x -> arm x: moved [0.0, 0.02, 0.0]" in format_report(report)


def test_check_fails_on_a_wrong_offset():
    with mock_layer() as layer:
        report = check_frame_map(layer, IDENTITY, **FAST)  # Meta-World's home vs the mock's (0, 0.5, 0.3)
    assert not report["ok"] and not report["home"]["ok"] and report["home"]["error_m"] == pytest.approx(0.1414, 1e-3)
    assert all(m["ok"] for m in report["moves"])


def test_check_refuses_bad_policy_home():
    from robotrl.workflows.frame_check import FrameCheckError

    with mock_layer() as layer, pytest.raises(FrameCheckError, match="policy_home='0,1'"):
        check_frame_map(layer, IDENTITY, policy_home="0,1")


def test_check_on_the_sim_arm_passes_with_its_identity_map():
    """robot=sim is Meta-World's own scene: the identity map, Meta-World's home, moves tracked by MuJoCo's mocap."""
    layer = make_robot(load_robot_config("sim", {}))
    with layer:
        report = check_frame_map(layer, layer.frame_map, **FAST)
    assert report["ok"], format_report(report)


def test_cli_exits_2_with_one_line_when_the_map_is_wrong(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "robotrl.cli", "check-frame", "robot=mock", "distance_m=0.02",
                           f"out={out}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("robotrl: error: robot=mock: the frame map does not match the arm "
                                                    "(see the lines above)")
    assert "home: arm [0.0, 0.5, 0.3]" in proc.stdout and out.exists()


@pytest.mark.slow  # ~50 s quiet: franky-sim's start, and FR3's slow ramp at relative_dynamics_factor 0.1
@pytest.mark.skipif(importlib.util.find_spec("franky_sim") is None or importlib.util.find_spec("franky") is None,
                    reason="needs franky-control and franky-sim (dev extra)")
def test_franka_map_checks_out_on_franky_sim():
    """The shipped FR3 map on franky-sim (libfranka's protocol, a MuJoCo FR3) from the ready pose: Meta-World's home
    within 1 cm, every policy axis moving along the arm axis the map names."""
    from tests.franky_helpers import FrankySim

    with FrankySim() as server:
        cfg = load_robot_config("franka", {"hostname": server.host, "realtime": "ignore"})
        cfg["limits"]["driver_timeout_ms"] = 3000
        layer = make_robot(cfg)
        with layer:
            report = check_frame_map(layer, layer.frame_map, distance_m=0.03)
    assert report["ok"], format_report(report) + f"\n{dict(layer.counts)}"
    assert report["home"]["error_m"] < 0.01
    assert [m["arm_direction"] for m in report["moves"]] == ["-y", "y", "x", "-x", "z", "-z"]


def test_robot_env_acts_and_observes_in_the_policy_frame():
    """RobotEnv (training and eval on an arm) sends a policy's deltas through the map and gives it the hand's position
    in its own frame: a policy +x step moves the mapped arm along -y, and the state reads +x."""
    from robotrl.workflows.run_env import make_robot_env

    cfg = load_robot_config("mock", {})
    cfg["frame_map"] = {"axes": ["-y", "x", "z"], "offset": [0.1, -0.2, 0.05]}
    cfg["limits"].update(watchdog_ms=2000, driver_timeout_ms=5000, max_consecutive_overruns=1000)
    env = make_robot_env(cfg, {"name": "metaworld/reach", "obs_type": "proprio", "action_repeat": 1,
                               "max_episode_steps": 10}, seed=0)
    try:
        fmap = env.robot.frame_map
        obs, _ = env.reset(seed=0)
        arm0 = np.asarray(env.robot.get_state().ee_pos)
        np.testing.assert_allclose(obs["state"][:3], fmap.position_to_policy(arm0), atol=1e-6)
        obs, *_ = env.step(np.array([0.5, 0.0, 0.0, -1.0], np.float32))  # 5 mm along the policy's +x
        arm1 = np.asarray(env.robot.get_state().ee_pos)
        np.testing.assert_allclose(arm1 - arm0, [0.0, -0.005, 0.0], atol=1e-9)
        np.testing.assert_allclose(obs["state"][:3] - obs["state"][4:7], [0.005, 0.0, 0.0], atol=1e-6)
    finally:
        env.close()


def test_deploy_pipeline_and_actions_use_the_map():
    from robotrl.hardware.robot import JointState, Observation, ee_action_from_policy
    from robotrl.hardware.robot_obs import ObservationPipeline

    fmap = parse_frame_map({"axes": ["-y", "x", "z"], "offset": [-0.293, 0.0, 0.287]})
    action = ee_action_from_policy([1.0, 0.0, 0.0, 1.0], 0.01, fmap)
    np.testing.assert_allclose(action.delta, [0.0, -0.01, 0.0])
    state = JointState(np.zeros(7), np.zeros(7), FR3_READY_EE, None, 0.04, 0.0)
    obs = ObservationPipeline("proprio", (), 64, 1, fmap).reset(Observation(state))  # RobotEnv's, deploy's
    np.testing.assert_allclose(obs["state"][:3], MW_HOME, atol=1e-6)  # the FR3's ready pose is Meta-World's home
