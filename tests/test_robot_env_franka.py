"""RobotEnv over robot=franka against franky-sim: episodes with resets through the franky client and safety layer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.franky_helpers import FrankySim

pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if importlib.util.find_spec("franky_sim") is None:  # not imported here: the server runs in its own process
    pytest.skip("the robot=franka tests need franky-sim (in the dev extra)", allow_module_level=True)

ENV = {"name": "metaworld/reach", "obs_type": "proprio", "frame_stack": 1, "action_repeat": 2, "max_episode_steps": 12}


@pytest.fixture(scope="module")
def server():
    with FrankySim() as running:  # killed at teardown, and by the kernel if this process dies first
        yield running


def franka_config(host: str) -> dict:
    """configs/robot/franka.yaml pointed at franky-sim, with limits for 2 shared cores (as tests/test_franka.py)."""
    from robotrl.workflows.run_env import load_robot_config

    cfg = load_robot_config("franka", {})
    cfg.update(hostname=host, realtime="ignore", relative_dynamics_factor=0.3,
               home_rad=[0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])  # franky-sim's initial pose: a short home
    cfg["limits"].update(watchdog_ms=2000, driver_timeout_ms=3000, overrun_factor=1000)
    return cfg


def record_sends(layer) -> list:
    """Record every command the safety layer sent to the driver (its return value: what franky got)."""
    sent: list = []
    send = layer.send_action

    def recording(action):
        out = send(action)
        sent.append(np.asarray(out.delta, float).copy())
        return out

    layer.send_action = recording
    return sent


def wait_until_measured_follows(layer, timeout_s: float = 60.0) -> tuple[float, float]:
    """Command one end-effector move of up to 1 cm towards the workspace box's centre, then keep the arm commanded
    (zero deltas, so the watchdog sees a live loop) until the measured hand is within 2 mm of the target or
    ``timeout_s`` (generous: franky-sim on a starved machine starts a motion late); returns (the distance sent,
    the measured distance travelled)."""
    import time

    from robotrl.hardware.robot import Action

    start = np.asarray(layer.get_state().ee_pos, float)
    centre = (np.asarray(layer.limits.workspace_lower) + np.asarray(layer.limits.workspace_upper)) / 2
    layer.resume()
    sent = np.asarray(layer.send_action(Action.ee(np.clip(centre - start, -0.01, 0.01) * [0, 0, 1], 0.0)).delta)
    deadline = time.monotonic() + timeout_s
    while True:
        now = np.asarray(layer.get_state().ee_pos, float)
        if np.abs(now - (start + sent)).max() < 2e-3 or time.monotonic() > deadline:
            layer.hold()
            return float(np.linalg.norm(sent)), float(np.linalg.norm(now - start))
        time.sleep(0.1)
        layer.send_action(Action.ee(np.zeros(3), 0.0))


def test_episodes_with_resets_on_franky_sim(server):
    """3 episodes of 6 agent steps from a randomised home (2 cm), random actions: every episode runs to its step
    limit, resets home, and commanded the hand through the safety layer to franky; no safety stop; the measured hand
    follows a franky command.

    What the arm measures at a given moment depends on how soon franky-sim (another process) starts each motion: on
    a loaded machine it once measured 0.5 mm of motion over a whole episode (and none of its start offset), so the
    per-episode checks are on what was sent to franky, and the measured one waits for the arm to arrive."""
    from robotrl.workflows.run_env import make_robot_env

    rng = np.random.default_rng(0)
    env = make_robot_env(franka_config(server.host), ENV, seed=0, home_noise_m=0.02)
    try:
        sent = record_sends(env.robot)
        starts, offsets = [], []
        for episode in range(3):
            sent.clear()
            obs, _ = env.reset(seed=episode)
            offsets.append(np.sum(sent, axis=0))  # the seeded start offset, as sent
            starts.append(obs["state"][:3].copy())
            sent.clear()
            truncated, steps = False, 0
            while not truncated:
                obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
                steps += 1
                assert reward == 0.0 and not terminated and "success" not in info  # a real arm: no reward
            assert steps == 6 and "safety_stop" not in info and env.last_episode.stop is None
            assert len(sent) == 12 and np.abs(np.sum(sent, axis=0)).max() > 1e-3  # the hand was commanded to move
        kinds = [e["kind"] for e in env.robot.events]
        assert kinds.count("home") == 3
        # the start offsets follow the seeds, each within 2 cm; measured starts are within that (+ tracking error)
        # of one home (an upper bound: a late motion only stays closer to home)
        assert np.abs(offsets[0] - offsets[1]).max() > 1e-3 and np.abs(offsets).max() <= 0.02 + 1e-9
        assert np.abs(np.array(starts) - np.mean(starts, axis=0)).max() < 0.04
        # franky-sim executes what the layer sends: the measured hand reaches a 1 cm move (waited for, not timed)
        commanded, travelled = wait_until_measured_follows(env.robot)
        assert commanded > 4e-3 and travelled > commanded - 2e-3, (commanded, travelled)
    finally:
        env.close()
    assert env.robot.state.value == "disconnected"


def test_sim2real_gap_report_sim_vs_franky_sim(server):
    """One policy, the same seeds, robot=sim and robot=franka (franky-sim) side by side."""
    from robotrl.workflows.sim2real import gap_report, robot_config, table

    sim = robot_config("sim", {"limits.watchdog_ms": "2000", "limits.overrun_factor": "1000"})
    report = gap_report(lambda obs: np.array([0.5, 0.0, -0.5, -1.0], np.float32), ENV,
                        {"sim": sim, "franka": franka_config(server.host)}, seeds=[0, 1], home_noise_m=0.01)
    sim_col, franka_col = report["robots"]["sim"], report["robots"]["franka"]
    assert report["reference"] == "sim" and [e["seed"] for e in franka_col["episodes"]] == [0, 1]
    assert sim_col["success_rate"] is not None and franka_col["success_rate"] is None  # only the sim has a detector
    assert franka_col["return_mean"] is None and all(e["steps"] == 6 for e in franka_col["episodes"])
    assert report["gap"]["franka"]["action_mean"] == [0.0, 0.0, 0.0, 0.0]  # same deterministic policy
    # both arms moved the hand (~5 mm per send requested, 2 sends per step) and nothing stopped an episode
    assert 2.0 < sim_col["hand_step_mm"] < 15.0 and 2.0 < franka_col["hand_step_mm"] < 15.0, report
    assert sim_col["safety_stops"] == franka_col["safety_stops"] == 0
    assert "hand_step_mm" in table(report) and "franka" in table(report).splitlines()[0]
