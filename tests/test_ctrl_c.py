"""Ctrl-C during training stops within moments wherever the loop is, not only between training env steps.

The loop defers a Ctrl-C to a safe point (:class:`~robotrl.workflows.trainer.console.GracefulInterrupt`). Those points
were the training env steps alone, so a Ctrl-C waited out whatever ran between two of them: an agent update (MR.Q's
encoder phase, 250 encoder steps, runs 10-30 minutes from pixels on a CPU) or a whole evaluation (minutes from
pixels; on an arm, the arm kept playing its evaluation episodes).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from robotrl.workflows.trainer.evaluation import one_env_player
from robotrl.workflows.trainer.local import LocalCollector
from tests.trainer_fakes import CounterEnv, FakeAgent, FakeReplay, parts_loop


def ctrl_c_in(seconds: float) -> None:
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)).start()


def train_until_interrupted(loop) -> float:
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        loop.train()
    return time.monotonic() - start


class SlowAgent(FakeAgent):
    """Its update at ``slow_step`` takes 20 s (stands for MR.Q's encoder phase) and a Ctrl-C comes 0.3 s into it."""

    def __init__(self, slow_step: int) -> None:
        super().__init__()
        self.slow_step = slow_step

    def update(self, replay, step):
        if step == self.slow_step:
            ctrl_c_in(0.3)
            time.sleep(20)
        return super().update(replay, step)


def interrupted_eval(play):
    """``play_eval`` from an eval player: the evaluation at the start plays one episode; the next one gets a Ctrl-C
    0.3 s in."""

    def play_eval(seeds, video, step, beat):
        if step == 0:
            return play(seeds[:1], video, step, beat)
        ctrl_c_in(0.3)
        return play(seeds, video, step, beat)

    return play_eval


def test_ctrl_c_during_a_long_agent_update_stops_at_once(tmp_path):
    loop = parts_loop(tmp_path, CounterEnv(), LocalCollector(seed_steps=0, update_at="step"), SlowAgent(2),
                      FakeReplay(), frames=100, checkpoint_every=10**9)
    assert train_until_interrupted(loop) < 5


def test_ctrl_c_during_an_evaluation_stops_at_its_next_env_step(tmp_path):
    class SlowEnv(CounterEnv):
        def step(self, action):
            time.sleep(0.02)  # 300 eval episodes of 3 steps: 18 s
            return super().step(action)

    env, agent = SlowEnv(), FakeAgent()
    loop = parts_loop(tmp_path, env, LocalCollector(seed_steps=0, update_at="step"), agent, FakeReplay(),
                      frames=100, checkpoint_every=10**9, eval_every=6, eval_episodes=300,
                      play_eval=interrupted_eval(one_env_player(env, agent)))
    assert train_until_interrupted(loop) < 5


def test_ctrl_c_during_sb3_gradient_steps_stops_at_once(compose_cfg, tmp_path):
    """SB3 runs its gradient phase between rollouts (PPO: n_epochs over the rollout, a minute from pixels)."""
    from robotrl.workflows.train import Trainer
    from tests.test_sb3 import AGENTS, SB3_TINY

    trainer = Trainer(compose_cfg(*SB3_TINY, *AGENTS["sb3_ppo"], "frames=2000", tiny=False), tmp_path)
    model = trainer.parts.agent.model
    train = model.train

    def slow_train(*args, **kwargs):
        ctrl_c_in(0.3)
        time.sleep(20)
        return train(*args, **kwargs)

    model.train = slow_train
    assert train_until_interrupted(trainer) < 5


def test_ctrl_c_during_a_long_update_or_evaluation_with_vector_envs(tmp_path):
    """The same with env.num_envs > 1: an update between two batched env steps, and the vector eval player."""
    from robotrl.replay import ReplayBuffer
    from robotrl.workflows.vector_train import VectorCollector, vector_player
    from tests.trainer_fakes import FakeVectorEnv

    env = FakeVectorEnv(num_envs=2, length=5)
    replay = ReplayBuffer(1000, env.single_observation_space, action_dim=1, frame_stack=1, nstep=1)
    loop = parts_loop(tmp_path / "update", env, VectorCollector(env, seed_steps=4), SlowAgent(12), replay,
                      frames=100, checkpoint_every=10**9)
    assert train_until_interrupted(loop) < 5

    class SlowVectorEnv(FakeVectorEnv):
        def step(self, actions):
            time.sleep(0.02)  # 600 eval episodes of 5 steps on 2 envs: 30 s
            return super().step(actions)

    env, agent = SlowVectorEnv(num_envs=2, length=5), FakeAgent()
    replay = ReplayBuffer(1000, env.single_observation_space, action_dim=1, frame_stack=1, nstep=1)
    loop = parts_loop(tmp_path / "eval", env, VectorCollector(env, seed_steps=4), agent, replay, frames=100,
                      checkpoint_every=10**9, eval_every=10, eval_episodes=600,
                      play_eval=interrupted_eval(vector_player(env, agent)))
    assert train_until_interrupted(loop) < 5


def _saves_with_ctrl_c(monkeypatch, signals: int, on_save: int) -> None:
    """``signals`` Ctrl-Cs in the middle of checkpoint save number ``on_save`` (its state file written, its checksums
    not yet)."""
    import robotrl.checkpoint as checkpoint

    saves, sha256 = [], checkpoint._sha256

    def interrupted_sha256(path):
        if path.name == "state.pt":
            saves.append(path)
            if len(saves) == on_save:
                for _ in range(signals):
                    os.kill(os.getpid(), signal.SIGINT)
        return sha256(path)

    monkeypatch.setattr(checkpoint, "_sha256", interrupted_sha256)


def _checkpoints(run_dir) -> list[str]:
    from robotrl.checkpoint import resolve_checkpoint, verify_checkpoint

    ckpts = run_dir / "checkpoints"
    assert not list(ckpts.glob(".tmp-*"))  # no half-written save left behind
    newest = resolve_checkpoint(ckpts)
    verify_checkpoint(newest)
    return sorted(p.name for p in ckpts.glob("frame_*"))


def test_ctrl_c_during_a_checkpoint_save_lets_it_finish_then_stops(tmp_path, monkeypatch):
    _saves_with_ctrl_c(monkeypatch, signals=1, on_save=2)
    loop = parts_loop(tmp_path, CounterEnv(), LocalCollector(seed_steps=0, update_at="step"), FakeAgent(),
                      FakeReplay(), frames=100, checkpoint_every=6)
    train_until_interrupted(loop)
    assert len(_checkpoints(tmp_path)) == 2  # the interrupted save completed and verifies; then the run stopped


def test_a_second_ctrl_c_during_a_save_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _saves_with_ctrl_c(monkeypatch, signals=2, on_save=2)
    loop = parts_loop(tmp_path, CounterEnv(), LocalCollector(seed_steps=0, update_at="step"), FakeAgent(),
                      FakeReplay(), frames=100, checkpoint_every=6)
    train_until_interrupted(loop)
    assert len(_checkpoints(tmp_path)) == 1  # the first save, whole; the interrupted one's temp dir removed
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == _checkpoints(tmp_path)[0]
