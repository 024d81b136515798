"""The trainer's parts one at a time (robotrl.workflows.trainer): which trainer a config gets, the schedule, the
run state and its checkpoint, the RNG format, the episode builder, train.csv rows and the one-env collector. Each
runs in well under a second, without building a whole trainer."""

from __future__ import annotations

import random
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robotrl.episodes import EpisodeBuilder, record_episode
from robotrl.errors import CheckpointError, ConfigError, DivergenceError
from robotrl.rng import get_rng_state, set_rng_state
from robotrl.workflows.trainer.factory import checkpoint_to_resume, trainer_kind
from robotrl.workflows.trainer.schedule import Schedule
from robotrl.workflows.trainer.state import Discards, RunState, restore_run, save_run
from robotrl.workflows.trainer.stats import EpisodeStats, train_row


def _cfg(**overrides):
    agent = {"name": "drqv2", "_target_": "robotrl.agents.drqv2.DrQV2Agent"}  # capabilities are read from the class
    base = {"env": {"num_envs": 1}, "collector": "local", "agent": agent, "robot": {"name": "none"}}
    return OmegaConf.merge(base, overrides)


# ------------------------------------------------------------------------------------------ which trainer
@pytest.mark.parametrize(("overrides", "kind"), [
    ({}, "local"), ({"env": {"num_envs": 3}}, "vector"), ({"collector": "ray"}, "ray"),
    ({"agent": {"name": "sb3_sac", "_target_": "robotrl.agents.sb3.SB3Agent"}}, "sb3"),
])
def test_each_config_gets_its_kind_of_trainer(overrides, kind):
    assert trainer_kind(_cfg(**overrides)) == kind


@pytest.mark.parametrize(("overrides", "message"), [
    ({"robot": {"name": "sim"}, "collector": "ray"}, "robot=sim drives one arm from this process"),
    ({"robot": {"name": "mock"}, "env": {"num_envs": 2}}, "robot=mock drives one arm from this process"),
    ({"collector": "ray", "env": {"num_envs": 2}}, "env.num_envs=2 with collector=ray"),
    ({"agent": {"name": "sb3_sac", "_target_": "robotrl.agents.sb3.SB3Agent"}, "env": {"num_envs": 2}},
     "Stable-Baselines3 agents run SB3's own loop on one env"),
])
def test_every_trainer_kind_passes_the_same_checks(overrides, message):
    """The robot check used to run only when ``Trainer`` itself picked the subclass: ``RayTrainer(cfg)`` built a
    Ray learner for an arm. Every trainer is now made by ``make_trainer``, which asks ``trainer_kind`` first."""
    with pytest.raises(ConfigError, match=message):
        trainer_kind(_cfg(**overrides))


def test_make_trainer_is_the_only_way_to_a_ray_trainer(compose_cfg, tmp_path):
    from robotrl.workflows import ray_collector
    from robotrl.workflows.train import Trainer

    assert not hasattr(ray_collector, "RayTrainer")  # the subclass that skipped the checks is gone
    cfg = compose_cfg("robot=sim", "collector=ray", "env=metaworld/reach", "env.obs_type=proprio", "reward=env")
    with pytest.raises(ConfigError, match="robot=sim drives one arm"):
        Trainer(cfg, tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before anything was built or written


def test_a_start_over_checkpoints_is_refused_and_a_resume_needs_one(compose_cfg, tmp_path):
    from robotrl.workflows.train import Trainer

    (tmp_path / "checkpoints" / "frame_000000000200").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds checkpoints; pass resume=true"):
        Trainer(compose_cfg("frames=200"), tmp_path)  # before any env or agent is built
    with pytest.raises(ConfigError, match="already holds checkpoints; pass resume=true"):
        checkpoint_to_resume(OmegaConf.create({"resume": False}), tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["frame_000000000200"]  # nothing overwritten
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        checkpoint_to_resume(OmegaConf.create({"resume": True}), tmp_path / "empty")
    assert checkpoint_to_resume(OmegaConf.create({"resume": "auto"}), tmp_path / "empty") is None


# ------------------------------------------------------------------------------------------ schedule
def test_the_schedule_says_what_is_due_between_episodes():
    s = Schedule(total_steps=100, eval_every=200, checkpoint_every=300, eval_episodes=1, next_eval_frame=200,
                 next_ckpt_frame=300)
    assert not s.due(step=50, frame=100, last_eval_frame=0).any
    due = s.due(step=100, frame=200, last_eval_frame=0)  # done: eval at 200 due, the end checkpoints
    assert (due.eval, due.checkpoint, due.done) == (True, True, True)
    s.evaluated(450)
    s.checkpointed(450)
    assert (s.next_eval_frame, s.next_ckpt_frame) == (600, 600)
    assert s.due(step=10, frame=20, last_eval_frame=None, preempted=True) == s.due(10, 20, None, True)
    assert s.due(step=10, frame=20, last_eval_frame=None, preempted=True).any  # preempted: drain, checkpoint
    assert not s.due(step=100, frame=600, last_eval_frame=600, preempted=True).preempted  # done: nothing to hand
    no_eval = Schedule(100, 200, 300, eval_episodes=0, next_eval_frame=0, next_ckpt_frame=300)
    assert not no_eval.due(step=100, frame=200, last_eval_frame=None).eval and not no_eval.eval_due(0)


def test_the_final_policy_is_always_evaluated():
    """frames < eval_every_frames: the end is an eval of the final policy (once), then the final checkpoint."""
    s = Schedule(total_steps=100, eval_every=10_000, checkpoint_every=100_000, eval_episodes=1, next_eval_frame=0,
                 next_ckpt_frame=100_000)
    assert s.eval_due(0)
    s.evaluated(0)
    assert not s.due(step=50, frame=100, last_eval_frame=0).any
    end = s.due(step=100, frame=200, last_eval_frame=0)
    assert end.eval and end.checkpoint and end.done
    assert not s.due(step=100, frame=200, last_eval_frame=200).eval  # already evaluated at the final frame


# ------------------------------------------------------------------------------------------ state and checkpoint
class _Agent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 2)


def _state(discards: Discards | None = None) -> RunState:
    return RunState(Schedule(100, 200, 200, 1, 0, 200), action_repeat=2, discards=discards)


def _ckpt_cfg(name: str = "drqv2"):
    return OmegaConf.create({"agent": {"name": name}, "reward": {"name": "env"}, "checkpoint_replay": False,
                             "checkpoint_keep": 2})


def test_a_checkpoint_restores_counters_weights_and_global_rngs(tmp_path):
    state, agent = _state(Discards(episodes=1, steps=9)), _Agent()
    state.step, state.episode = 40, 2
    state.evaluated({"return_mean": 1.0})
    state.schedule.checkpointed(80)
    path = save_run(tmp_path, _ckpt_cfg(), state, agent, None, None, {"suite": "dmc"})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restored, other = _state(Discards()), _Agent()
    restore_run(path, _ckpt_cfg(), restored, other, None, lambda p: None)
    assert (restored.step, restored.episode, restored.frame) == (40, 2, 80)
    assert (restored.schedule.next_eval_frame, restored.schedule.next_ckpt_frame) == (200, 200)
    assert restored.first_eval == {"frame": 80, "return_mean": 1.0} and restored.discards == Discards(1, 9)
    assert torch.equal(other.w.weight, agent.w.weight)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # the RNGs continue as saved


def test_a_checkpoint_of_another_agent_is_refused(tmp_path):
    path = save_run(tmp_path, _ckpt_cfg("drqv2"), _state(), _Agent(), None, None, {})
    with pytest.raises(CheckpointError, match="written by agent 'drqv2', expected 'another_agent'"):
        restore_run(path, _ckpt_cfg("another_agent"), _state(), _Agent(), None, lambda p: None)


def test_the_rng_state_survives_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    torch.save(get_rng_state(), tmp_path / "rng.pt")
    want = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1)) == want


# ------------------------------------------------------------------------------------------ episodes and rows
class _Counter(gym.Env):
    """obs["pixels"]: 2 stacked 1-channel frames holding the step count; 3 steps; success at step 2."""

    observation_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (2, 1, 1), np.uint8)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"pixels": np.zeros((2, 1, 1), np.uint8)}, {}

    def step(self, action):
        self.t += 1
        obs = {"pixels": np.full((2, 1, 1), self.t, np.uint8)}
        return obs, float(action[0]), False, self.t == 3, {"success": self.t == 2, "reward_invalid": self.t == 1}


def test_record_episode_builds_the_episode_the_replay_stores():
    builder, seen = EpisodeBuilder(frame_channels=1), []
    played = record_episode(_Counter(), lambda obs: np.array([0.5], np.float32), seed=3, builder=builder,
                            on_step=lambda *step: seen.append(step[1]))
    assert (played.ret, played.length, played.success, played.seed) == (1.5, 3, True, 3)
    ep = played.episode
    assert ep.obs["pixels"].shape == (4, 1, 1, 1) and ep.obs["pixels"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert ep.success.tolist() == [False, True, False] and ep.reward_invalid.tolist() == [True, False, False]
    assert seen == [0.5, 0.5, 0.5]
    part = builder.build(1, 3)  # an operator's segment: steps 1..2, observations 1..3
    assert part.obs["pixels"][:, 0, 0, 0].tolist() == [1, 2, 3] and len(part.action) == 2
    with pytest.raises(ValueError, match="steps 2..2 of an episode of 3 steps"):
        builder.build(2, 2)
    assert EpisodeBuilder(flags=False).reward_invalid == [] and builder.build().reward_invalid is not None


def test_train_row_update_columns_follow_the_agents_order_in_every_process():
    # a set of metric names iterates in a hash order that changes per process (PYTHONHASHSEED): three seeds of
    # one sweep wrote train.csv with their columns in three different orders
    names = [f"critic_dormant_ratio/q{i}.l{j}" for i in range(6) for j in range(5)]
    stats = EpisodeStats()
    stats.updates = [{}, dict.fromkeys(names[:20], 1.0), dict.fromkeys(names, 2.0)]
    row = train_row(stats, {"step": 5}, None, robot=False, where="episode 1")
    assert list(row) == ["step", *names]


def test_train_rows_keep_discard_counts_apart_from_reward_sums():
    stats = EpisodeStats()
    stats.add_step(1.0, {"gt_reward": 2.0, "success": True})
    stats.updates = [{"critic_loss": 1.0}, {"critic_loss": 3.0}, {}]
    row = train_row(stats, {"step": 5}, Discards(1, 9).columns(), robot=False, where="episode 1")
    assert list(row) == ["step", "success", "gt_reward", "discarded_episodes", "discarded_steps", "critic_loss"]
    assert row["critic_loss"] == 2.0 and stats.rewards == {"gt_reward": 2.0}  # the stats are left alone
    stats.updates = [{"critic_loss": float("nan")}]
    with pytest.raises(DivergenceError, match="critic_loss became nan during episode 1"):
        train_row(stats, {}, None, robot=False, where="episode 1")


# ------------------------------------------------------------------------------------------ the one-env collector
class _Recorder:
    """An agent and a replay that log what the collector calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def act(self, obs, step, eval_mode):
        self.calls.append(("act", step))
        return np.array([1.0], np.float32)

    def update(self, replay, step):
        self.calls.append(("update", step))
        return {"loss": float(step)}

    def reset(self):
        self.calls.append(("reset",))

    def add_first(self, obs):
        self.calls.append(("add_first",))

    def add(self, action, reward, obs, terminated, truncated, reward_invalid):
        self.calls.append(("add", reward_invalid))


@pytest.mark.parametrize("update_at", ["step", "episode_end"])
def test_the_one_env_collector_updates_before_each_step_or_after_the_episode(update_at):
    from robotrl.workflows.trainer.console import GracefulInterrupt
    from robotrl.workflows.trainer.local import LocalCollector

    rec = _Recorder()
    run = SimpleNamespace(agent=rec, replay=rec, state=_state(), robot=None, env=_Counter(),
                          cfg=OmegaConf.create({"seed": 0}), progress=None, drain_due=lambda: True)
    stats, = list(LocalCollector(seed_steps=1, update_at=update_at).collect(run, GracefulInterrupt()))
    assert run.state.step == 3 and stats.length == 3 and [u["loss"] for u in stats.updates] == [1.0, 2.0]
    acts = [c for c in rec.calls if c[0] != "add_first" and c[0] != "reset"]
    if update_at == "step":
        assert acts == [("act", 0), ("add", True), ("act", 1), ("update", 1), ("add", False), ("act", 2),
                        ("update", 2), ("add", False)]
    else:  # on an arm: the same updates, once the episode is over
        assert acts == [("act", 0), ("add", True), ("act", 1), ("add", False), ("act", 2), ("add", False),
                        ("update", 1), ("update", 2)]


def test_without_a_terminal_a_slow_run_logs_step_lines_between_its_episode_lines(monkeypatch):
    """Logs get one line per episode; MR.Q from pixels on a CPU takes ~40 min per episode, so a step line comes at
    most every LOG_EVERY_S in between (a terminal has the live bar instead)."""
    import io

    from rich.console import Console

    from robotrl.workflows.trainer import console

    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    log = io.StringIO()
    with console.ProgressBar(Console(file=log, force_terminal=False), total_steps=1000, step=0, frame=0) as bar:
        bar.steps(100)
        bar.steps(200)
    assert "train: step 100/1000" in log.getvalue() and "train: step 200/1000" in log.getvalue()
    terminal = io.StringIO()
    with console.ProgressBar(Console(file=terminal, force_terminal=True), total_steps=1000, step=0, frame=0) as bar:
        bar.steps(100)
    assert "train: step" not in terminal.getvalue()


def test_a_step_with_a_made_up_observation_is_not_stored(tmp_path):
    """On an arm, a camera that gives no valid frame ends the episode truncated on the last valid observation again,
    flagged ``stale_observation``. Stored as the step's next observation it teaches a world model that the
    executed action changed nothing; the episode must end at the last real observation instead."""
    from robotrl.replay import ReplayBuffer
    from robotrl.workflows.trainer.local import LocalCollector
    from tests.trainer_fakes import FakeAgent, parts_loop

    class CameraLostAtStep2(gym.Env):
        """Frames whose pixels are the step count; step 2 is RobotEnv's step after a CameraError."""

        observation_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (6, 2, 2), np.uint8)})
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def frames(self, t):  # a stack of 2: the previous frame, then this one
            return {"pixels": np.concatenate([np.full((3, 2, 2), max(t - 1, 0), np.uint8),
                                              np.full((3, 2, 2), t, np.uint8)])}

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return self.frames(0), {}

        def step(self, action):
            self.t += 1
            if self.t == 2:  # the last valid frame again (its stack shifted by one), the episode truncated
                return {"pixels": np.full((6, 2, 2), 1, np.uint8)}, 0.0, False, True, {"stale_observation": True}
            return self.frames(self.t), 1.0, False, False, {}

    env = CameraLostAtStep2()
    replay = ReplayBuffer(100, env.observation_space, 1, frame_stack=2, nstep=3, discount=0.99)
    loop = parts_loop(tmp_path, env, LocalCollector(seed_steps=100, update_at="step"), FakeAgent(), replay,
                      frames=4, checkpoint_every=10**9)
    loop.train()
    assert loop.run.state.step == 2  # the arm took both steps
    assert replay._num_actions == 1  # one real transition (obs 0 -> obs 1); the made-up one is not in the replay
    assert replay._arrays["pixels"][: replay._head, 0, 0, 0].tolist() == [0, 1]  # the newest frames stored
    batch = replay.sample(4)
    assert batch.next_obs["pixels"][:, -1].flatten().unique().tolist() == [1]


def test_a_lerobot_import_is_redone_when_the_dataset_changed(tmp_path, monkeypatch):
    """agent.demos=<LeRobotDataset> was imported once and reused forever: a dataset re-exported with more episodes
    (robotrl record resume=true) trained on the old import without a word."""
    import json

    import robotrl.lerobot_dataset as lerobot_dataset
    from robotrl.workflows.demos import lerobot_demo_dir

    dataset = tmp_path / "reach-lerobot"
    (dataset / "meta").mkdir(parents=True)
    imports = []

    def fake_import(src, out, image_size):
        out.mkdir()
        info = json.loads((src / "meta" / "info.json").read_text())
        (out / "meta.json").write_text(json.dumps({"num_episodes": info["total_episodes"]}))
        imports.append(info["total_episodes"])
        return out

    monkeypatch.setattr(lerobot_dataset, "import_lerobot", fake_import)
    env = {"name": "metaworld/reach", "image_size": 32}
    for episodes, expected_imports in ((2, [2]), (2, [2]), (5, [2, 5])):
        (dataset / "meta" / "info.json").write_text(json.dumps({"total_episodes": episodes}))
        out = lerobot_demo_dir(dataset, env)
        assert imports == expected_imports
        assert json.loads((out / "meta.json").read_text())["num_episodes"] == episodes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reach-lerobot", "reach-lerobot-robotrl32"]
