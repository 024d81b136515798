"""MoDem-V2's own workflow on robot=sim at pipeline scale: demos recorded with a (scripted) teleop device through
`robotrl record`, a success classifier trained from their labels, then `agent=modem_v2` from pixels + proprioception
on the sim arm with a person taking over, its final evaluation beside trivial policies on the same seeds. This
checks that the pieces fit (formats, shapes, labels, the reward from the recorded labels), not that it learns: at
200 frames MoDem-V2's agency handover has not begun (handover_schedule starts at step 5000), so every evaluation
is the frozen BC policy of 3 scripted, not goal-directed, demos, and the final eval equals the first one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_record import ENV, X, Y, Z, record

# the arm's limits as the demos were recorded (tests.test_record.FAST): with the sim's default ee_max_acceleration
# (10 m/s^2) the safety layer clipped ~40 of the 40 sends of every training episode that the demos made unclipped
ROBOT_TRAIN = [
    "robot=sim", "robot.limits.control_hz=100", "robot.limits.ee_max_velocity=1.0",
    "robot.limits.ee_max_acceleration=200.0",
    "robot.limits.overrun_factor=1000", "robot.limits.watchdog_ms=5000", "robot.limits.driver_timeout_ms=5000",
    "env.obs_type=pixels_proprio", "env.max_episode_steps=40", "frames=200", "seed_frames=40", "eval_episodes=2",
    "eval_every_frames=200", "checkpoint_every_frames=200", "compare_baselines=true",
    "robot_env.operator=tests.test_robot_env:push_operator",
]


@pytest.mark.slow  # ~1-2 min on 2 shared cores (the classifier's 300 steps included)
def test_modem_v2_trains_from_recorded_demos_and_their_labels(compose_cfg, tmp_path, capsys):
    from robotrl.rewards.success_classifier import labelled_frames

    from robotrl.workflows.train import Trainer
    from tests.test_modem import TINY_CFG

    session = tmp_path / "demos"
    steps = [{"delta_m": X, "repeat": 6}, {"delta_m": Z, "gripper": 1.0, "repeat": 4}, {"events": ["success"]},
             {"delta_m": Y, "repeat": 8}, {"events": ["failure"]},
             {"delta_m": Z, "repeat": 5}, {"delta_m": X, "repeat": 5}, {"events": ["success"]}]
    assert record(tmp_path, "demos", steps, "episodes=3", f"out={session}", "export=none",
                  *[e for e in ENV if "frame_stack" not in e]) == 0
    # the classifier's training frames carry the person's labels: one success frame per success episode
    _, labels = labelled_frames([], [session], final_frames=5, initial_frames=10)
    assert labels.sum() == 2 and len(labels) == 11 + 9 + 11
    cfg = compose_cfg("agent=modem_v2", *TINY_CFG, f"agent.demos={session}", "agent.num_demos=3", *ROBOT_TRAIN,
                      # 50 steps left the classifier at P = 0.500 on every frame (loss ln 2): reward 0 on every step
                      "reward=success_classifier", f"reward.rollouts={session}", "reward.steps=300",
                      "reward.image_size=32", tiny=False)
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.reward_model.train_stats["train_balanced_accuracy"] > 0.5  # it tells the labels apart somewhat
    summary = trainer.train()
    assert summary["frames"] == 200
    final, baselines = summary["final_eval"], summary["baselines"]
    assert {"random", "constant"} <= set(baselines) and "vs_baselines" in summary
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(float(r.split(",")[header.index("operator_steps")]) == 3.0 for r in rows[1:])
    model_reward = [float(r.split(",")[header.index("model_reward")]) for r in rows[1:]]
    assert max(model_reward) > 0  # the reward from the labels reaches the learner (not the constant 0 of an unfit one)
    assert all(float(r.split(",")[header.index("interventions")]) <= 2 for r in rows[1:])  # the demos' arm limits
    assert trainer.agent.handover_prob(trainer.step) == 0.0  # the frozen BC policy acted: final eval == first eval
    assert final["return_mean"] == pytest.approx(trainer.run.state.first_eval["return_mean"], rel=1e-9)
    print(json.dumps({"model_reward_per_episode": model_reward,
                      "final_eval": {k: final[k] for k in ("return_mean", "success_rate") if k in final},
                      "random": {k: baselines["random"].get(k) for k in ("return_mean", "success_rate")},
                      "constant": {k: baselines["constant"].get(k) for k in ("return_mean", "success_rate", "value")}}))
    assert np.isfinite(final["return_mean"])
