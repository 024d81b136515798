"""RobotEnv (robotrl.hardware.robot_env) over robot=sim behind the safety layer, and `robotrl train robot=sim`."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from robotrl.hardware.robot import EStopError

from robotrl.errors import ConfigError
from robotrl.safety_events import INTERVENTIONS
from robotrl.workflows.run_env import load_robot_config, make_robot_env
from tests.conftest import assert_same_tensors

ENV = {"name": "metaworld/reach", "image_size": 32, "frame_stack": 2, "action_repeat": 2,
       "obs_type": "pixels_proprio", "max_episode_steps": 20}
# 10 ms periods (the velocity cap still equals ee_max_step); a 2 s watchdog and 5 s driver timeout: the test machine
# is shared, and a 200 ms stall there would hold the arm in tests that are not about the watchdog
# ee_max_acceleration 200 m/s^2: a full 1 cm step from rest in one 10 ms period; max_consecutive_overruns 1000: a
# loaded machine overran 5 periods of 10 ms in a row (rate_fault) in a test about step limits (overruns are still
# reported and counted; these tests are not about the acceleration limit or the rate fault).
FAST = {"control_hz": 100, "ee_max_velocity": 1.0, "ee_max_acceleration": 200.0, "watchdog_ms": 2000,
        "driver_timeout_ms": 5000, "max_consecutive_overruns": 1000}


def _env(env=None, home_noise_m=0.0, **limits):
    robot = load_robot_config("sim", {})
    robot["limits"].update({**FAST, **limits})
    return make_robot_env(robot, {**ENV, **(env or {})}, seed=0, home_noise_m=home_noise_m)


@pytest.fixture(scope="module")
def env():
    e = _env(home_noise_m=0.03)
    yield e
    e.close()


def test_env_checkers_pass(env):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    obs, _ = env.reset(seed=1)
    assert obs["pixels"].shape == (6, 32, 32) and obs["state"].shape == (8,)
    assert env.robotrl_info["robot"] == "sim" and env.action_space.shape == (4,)


def test_randomised_home_start_is_seeded(env):
    starts = {}
    for seed in (1, 2, 1):
        obs, _ = env.reset(seed=seed)
        starts.setdefault(seed, []).append(obs["state"][:3].copy())
    np.testing.assert_allclose(starts[1][0], starts[1][1], atol=1e-9)  # same seed, same start (exact resume needs it)
    assert np.abs(starts[1][0] - starts[2][0]).max() > 1e-3  # another seed, another start
    home = _env()
    try:
        at_home, _ = home.reset(seed=1)
    finally:
        home.close()
    assert 1e-3 < np.abs(starts[1][0] - at_home["state"][:3]).max() < 0.03 + 0.01  # within the noise box (+ tracking)


def test_a_slower_velocity_limit_changes_how_fast_the_start_is_reached_not_where():
    """A velocity limit below ``ee_max_step`` per period (0.3 m/s at 100 Hz: 3 mm against 1 cm) must not shorten the
    seeded start offset: the start moves in more steps, each one the layer passes unclipped (it clipped 6 axes of
    the 3 one-centimetre steps planned from ``ee_max_step`` alone)."""
    slow = _env(home_noise_m=0.03, ee_max_velocity=0.3)
    try:
        slow.reset(seed=1)
        clipped = [e for e in slow.robot.events if e["kind"] in INTERVENTIONS]
        assert clipped == [], clipped
        assert slow.robot.limits.ee_step_from_rest() == pytest.approx(0.003)
    finally:
        slow.close()


def test_reward_and_success_come_from_the_sim_only(env):
    env.reset(seed=3)
    _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert reward > 0 and "success" in info and not terminated  # Meta-World's reward on the sim's true state


def test_control_rate_is_kept_and_overruns_reported(env):
    env.reset(seed=4)
    periods_before = len(env.robot.periods)
    t0 = time.monotonic()
    for _ in range(3):
        env.step(np.zeros(4, np.float32))
    overruns = env.stats.overruns  # (a loaded test machine may overrun 20 ms on its own)
    elapsed = time.monotonic() - t0
    assert elapsed >= 3 * 2 * env.period * 0.99  # 2 sends per step, each one period after the previous
    periods = list(env.robot.periods)[periods_before:]
    assert min(periods) >= env.period * 0.99, periods
    time.sleep(5 * env.period)  # a slow agent: its compute time counts
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    assert info["overrun_ms"] >= 5 * env.period * 1e3 and env.stats.overruns == overruns + 1


def test_episode_ends_at_its_step_limit_and_holds(env):
    env.reset(seed=5)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        steps += 1
    assert steps == 10 and "safety_stop" not in info, info  # 20 env steps / action_repeat 2
    assert env.robot.state.value == "hold" and env.robot.hold_reason == "hold: requested"
    # the episode's achieved rate, as the driver saw its commands: at most the requested one (sends are one period
    # apart at least), and the slowest 1% of periods no faster than that
    assert 0 < info["achieved_hz"] <= env.robot.limits.control_hz * 1.01, info["achieved_hz"]
    assert info["period_ms_p99"] >= 0.99e3 * env.period and env.last_episode.achieved_hz == info["achieved_hz"]


def test_safety_intervention_ends_the_episode_with_its_reason(caplog):
    # on_limit=reject and the box's +x side ~1.4 cm from home: pushing +x is refused by the safety layer
    env = _env(on_limit="reject", workspace_upper=[0.018, 0.9, 0.35])
    try:
        obs, _ = env.reset(seed=0)
        assert abs(obs["state"][0]) < 6e-3  # Meta-World's reach starts the hand near x = 0
        caplog.set_level(logging.WARNING, logger="robotrl.hardware.robot_env")
        _, _, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
        assert truncated and not terminated  # the second send of the first step crosses the box
        assert info["safety_stop"].startswith("workspace: target on x") and info["interventions"] >= 1
        assert env.last_episode.stop == info["safety_stop"]
        assert "episode ended by the safety layer at step 1: workspace: target on x" in caplog.text
        assert env.robot.state.value == "hold"
        env.reset(seed=0)  # homing recovers from HOLD; the next episode runs
        _, _, _, truncated, info = env.step(np.zeros(4, np.float32))
        assert not truncated and env.stats.stop is None
    finally:
        env.close()


def test_estop_ends_the_episode_and_blocks_the_next_reset():
    env = _env()
    try:
        env.reset(seed=0)
        env.robot.estop("operator pressed e")
        _, _, _, truncated, info = env.step(np.zeros(4, np.float32))
        assert truncated and info["safety_stop"] == "estop: operator pressed e"
        with pytest.raises(EStopError, match="rearm"):
            env.reset(seed=1)  # a human re-arms; training does not
    finally:
        env.close()


@pytest.mark.parametrize("hook", ["send_action", "get_observation"])
def test_estop_from_another_thread_mid_step_is_an_estop_error_wherever_the_step_notices_it(monkeypatch, hook):
    # a key thread's e-stop landing between a send and the step's HOLD check was reported as RobotStateError
    # ("arm holds (estop: ...)"), so a deploy run ended with a different error class depending on timing
    env = _env()
    try:
        env.reset(seed=0)
        original = getattr(env.robot, hook)

        def estop_around(*args, **kwargs):
            if hook == "get_observation":
                env.robot.estop("key 'e' on stdin")
            out = original(*args, **kwargs)
            if hook == "send_action":
                env.robot.estop("key 'e' on stdin")
            return out

        monkeypatch.setattr(env.robot, hook, estop_around)
        _, _, _, truncated, info = env.step(np.zeros(4, np.float32))
        assert truncated and info["safety_stop"] == "estop: key 'e' on stdin"
        assert isinstance(env.stop_error, EStopError) and "e-stop engaged" in str(env.stop_error)
    finally:
        env.close()


@pytest.mark.parametrize(("env_over", "message"), [
    ({"obs_type": "state"}, "env.obs_type='state' on a robot"),
    ({"name": "dmc/cartpole_swingup", "obs_type": "pixels"}, "robot=sim is a Meta-World scene"),
])
def test_bad_robot_env_config(env_over, message):
    with pytest.raises(ConfigError, match=message):
        _env(env_over).close()


# ------------------------------------------------------------------------------------------------ training
ROBOT_TRAIN = [
    "robot=sim", "robot.limits.control_hz=100", "robot.limits.ee_max_velocity=1.0",
    # the test machine is shared: a slow update must not end episodes by the rate monitor or the watchdog here
    "robot.limits.overrun_factor=1000", "robot.limits.watchdog_ms=5000", "robot.limits.driver_timeout_ms=5000",
    "env.obs_type=proprio", "env.max_episode_steps=20", "frames=60", "seed_frames=20", "eval_episodes=0",
    "checkpoint_every_frames=20",
]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from robotrl.envs.demos import generate_demos

    env = {"name": "metaworld/reach", "image_size": 32, "max_episode_steps": 120}
    return generate_demos(env, num_episodes=2, seed=3, out_dir=tmp_path_factory.mktemp("robot") / "reach")


PUSH = [0.0, 0.0, 1.0, 1.0]


def push_operator():
    """A person who takes over at agent steps 2-4 of every episode (robot_env.operator=tests.test_robot_env:...)."""
    from robotrl.workflows.deploy import ScriptedOperator

    return ScriptedOperator([(2, 5, PUSH)])


def test_modem_v2_trains_online_on_the_sim_arm_and_resumes_exactly(compose_cfg, demo_dir, tmp_path):
    """`robotrl train agent=modem_v2 robot=sim` with a person taking over 3 steps per episode: 3 episodes in one go
    vs 3 whose last checkpoint was lost (a crash after episode 3 saved its operator segment) + resume from episode 2;
    identical parameters. (No evaluations: on the one arm they would run between the same episodes
    in both runs, but cost test time.)"""
    from robotrl.demos import load_demos
    from robotrl.workflows.train import Trainer
    from tests.test_modem import TINY_CFG

    def cfg(*o):
        return compose_cfg("agent=modem_v2", *TINY_CFG, f"agent.demos={demo_dir}", *ROBOT_TRAIN,
                           "robot_env.operator=tests.test_robot_env:push_operator", *o, tiny=False)

    full = Trainer(cfg(), tmp_path / "full")
    assert full.collector.update_at == "episode_end" and full.run.eval_env is full.env.unwrapped
    summary = full.train()
    assert summary["frames"] == 60
    rows = (tmp_path / "full" / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"interventions", "overruns", "safety_stop", "value_loss"} <= set(header) and len(rows) == 4
    assert [float(r.split(",")[header.index("operator_steps")]) for r in rows[1:]] == [3.0, 3.0, 3.0]
    achieved = [float(r.split(",")[header.index("achieved_hz")]) for r in rows[1:]]
    assert all(0 < hz <= 1.01 * full.env.unwrapped.robot.limits.control_hz for hz in achieved), achieved
    # what the arm executed is what the replay holds; the operator's segments are demos, on disk and in the agent
    segments = load_demos(tmp_path / "full" / "interventions")
    assert len(segments) == 3 and all(np.array_equal(s.action, np.tile(PUSH, (3, 1))) for s in segments)
    assert len(full.agent.extra_demos) == 3
    only_demos = sum(len(e.action) for e in full.agent.load_demos())  # transitions of the demos alone
    assert len(full.agent.demo_replay) == only_demos + 3 * 3, (len(full.agent.demo_replay), only_demos)
    # a crash after episode 3 saved its operator segment, before its checkpoint: the run dir as such a crash left it
    Trainer(cfg(), tmp_path / "split").train()
    shutil.rmtree(tmp_path / "split" / "checkpoints" / "frame_000000000060")
    resumed = Trainer(cfg("resume=true"), tmp_path / "split")
    assert resumed.step == 20 and len(resumed.agent.extra_demos) == 2  # episode 3's segment is not the agent's yet
    resumed.train()
    assert_same_tensors(full.agent.state_dict(), resumed.agent.state_dict())
    again = load_demos(tmp_path / "split" / "interventions")
    assert len(again) == 3 and all(np.array_equal(a.action, b.action) for a, b in zip(again, segments, strict=True))


@pytest.mark.slow
def test_sim2real_report_of_a_trained_policy(compose_cfg, demo_dir, tmp_path):
    """`robotrl sim2real`: a checkpoint's policy on robot=sim vs the in-memory mock arm, same seeds (~20 s)."""
    from robotrl.workflows.sim2real import sim2real
    from robotrl.workflows.train import Trainer
    from tests.test_modem import TINY_CFG

    cfg = compose_cfg("agent=modem_v2", *TINY_CFG, f"agent.demos={demo_dir}", *ROBOT_TRAIN, "frames=20", tiny=False)
    Trainer(cfg, tmp_path / "full").train()
    slow = {"limits.watchdog_ms": "5000", "limits.overrun_factor": "1000"}
    report = sim2real(str(tmp_path / "full"), robots="sim,mock", episodes=1, steps=3, out=str(tmp_path / "gap"),
                      robot_overrides={"sim": slow, "mock": slow})
    assert json.loads((tmp_path / "gap" / "gap.json").read_text())["robots"]["mock"]["episodes"][0]["steps"] == 3
    assert report["robots"]["sim"]["success_rate"] is not None and report["robots"]["mock"]["success_rate"] is None


def test_sim2real_cli_errors(capsys):
    from robotrl.cli import main

    for args, message in ((["checkpoint=x", "robots=sim"], "name at least two robots"),
                          (["checkpoint=x", "franka.hostname=1.2.3.4"], "franka.hostname: 'franka' is not one of")):
        with pytest.raises(SystemExit) as exit_info:
            main(["sim2real", "robots=sim,mock", *args] if "robots=sim" not in args else ["sim2real", *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_env_reward_on_an_arm_without_one_is_refused(compose_cfg, tmp_path):
    from robotrl.workflows.train import Trainer

    with pytest.raises(ConfigError, match="robot=mock gives no reward"):
        Trainer(compose_cfg("robot=mock", "env=metaworld/reach", "env.obs_type=proprio"), tmp_path)


@pytest.mark.slow
def test_demos_from_a_lerobot_dataset(compose_cfg, demo_dir, tmp_path):
    """agent.demos=<LeRobotDataset v3.0>: imported once into the demo format, and MoDem-V2 trains from it on the arm
    (~13 s: h264 export and decode)."""
    pytest.importorskip("av", reason="LeRobotDataset import needs the lerobot extra")
    from robotrl.demos import load_demos
    from robotrl.lerobot_dataset import export_lerobot
    from robotrl.workflows.train import Trainer
    from tests.test_modem import TINY_CFG

    dataset = export_lerobot(demo_dir, tmp_path / "reach-lerobot")
    cfg = compose_cfg("agent=modem_v2", *TINY_CFG, f"agent.demos={dataset}", *ROBOT_TRAIN, "frames=20", tiny=False)
    trainer = Trainer(cfg, tmp_path / "run")
    imported = Path(trainer.cfg.agent.demos)
    assert imported == tmp_path / "reach-lerobot-robotrl32" and len(load_demos(imported)) == 2
    np.testing.assert_array_equal(load_demos(imported)[0].action, load_demos(demo_dir)[0].action)
    assert trainer.train()["frames"] == 20


def test_update_at_choices():
    from robotrl.workflows.trainer.hooks import update_at as _update_at

    assert _update_at(OmegaConf.create({"update_at": "auto"}), on_robot=True) == "episode_end"
    assert _update_at(OmegaConf.create({"update_at": "auto"}), on_robot=False) == "step"
    assert _update_at(OmegaConf.create({"update_at": "step"}), on_robot=True) == "step"
    with pytest.raises(ConfigError, match="update_at='sometimes', expected auto, step or episode_end"):
        _update_at(OmegaConf.create({"update_at": "sometimes"}), on_robot=False)


@pytest.mark.parametrize("fault", [KeyboardInterrupt, RuntimeError])
def test_a_training_run_stopped_mid_episode_holds_and_disconnects_the_arm(compose_cfg, tmp_path, monkeypatch, fault):
    """Ctrl-C (or any error) in `robotrl train robot=...` between two moves: the loop left the arm as it was, still
    commanded and connected (only the watchdog might hold it, racing the interpreter's exit); it must hold it and
    disconnect before the exception leaves the training loop."""
    from robotrl.hardware.robot import RobotState

    from robotrl.workflows.train import Trainer

    trainer = Trainer(compose_cfg("agent=tdmpc2", "env=metaworld/reach", *ROBOT_TRAIN, "agent.mlp_dim=32",
                                  "agent.latent_dim=16", "agent.num_samples=16", "agent.num_elites=4",
                                  "agent.num_pi_trajs=2", "agent.iterations=1", tiny=False), tmp_path)
    arm = trainer.env.unwrapped.robot
    act, calls = trainer.agent.act_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # mid-episode, the arm moved since its home
            raise fault("stopped mid-episode")
        return act(*args, **kwargs)

    monkeypatch.setattr(trainer.agent, "act_batch", interrupted)
    monkeypatch.setattr(trainer.agent, "act", lambda obs, *a, **k: interrupted({k_: v[None] for k_, v in obs.items()},
                                                                                *a, **k)[0])
    with pytest.raises(fault, match="stopped mid-episode"):
        trainer.train()
    assert len(calls) == 8
    kinds = [e["kind"] for e in arm.events]
    assert kinds[-2:] == ["stop", "disconnect"], kinds[-6:]
    assert arm.inner.state is RobotState.DISCONNECTED


@pytest.mark.parametrize("failing", ["build_agent", "pretrain_on_demos"])
def test_a_run_that_fails_while_it_is_built_disconnects_the_arm(compose_cfg, tmp_path, monkeypatch, failing):
    """The arm connects when its env is built; a part built after it that fails (the agent, a checkpoint to resume,
    MoDem's pretraining) must not leave it connected."""
    from robotrl.hardware.robot import RobotState

    import robotrl.workflows.run_env as run_env
    import robotrl.workflows.trainer.factory as factory
    from robotrl.workflows.train import Trainer

    built, make = [], run_env.make_robot_env
    monkeypatch.setattr(run_env, "make_robot_env", lambda *a, **k: built.append(make(*a, **k)) or built[-1])

    def fail(*args, **kwargs):
        raise RuntimeError(f"{failing} failed")

    monkeypatch.setattr(factory, failing, fail)
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        Trainer(compose_cfg("agent=tdmpc2", "env=metaworld/reach", *ROBOT_TRAIN, tiny=False), tmp_path)
    assert len(built) == 1 and built[0].robot.inner.state is RobotState.DISCONNECTED
    assert [e["kind"] for e in built[0].robot.events][-1] == "disconnect"
