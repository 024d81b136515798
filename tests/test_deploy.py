"""`robotrl deploy`: a policy trained in sim drives the sim arm through the safety layer; dry runs send nothing;
refusals are one line; recordings load as demos; operator segments are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from robotrl.hardware.robot import ActionMode

from robotrl.demos import load_demos
from robotrl.errors import ConfigError
from robotrl.workflows.deploy import ScriptedOperator, deploy
from tests.deploy_helpers import SLOW_CPU, train_reach_policy


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_reach_policy(tmp_path_factory.mktemp("reach"))


def count_driver_sends(monkeypatch) -> list[object]:
    """Every action the sim driver's ``_send`` hook received (below the safety layer)."""
    from robotrl.hardware.sim import SimRobot

    received: list[object] = []
    original = SimRobot._send

    def spy(self, action):
        received.append(action)
        return original(self, action)

    monkeypatch.setattr(SimRobot, "_send", spy)
    return received


def test_policy_drives_the_sim_arm_at_the_training_pipeline(run_dir, tmp_path, monkeypatch):
    received = count_driver_sends(monkeypatch)
    summary = deploy(str(run_dir), robot="sim", hz=50, robot_overrides=SLOW_CPU, steps=6,
                     out=str(tmp_path / "out"),
                     record=str(tmp_path / "rec"))
    # action_repeat=2 (the training config): each of the 6 policy actions is sent twice
    assert summary["steps"] == 6 and summary["sends"] == 12 == len(received)
    assert summary["final_state"] == "disconnected" and summary["dry_run"] is False
    rows = [json.loads(line) for line in (tmp_path / "out" / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["policy_action"]) == 4 for r in rows)
    # the sim's driver received exactly what the safety layer sent, in metres (0.01 m per policy unit)
    sent = np.array([r["sent_action"] for r in rows])  # (steps, action_repeat, 4)
    np.testing.assert_allclose(sent.reshape(12, 4)[:, :3] * 0.01, [a.delta for a in received], atol=1e-9)
    # the safety layer only clips: each sent step lies between 0 and the policy's action, axis by axis
    policy = np.repeat(np.array([r["policy_action"] for r in rows])[:, None, :3], 2, axis=1)
    assert np.all(np.abs(sent[..., :3]) <= np.abs(np.clip(policy, -1, 1)) + 1e-6)
    assert np.all(sent[..., :3] * policy >= -1e-9)
    episodes = load_demos(tmp_path / "rec")  # the demo format MoDem trains from
    assert len(episodes) == 1 and episodes[0].obs["pixels"].shape == (7, 3, 32, 32)
    np.testing.assert_allclose(episodes[0].action, sent.mean(axis=1), atol=1e-6)
    proprio = load_demos(tmp_path / "rec", proprio=True)[0].obs["state"]  # what a pixels_proprio MoDem loads
    assert proprio.shape == (7, 8) and np.all((proprio[:, 3] >= 0) & (proprio[:, 3] <= 1))
    # 50 Hz requested; the periods are measured where the sends reached the driver (a loaded machine's rendering and
    # inference make them longer, which the summary then reports with a warning: test_safety_stop.py)
    rate = summary["control_rate"]
    assert rate["requested_hz"] == 50 and rate["periods"] == 11 and summary["period_ms_p50"] >= 19.0
    assert (rate["achieved_hz"] < 47.5) == any("below the requested 50 Hz" in w for w in summary["warnings"])


def test_dry_run_sends_nothing(run_dir, tmp_path, monkeypatch):
    received = count_driver_sends(monkeypatch)
    from robotrl.hardware.sim import SimRobot

    homed = []
    monkeypatch.setattr(SimRobot, "_home", lambda self: homed.append(1))
    summary = deploy(str(run_dir), robot="sim", hz=50, robot_overrides=SLOW_CPU, steps=5, dry_run=True,
                     out=str(tmp_path / "out"))
    assert received == [] and homed == [] and summary["sends"] == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["sent_action"] is None and len(r["policy_action"]) == 4 for r in rows)


def test_operator_segments_are_recorded_as_interventions(run_dir, tmp_path, monkeypatch):
    received = count_driver_sends(monkeypatch)
    push = [0.0, 0.0, 0.5, -1.0]  # the operator lifts the hand by 5 mm per step, gripper open
    # 5 mm from rest in one 20 ms period is 12.5 m/s^2: above sim.yaml's 10, which would ramp the first sends
    fast = {**SLOW_CPU, "limits.ee_max_acceleration": 50}
    summary = deploy(str(run_dir), robot="sim", hz=50, robot_overrides=fast, steps=8,
                     out=str(tmp_path / "out"),
                     record=str(tmp_path / "rec"), operator=ScriptedOperator([(2, 5, push)]))
    flags = np.load(tmp_path / "rec" / "episode_000000.npz")["intervention"]
    assert flags.tolist() == [False, False, True, True, True, False, False, False]
    assert summary["intervention_steps"] == 3
    for a in received[4:10]:  # agent steps 2..4, two sends each: the operator's command (velocity is limited by
        # when sends reach the driver: one sent late on deploy's fixed grid leaves the next a shorter period)
        assert a.delta[0] == a.delta[1] == 0.0 and 0.0 < a.delta[2] <= 0.005 + 1e-12, a.delta
        assert a.gripper == 0.0
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["step"]) for e in events if e["kind"] in ("take_over", "hand_back")] == [
        ("take_over", 2), ("hand_back", 5)]
    recorded = load_demos(tmp_path / "rec")[0].action[2:5]  # what was sent, in policy units (see above)
    np.testing.assert_allclose(recorded[:, [0, 1, 3]], [[0.0, 0.0, -1.0]] * 3, atol=1e-6)
    assert np.all((recorded[:, 2] > 0) & (recorded[:, 2] <= 0.5 + 1e-6)), recorded


def test_record_into_a_dir_that_holds_a_recording_is_refused_before_the_arm_moves(run_dir, tmp_path, monkeypatch):
    """Rerunning `robotrl deploy ... record=DIR` used to overwrite DIR's episodes and meta.json at the end (a longer
    earlier recording's extra episode files stayed, counted by nothing): the earlier demos were lost silently."""
    deploy(str(run_dir), robot="sim", hz=50, robot_overrides=SLOW_CPU, steps=3, out=str(tmp_path / "out1"),
           record=str(tmp_path / "rec"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "rec").iterdir()}
    received = count_driver_sends(monkeypatch)
    with pytest.raises(ConfigError, match=r"record=.*rec already holds a recording \(1 episode"):
        deploy(str(run_dir), robot="sim", hz=50, robot_overrides=SLOW_CPU, steps=3, out=str(tmp_path / "out2"),
               record=str(tmp_path / "rec"))
    assert received == [] and {p.name: p.read_bytes() for p in (tmp_path / "rec").iterdir()} == before


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"robot_overrides": {"cameras": "[topview]"}},
     "policy needs camera 'corner2' but robot=sim has cameras ['topview']"),
    ({"robot_overrides": {"image_size": "64"}},
     "camera 'corner2' gives (64, 64, 3) frames, policy expects (32, 32, 3)"),
    ({"robot": "nope"}, "unknown robot 'nope'"),
    ({"hz": "fast"}, "hz='fast', expected a positive float"),
])
def test_incompatible_robots_are_refused_in_one_line(run_dir, tmp_path, monkeypatch, kwargs, message):
    received = count_driver_sends(monkeypatch)
    with pytest.raises(Exception) as info:
        deploy(str(run_dir), steps=2, out=str(tmp_path / "out"), **kwargs)
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, ConfigError), text
    assert message in text
    assert received == []


@pytest.mark.parametrize(("env", "message"), [
    ({"name": "metaworld/reach", "obs_type": "state"}, "obs_type='state' \\(object and goal positions\\)"),
    ({"name": "metaworld/reach", "obs_type": "pixels_state"}, "obs_type='pixels_state' \\(object and goal"),
    ({"name": "dmc/cartpole_balance"}, "trained on dmc/cartpole_balance, whose actions are not arm commands"),
])
def test_state_policies_and_non_arm_policies_are_refused(env, message):
    from omegaconf import OmegaConf
    from robotrl.hardware import make_robot

    from robotrl.workflows.deploy import PolicySpec, check_compatible, robot_config

    with pytest.raises(ConfigError, match=message):
        spec = PolicySpec.from_config(OmegaConf.create({"env": env}), action_dim=4)
        check_compatible(spec, make_robot(robot_config("sim", spec, None, {})))  # never connected


def test_wrong_action_dimension_and_mode_are_refused():
    from omegaconf import OmegaConf
    from robotrl.hardware import make_robot

    from robotrl.workflows.deploy import PolicySpec, check_compatible, robot_config

    spec = PolicySpec.from_config(OmegaConf.create({"env": {"name": "metaworld/reach"}}), action_dim=3)
    with pytest.raises(ConfigError, match="policy outputs 3-d actions, expected 4"):
        check_compatible(spec, make_robot(robot_config("sim", spec, None, {})))
    spec = PolicySpec.from_config(OmegaConf.create({"env": {"name": "metaworld/reach"}}), action_dim=4)
    joint_only = make_robot(robot_config("mock", spec, None, {}))
    joint_only.action_modes = (ActionMode.JOINT_DELTA,)  # an arm without end-effector control (e.g. so101)
    with pytest.raises(ConfigError, match=r"robot=mock takes \['joint_delta'\] actions, but the policy outputs"):
        check_compatible(spec, joint_only)


def test_cli_help_and_one_line_error(run_dir, capsys):
    from robotrl.cli import main

    with pytest.raises(SystemExit) as done:
        main(["deploy", "--help"])
    assert done.value.code == 0 and "dry_run=false " in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["deploy", f"checkpoint={run_dir}", "robot=mock", "steps=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1
    assert err[0].startswith("robotrl: error: policy needs camera 'corner2' but robot=mock has cameras ['front']")


def test_proprio_pipeline_matches_the_training_env():
    """For a pixels_proprio policy (MoDem's setting) the pipeline gives the state the training env gives:
    hand xyz, finger opening, and the previous env step's four (Meta-World's obs[0:4], obs[18:22]) with
    action_repeat 2, and the frame stack of the same camera."""
    from omegaconf import OmegaConf
    from robotrl.envs import make_env
    from robotrl.hardware import make_robot

    from robotrl.workflows.deploy import PolicySpec, robot_config, run_deploy

    env_cfg = {"name": "metaworld/reach", "obs_type": "pixels_proprio", "image_size": 32, "frame_stack": 2}
    spec = PolicySpec.from_config(OmegaConf.create({"env": env_cfg}), action_dim=4)
    actions = np.random.default_rng(0).uniform(-0.6, 0.6, (6, 4)).astype(np.float32)
    seen: list[dict[str, np.ndarray]] = []

    def policy(obs):
        seen.append(obs)
        return actions[len(seen) - 1]

    # limits that the training env's own motion stays inside (6 mm per 20 ms send, reversing): this test is about
    # the observation pipeline, not about the limits clipping a policy
    loose = {**SLOW_CPU, "limits.ee_max_acceleration": 100, "limits.ee_max_velocity": 1.0, "limits.ee_max_step": 0.02}
    layer = make_robot(robot_config("sim", spec, 50.0, loose))
    with layer:
        run_deploy(layer, spec, policy, episodes=1, steps=6, hz=50.0)
    env = make_env(env_cfg, 0)
    obs, _ = env.reset(seed=0)
    expected = [obs]
    for a in actions[:-1]:
        expected.append(env.step(a)[0])
    env.close()
    for got, want in zip(seen, expected, strict=True):
        assert got["state"].shape == want["state"].shape == (8,)
        # the sim's home zeroes joint velocities that Meta-World's reset leaves at ~1e-3: sub-mm differences
        np.testing.assert_allclose(got["state"], want["state"], atol=2e-3)
        assert got["pixels"].shape == want["pixels"].shape
    assert np.abs(expected[-1]["state"][:3] - expected[0]["state"][:3]).max() > 0.01  # the hand did move


def test_estop_key_on_a_terminal_holds_the_arm_and_ends_the_run(run_dir, tmp_path, monkeypatch):
    """stdin is a pseudo-terminal (an operator's keyboard, no real one): `e` + Enter typed mid-episode e-stops
    the arm through the safety layer; other input is ignored; nothing is sent after it and nothing re-arms."""
    import os
    import pty
    import sys

    from robotrl.hardware.robot import EStopError

    master, slave = pty.openpty()
    monkeypatch.setattr(sys, "stdin", os.fdopen(slave, "r"))
    received = count_driver_sends(monkeypatch)
    typed: dict[str, int] = {}

    def operator(step, obs):  # types on the keyboard at agent steps 1 and 3, never takes over
        if step == 1:
            os.write(master, b"x\n")
        elif step == 3 and "e" not in typed:
            typed["e"] = len(received)
            os.write(master, b"e\n")

    try:
        with pytest.raises(EStopError, match="e-stop engaged"):
            deploy(str(run_dir), robot="sim", hz=50, robot_overrides=SLOW_CPU, steps=50, out=str(tmp_path / "out"),
                   operator=operator)  # estop_key=auto: on, stdin is a terminal
    finally:
        sys.stdin.close()
        os.close(master)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["final_state"] == "disconnected" and "EStopError" in summary["error"]
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    estops = [e for e in events if e["kind"] == "estop"]
    assert len(estops) == 1 and estops[0]["detail"] == "key 'e' on stdin"
    # Every command that reached the driver went before the e-stop; none after, and no re-arm or resume.
    # (the layer's step counts send_action calls: an e-stop that lands while a call reads the arm's state before its
    # send refuses that call, so the event's step may be one past the last command sent)
    assert typed["e"] <= len(received) == summary["sends"] <= estops[0]["step"] <= summary["sends"] + 1 < 100
    after = [e["kind"] for e in events[events.index(estops[0]) + 1:]]
    assert "rearm" not in after and "resume" not in after and after[-1] == "disconnect"


def test_estop_key_setting():
    import io
    import os

    from robotrl.workflows.deploy import wants_estop_key

    r, w = os.pipe()
    with os.fdopen(r, "r") as pipe:
        assert wants_estop_key(None, pipe) is False and wants_estop_key("auto", pipe) is False  # not a terminal
        assert wants_estop_key("true", pipe) is True and wants_estop_key(False, pipe) is False
    os.close(w)
    assert wants_estop_key("auto", io.StringIO()) is False  # replaced stdin (no fd)
    with pytest.raises(ConfigError, match="estop_key='sometimes', expected true, false or auto"):
        wants_estop_key("sometimes", io.StringIO())


def test_estop_key_reads_a_pipe_until_it_closes():
    """estop_key=true with stdin a pipe (a supervisor process): `e` e-stops, end of input ends the thread."""
    import os

    from robotrl.workflows.deploy import KeyEStop

    class Layer:
        def __init__(self):
            self.reasons = []

        def estop(self, reason):
            self.reasons.append(reason)

    r, w = os.pipe()
    layer = Layer()
    with os.fdopen(r, "r") as pipe:
        key = KeyEStop(layer, pipe).start()
        os.write(w, b"hello\n  E \n")
        assert key.pressed.wait(5.0) and layer.reasons == ["key 'e' on stdin"]
        os.close(w)
        key._thread.join(5.0)
        assert not key._thread.is_alive()
