"""One place per setting: a robot's settings (its RobotEnv settings included) come from the robot group, composed by
hydra for training and for the commands outside hydra alike; KAGI's plans are plan data, not reward choices."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from robotrl.errors import ConfigError
from robotrl.overrides import check_overrides, compose_config, group_options

ARMS = ("franka", "mock", "sim", "so101")


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------- robot group
@pytest.mark.parametrize(("robot", "overrides"), [
    ("mock", {}),
    # `10:00` is a string to hydra (training) but 600 to a raw yaml parse: the two must not read it differently
    ("sim", {"limits.control_hz": "30", "faults.raise_at": "10:00"}),
    # a misspelt choice stays the string it is (the driver then names it); a yaml parse made it False
    ("franka", {"hostname": "10.0.0.2", "realtime": "off"}),
])
def test_commands_outside_hydra_see_the_robot_training_sees(robot, overrides):
    """deploy, check-frame, record and replay build a robot with load_robot_config: from the same `robot.KEY=VALUE`
    words it gives exactly the `robot:` and `robot_env:` a training run composes."""
    from robotrl.workflows.run_env import load_robot_config

    words = [f"robot.{k}={v}" for k, v in overrides.items()]
    trained = compose_config([f"robot={robot}", *words, "robot_env.home_noise_m=0.05"])
    assert load_robot_config(robot, overrides) == OmegaConf.to_container(trained.robot, resolve=True)

    from robotrl.workflows.run_env import compose_robot

    group = compose_robot(robot, overrides, robot_env={"home_noise_m": "0.05"})
    assert group == {"robot": OmegaConf.to_container(trained.robot, resolve=True),
                     "robot_env": OmegaConf.to_container(trained.robot_env, resolve=True)}
    assert group["robot_env"]["home_noise_m"] == 0.05


@pytest.mark.parametrize("robot", ARMS)
def test_each_arm_carries_the_robot_env_defaults(robot):
    """The robot group is where robot_env comes from: every arm composes RobotEnvDefaults, robot=none has none."""
    from robotrl.config_schema import RobotEnvDefaults, defaults_of

    cfg = compose_config([f"robot={robot}"])
    assert OmegaConf.to_container(cfg.robot_env) == defaults_of(RobotEnvDefaults)
    assert "defaults" not in cfg.robot  # the defaults list is hydra's, never a robot key
    assert "robot_env" not in compose_config(["robot=none"])


def test_robot_env_without_an_arm_is_one_line():
    with pytest.raises(ConfigError) as exc:
        check_overrides(["robot_env.home_noise_m=0.1"])
    assert "robot_env.home_noise_m" in one_line(exc) and "robot=<arm>" in one_line(exc)
    check_overrides(["robot=sim", "robot_env.home_noise_m=0.1"])  # the spelling users know still works on an arm


def test_robot_env_values_are_type_checked():
    """robot_env is typed (a structured config): a wrong kind is refused before anything connects."""
    with pytest.raises(ConfigError, match="robot_env.home_noise_m"):
        compose_config(["robot=mock", "robot_env.home_noise_m=far"])


# --------------------------------------------------------------------------------------------------- KAGI plans
def test_the_reward_group_lists_no_kagi_plans():
    assert [n for n in group_options("reward") if "/" in n] == []
    assert "kagi" in group_options("reward")


@pytest.mark.parametrize("check", [lambda o: check_overrides(o), lambda o: compose_config(o)])
def test_old_kagi_plan_spelling_names_the_new_one(check):
    with pytest.raises(ConfigError) as exc:
        check(["env=metaworld/push", "reward=kagi/push"])
    assert "reward=kagi reward.plan=push" in one_line(exc)


def test_reward_kagi_picks_the_env_tasks_plan_and_any_packaged_plan():
    from robotrl.rewards.kagi_plan import load_plan, packaged_plans

    assert set(packaged_plans()) >= {"reach", "push", "pick-place", "button-press-topdown", "drawer-open"}
    cfg = compose_config(["env=metaworld/push", "reward=kagi"])
    assert cfg.reward.plan == "push" and load_plan(cfg.reward.plan).name == "push"
    cfg = compose_config(["env=metaworld/reach", "reward=kagi", "reward.plan=drawer-open"])
    assert load_plan(cfg.reward.plan).name == "drawer-open"


def test_values_hydra_cannot_lex_stay_the_strings_they_were():
    """`robot.calibration_file=~/...json` (so101.yaml's own example) is no hydra value unquoted; deploy and record
    took it as that path before and still do. A sweep is refused in one line: an arm takes one value."""
    from robotrl.workflows.run_env import load_robot_config

    cfg = load_robot_config("so101", {"port": "/dev/ttyACM0", "calibration_file": "~/calib/follower.json"})
    assert cfg["calibration_file"] == "~/calib/follower.json" and cfg["port"] == "/dev/ttyACM0"
    with pytest.raises(ConfigError) as exc:
        load_robot_config("sim", {"limits.control_hz": "20,30"})
    assert "sweep" in one_line(exc)


def test_record_builds_the_teleop_device_training_would():
    """record composes `teleop=<device>` through hydra too: `off` stays the word a training run reads (a raw yaml
    parse made it False, which the device took as "no intervention mode")."""
    from robotrl.workflows.run_env import compose_teleop

    overrides = {"intervention": "off", "step_m": "0.01"}
    trained = compose_config(["teleop=keyboard", *(f"teleop.{k}={v}" for k, v in overrides.items())])
    got = compose_teleop("keyboard", overrides)
    assert got == OmegaConf.to_container(trained.teleop, resolve=True)
    assert got["intervention"] == "off" and got["step_m"] == 0.01
    with pytest.raises(ConfigError, match="unknown teleop 'joystick'"):
        compose_teleop("joystick", {})


def test_a_json_camera_mapping_stays_a_mapping_outside_hydra():
    """deploy/record/replay took `robot.cameras='{"front": {...}}'` (JSON) as a mapping; hydra's grammar cannot read
    quoted keys, and the robot then got the text (so101 refused a `cameras` it could not use)."""
    import json

    from robotrl.workflows.run_env import load_robot_config

    cams = {"front": {"type": "video", "path": "/tmp/v.avi", "fps": 30}}
    assert load_robot_config("mock", {"cameras": json.dumps(cams)})["cameras"] == cams
    assert load_robot_config("so101", {"port": "/dev/null", "calibration_file": "~/cal.json"})[
        "calibration_file"] == "~/cal.json"
