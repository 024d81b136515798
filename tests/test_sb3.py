"""Stable-Baselines3 agents (agent=sb3_sac|sb3_ppo) through the trainer: files, exact resume, eval, rewards, errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from robotrl.errors import ConfigError
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors

# 50-step episodes (100 frames at action repeat 2) on state observations; seed_frames = SAC's learning_starts.
SB3_TINY = [
    "env=dmc/cartpole_balance", "env.obs_type=state", "env.max_episode_steps=100", "env.video_size=32",
    "frames=400", "seed_frames=100", "eval_every_frames=200", "eval_episodes=1", "checkpoint_every_frames=200",
    "replay.capacity=2000", "torch_threads=1", "device=cpu", "compare_baselines=false", "save_video=false",
]
AGENTS = {
    "sb3_sac": ["agent=sb3_sac", "agent.batch_size=32", "agent.policy_kwargs.net_arch=[64,64]"],
    "sb3_ppo": ["agent=sb3_ppo", "agent.n_steps=64", "agent.batch_size=32", "agent.n_epochs=2"],
}
PIXELS = ["env.obs_type=pixels", "env.image_size=32", "agent.cnn=drqv2", "agent.cnn_features_dim=32"]
UPDATE_METRIC = {"sb3_sac": "critic_loss", "sb3_ppo": "value_loss"}


@pytest.fixture
def sb3_cfg(compose_cfg):
    def _compose(agent: str, *overrides: str):
        return compose_cfg(*SB3_TINY, *AGENTS[agent], *overrides, tiny=False)

    return _compose


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sb3_episodes(cfg, episodes: int, reward_model=None) -> tuple:
    """SB3's loop as the trainer runs it, without the rest of the trainer: the training env of
    ``factory.build_one_env`` (reward layer on), ``SB3Parts`` and the episode callback, whose run hands each finished
    episode's EpisodeStats to a list and is done after ``episodes``. Returns (parts, the stats, the envs)."""
    from types import SimpleNamespace

    from robotrl.workflows.sb3_train import SB3Parts, _EpisodeCallback
    from robotrl.workflows.trainer.factory import build_one_env
    from robotrl.workflows.trainer.schedule import Schedule
    from robotrl.workflows.trainer.state import RunState

    envs = build_one_env(cfg, reward_model, run_dir=None)
    repeat = int(cfg.env.action_repeat)
    parts = SB3Parts.build(cfg, envs["env"], "cpu", repeat)
    finished: list = []
    run = SimpleNamespace(state=RunState(Schedule.from_config(cfg, repeat), repeat), agent=parts.agent,
                          progress=SimpleNamespace(steps=lambda step: None), episode_finished=finished.append,
                          between_episodes=lambda: len(finished) >= episodes)
    callback = _EpisodeCallback(run, parts.agent.off_policy)
    parts.agent.learn(episodes * int(envs["env_info"]["max_agent_steps"]) + 1, callback)
    assert callback.finished and len(finished) == episodes
    return parts, finished, envs


def test_ppo_metrics_reach_the_episode_rows_and_its_checkpoint_has_no_replay(sb3_cfg, tmp_path):
    """PPO through SB3's loop as the trainer runs it: its train() metrics (value_loss) reach the episodes' rows; it
    has no replay to checkpoint (on-policy: ``SB3Parts.replay`` is None, ``save_run`` writes none)."""
    from robotrl.workflows.trainer.schedule import Schedule
    from robotrl.workflows.trainer.state import RunState, save_run
    from robotrl.workflows.trainer.stats import train_row

    cfg = sb3_cfg("sb3_ppo", "env.max_episode_steps=40", "agent.n_steps=16", "agent.batch_size=16")
    parts, episodes, envs = sb3_episodes(cfg, 2)
    assert [s.length for s in episodes] == [20, 20] and parts.replay is None
    assert np.isfinite(train_row(episodes[-1], {}, None, False, "")[UPDATE_METRIC["sb3_ppo"]])
    state = RunState(Schedule.from_config(cfg, 2), 2, step=40, episode=2)
    assert cfg.checkpoint_replay  # asked for, but there is none
    path = save_run(tmp_path, cfg, state, parts.agent, None, parts.replay, envs["env_info"])
    assert path.name == "frame_000000000080" and not (path / "replay").exists()


# sb3_ppo: ~5 s; test_ppo_metrics_reach_the_episode_rows_and_its_checkpoint_has_no_replay holds what differs
@pytest.mark.parametrize("agent", ["sb3_sac", pytest.param("sb3_ppo", marks=pytest.mark.slow)])
def test_state_run_writes_everything(sb3_cfg, tmp_path, agent, monkeypatch):
    from robotrl.workflows.sb3_train import SB3Trainer

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # SB3's default logger would leave SB3-<date> here
    trainer = Trainer(sb3_cfg(agent), tmp_path)
    assert isinstance(trainer, SB3Trainer)
    summary = trainer.train()
    for name in ("train.csv", "eval.csv", "run.json", "summary.json", "curve.png", "checkpoints/latest"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert [int(r["frame"]) for r in _rows(tmp_path / "eval.csv")] == [0, 200, 400]
    train_rows = _rows(tmp_path / "train.csv")
    assert [int(r["frame"]) for r in train_rows] == [100, 200, 300, 400]  # frames = steps x action_repeat
    assert all(float(r["episode_length"]) == 50 for r in train_rows)
    assert np.isfinite(float(train_rows[-1][UPDATE_METRIC[agent]]))  # SB3's train/ metrics reach train.csv
    assert summary["frames"] == 400 and summary["agent"] == agent
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "frame_000000000200", "frame_000000000400", "latest"]
    assert (tmp_path / "checkpoints" / "frame_000000000400" / "replay").exists() == (agent == "sb3_sac")
    assert not list(scratch.glob("SB3-*"))


def test_sac_resume_is_exact(sb3_cfg, tmp_path):
    """SAC: 200 frames, stop, resume to 400 == 400 in one go (networks, optimisers, entropy coef, replay)."""
    full = Trainer(sb3_cfg("sb3_sac", "frames=400"), tmp_path / "full")
    full.train()
    Trainer(sb3_cfg("sb3_sac", "frames=200"), tmp_path / "split").train()
    resumed = Trainer(sb3_cfg("sb3_sac", "frames=400", "resume=true"), tmp_path / "split")
    assert resumed.step == 100 and resumed.episode == 2 and resumed.agent.model.num_timesteps == 100
    resumed.train()
    a, b = full.agent.state_dict(), resumed.agent.state_dict()
    assert_same_tensors(a["params"], b["params"])  # policy (actor, critics, targets) + all optimisers
    assert_same_tensors(a["variables"], b["variables"], min_count=0)  # log_ent_coef
    assert a["counters"] == b["counters"] and a["action_space_rng"] == b["action_space_rng"]
    for x, y in zip(full.replay._arrays().values(), resumed.replay._arrays().values(), strict=True):
        assert np.array_equal(x, y)
    assert [r["frame"] for r in _rows(tmp_path / "split" / "eval.csv")] == ["0", "200", "400"]
    full_rows, split_rows = _rows(tmp_path / "full" / "train.csv"), _rows(tmp_path / "split" / "train.csv")
    assert [r["episode_return"] for r in full_rows] == [r["episode_return"] for r in split_rows]


def test_ppo_resume_continues_the_run(sb3_cfg, tmp_path):
    """PPO resumes networks, optimiser, counters (not the partial rollout: not bit-exact, see agents/sb3.py)."""
    first = Trainer(sb3_cfg("sb3_ppo", "frames=200"), tmp_path)
    first.train()
    updates = first.agent.model._n_updates
    resumed = Trainer(sb3_cfg("sb3_ppo", "frames=400", "resume=true"), tmp_path)
    assert resumed.step == 100 and resumed.agent.model._n_updates == updates
    assert_same_tensors(first.agent.state_dict()["params"], resumed.agent.state_dict()["params"])
    summary = resumed.train()
    assert summary["frames"] == 400 and resumed.agent.model._n_updates > updates
    assert [int(r["frame"]) for r in _rows(tmp_path / "train.csv")] == [100, 200, 300, 400]
    assert [int(r["frame"]) for r in _rows(tmp_path / "eval.csv")] == [0, 200, 400]


def test_interrupt_keeps_the_last_checkpoint(sb3_cfg, tmp_path):
    """Ctrl-C during training leaves the previous checkpoint intact and resumable."""
    trainer = Trainer(sb3_cfg("sb3_sac", "frames=400"), tmp_path)
    original = trainer.run.evaluate

    def interrupt_at_400():
        if trainer.frame >= 400:
            raise KeyboardInterrupt
        return original()

    trainer.run.evaluate = interrupt_at_400
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "frame_000000000200"
    resumed = Trainer(sb3_cfg("sb3_sac", "frames=400", "resume=true"), tmp_path)
    assert resumed.train()["frames"] == 400


def test_a_pixel_checkpoint_plays_the_policy_it_was_trained_to(sb3_cfg, tmp_path, agent="sb3_ppo"):
    """The parts behind `robotrl eval` of an SB3 run: an episode of SB3's loop on 32x32 pixels (DrQ-v2's CNN), the
    run's checkpoint (``save_run``), then ``load_policy``: the loaded policy plays the eval episode exactly as the
    training agent's deterministic policy does (the same actions, the same return). PPO: test_pixels_and_robotrl_eval
    runs the whole command for SAC."""
    from robotrl.workflows.policy import load_policy
    from robotrl.workflows.rollout import run_episodes
    from robotrl.workflows.trainer.schedule import Schedule, eval_seeds
    from robotrl.workflows.trainer.state import RunState, save_run

    cfg = sb3_cfg(agent, *PIXELS, "frames=200", "env.max_episode_steps=40", "agent.n_steps=16",
                  "agent.batch_size=16")
    parts, episodes, envs = sb3_episodes(cfg, 1)
    assert parts.agent.model._n_updates > 0  # the weights moved away from the seeded initial ones
    state = RunState(Schedule.from_config(cfg, 2), 2, step=episodes[0].length, episode=1)
    path = save_run(tmp_path, cfg, state, parts.agent, None, parts.replay, envs["env_info"])
    loaded = load_policy(path, "cpu")
    assert loaded.cfg.agent.name == agent
    seeds = eval_seeds(1)
    trained = run_episodes(envs["eval_env"], lambda obs: parts.agent.act(obs, 0, eval_mode=True), seeds, None)
    played = run_episodes(envs["eval_env"], loaded, seeds, None, on_reset=loaded.reset)
    assert trained[0]["length"] == played[0]["length"] == 20
    assert played[0]["return"] == trained[0]["return"]


# sb3_ppo: ~11 s; test_a_pixel_checkpoint_plays_the_policy_it_was_trained_to holds its parts; the `robotrl eval`
# command on an SB3 run stays in the default suite with sb3_sac
@pytest.mark.parametrize("agent", ["sb3_sac", pytest.param("sb3_ppo", marks=pytest.mark.slow)])
def test_pixels_and_robotrl_eval(sb3_cfg, tmp_path, agent):
    """A tiny-pixel run (DrQ-v2's CNN at 32x32) with an eval video, then `robotrl eval` on its checkpoint."""
    from robotrl.cli import main

    run = tmp_path / "run"
    Trainer(sb3_cfg(agent, *PIXELS, "frames=100", "eval_every_frames=100", "eval_at_start=false",
                    "save_video=true"), run).train()  # one episode, one evaluation
    assert (run / "videos" / "eval_000000000100.mp4").stat().st_size > 0
    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", f"checkpoint={run}", "episodes=1", "video=false", f"out={out}", "device=cpu"])
    assert exit_info.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"] == agent and summary["episodes"] == 1 and summary["length_mean"] == 50
    assert summary["return_mean"] == pytest.approx(float(_rows(run / "eval.csv")[-1]["episode_return"]))


def test_sb3_trains_on_the_model_reward_and_keeps_both_sums(sb3_cfg):
    """reward=clip_tiny through SB3's loop as the trainer runs it: the episode return SAC is given is the model's
    reward (replace mode, weight 1), and the episode's stats (its train.csv row) keep both sums."""
    from robotrl.rewards import make_reward

    cfg = sb3_cfg("sb3_sac", "reward=clip_tiny", "frames=200", "env.max_episode_steps=40")
    parts, episodes, _ = sb3_episodes(cfg, 2, make_reward(cfg.reward))
    assert [s.length for s in episodes] == [20, 20]
    assert parts.agent.model.replay_buffer.pos == 40
    for stats in episodes:
        assert {"model_reward", "gt_reward"} <= set(stats.rewards)
        assert stats.ret == pytest.approx(stats.rewards["model_reward"], rel=1e-5)
        assert stats.rewards["gt_reward"] != pytest.approx(stats.rewards["model_reward"])
    stored = float(parts.agent.model.replay_buffer.rewards[:20].sum())  # what SAC learns from: the model reward
    assert stored == pytest.approx(episodes[0].rewards["model_reward"], rel=1e-5)


@pytest.mark.slow  # a trainer run (~8 s); test_sb3_trains_on_the_model_reward_and_keeps_both_sums holds it
def test_reward_model_is_applied(sb3_cfg, tmp_path):
    """reward=clip_tiny: SAC trains on the model reward; train.csv keeps both sums, eval stays ground truth."""
    Trainer(sb3_cfg("sb3_sac", "reward=clip_tiny", "frames=200", "eval_at_start=false"), tmp_path).train()
    rows = _rows(tmp_path / "train.csv")
    assert {"model_reward", "gt_reward"} <= set(rows[0])
    for row in rows:  # replace mode, weight 1: the agent's return is the model reward
        assert float(row["episode_return"]) == pytest.approx(float(row["model_reward"]), rel=1e-5)
        assert float(row["gt_reward"]) != pytest.approx(float(row["model_reward"]))


@pytest.mark.parametrize(("override", "message"), [
    ("+agent.bogus_kwarg=1", "agent.bogus_kwarg=1 is not an argument of SB3 SAC; valid: "),
    ("+agent.buffer_size=10", "use replay.capacity"),
    ("agent.algorithm=DQN", "agent.algorithm='DQN' is not one of SAC, PPO"),
    ("agent.train_freq=4", "agent.train_freq=4: robotrl checkpoints at episode ends"),
    ("agent.learning_rate=fast", "SB3 SAC rejected the agent config"),
    ("replay.capacity=1000000000000", "replay.capacity=1000000000000 needs .* GiB for SB3's replay buffer"),
])
def test_bad_agent_config(sb3_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        Trainer(sb3_cfg("sb3_sac", override), tmp_path)
    assert "\n" not in str(error.value)


def test_nature_cnn_needs_36_pixels(sb3_cfg, tmp_path):
    with pytest.raises(ConfigError, match="agent.cnn=nature .* at least 36x36, got env.image_size=32"):
        Trainer(sb3_cfg("sb3_sac", *PIXELS, "agent.cnn=nature"), tmp_path)


def test_cli_reports_bad_kwarg_in_one_line(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "robotrl.cli", "train", *SB3_TINY, *AGENTS["sb3_sac"],
                           "+agent.bogus_kwarg=1", f"run_dir={tmp_path}"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        next(line for line in proc.stderr.splitlines() if line.startswith("robotrl: error: agent.bogus_kwarg=1"))]


def test_sac_learns_inverted_pendulum(sb3_cfg, tmp_path):
    """Learning sanity (can fail): SAC from state keeps the pole up far longer than a uniform random policy.

    Random episodes end after ~7 steps; at 3000 steps SAC gave 76 / 85 / 102 over seeds 1-3 (~13 s each).
    """
    cfg = sb3_cfg("sb3_sac", "env=gym/inverted_pendulum", "env.action_repeat=1", "env.max_episode_steps=null",
                  "frames=3000", "seed_frames=500", "eval_every_frames=3000", "eval_episodes=3",
                  "eval_at_start=false", "compare_baselines=true", "replay.capacity=10000", "tensorboard=false",
                  "agent.batch_size=256")
    summary = Trainer(cfg, tmp_path).train()
    final, random = summary["final_eval"]["return_mean"], summary["baselines"]["random"]["return_mean"]
    assert final > max(50.0, 5 * random), (final, random)
