"""The training loop of real parts (run state, schedule, run services, checkpoints, train.csv) around fake envs and
agents (tests/trainer_fakes.py): what the whole-trainer runs of tests/test_trainer.py and
tests/test_training_faults.py asserted about the loop and the collectors' episode hand-off, each in well under a
second. The end-to-end versions stay: one exact-resume run (test_trainer.py), one killed env worker during real
training (test_training_faults.py); the rest are ``slow``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from robotrl.errors import DivergenceError
from robotrl.replay import ReplayBuffer
from robotrl.workflows.trainer.local import LocalCollector
from robotrl.workflows.trainer.schedule import episode_seed
from robotrl.workflows.trainer.state import Discards
from robotrl.workflows.vector_train import VectorCollector
from tests.trainer_fakes import CounterEnv, FakeAgent, FakeReplay, FakeVectorEnv, parts_loop


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------ divergence
def test_a_nan_update_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    """3-step episodes (6 frames), a checkpoint every 6 frames; updates from step 4 on report nan: the run stops
    at the end of episode 2 with the frame and the intact checkpoint named, the checkpoint at frame 6 still there
    and no row of the diverged episode in train.csv."""
    agent = FakeAgent(loss=lambda step: float("nan") if step >= 4 else float(step))
    loop = parts_loop(tmp_path, CounterEnv(), LocalCollector(seed_steps=0, update_at="step"), agent, FakeReplay(),
                      frames=60, checkpoint_every=6)
    with pytest.raises(DivergenceError, match=r"critic_loss became nan during episode 2 \(frame 12\); the last "
                                              r"checkpoint in .*checkpoints is intact"):
        loop.train()
    assert (tmp_path / "checkpoints" / "frame_000000000006" / "state.pt").exists()
    assert [r["frame"] for r in _rows(tmp_path / "train.csv")] == ["6"]
    assert agent.updated == [0, 1, 2, 3, 4, 5]  # it ran to the episode end: a checkpoint point, not mid-episode


# ------------------------------------------------------------------------------------------ vector: restarts
def _stored_episode_lengths(replay: ReplayBuffer) -> list[int]:
    """Steps of each episode in the replay (slot order)."""
    n = replay._head
    starts, has_action = replay._arrays["episode_start"][:n], replay._arrays["has_action"][:n]
    return [int(has_action[starts == s].sum()) for s in np.unique(starts)]


@pytest.mark.parametrize(("restart_at", "discarded", "replayed"), [
    ({3: 1}, 2, 1),  # worker 1 dies at its 3rd step (killed, hung or raising): its 2 recorded steps are dropped
    ({1: 0}, 0, 0),  # worker 0 dies at its first step: an episode of 0 steps is discarded
    ({8: 1}, 2, 3),  # worker 1 in its second episode (index 3, after the checkpoint's drain at step 10)
])
def test_a_restarted_workers_episode_is_discarded_counted_and_played_again(tmp_path, restart_at, discarded,
                                                                          replayed):
    """What ``ResilientVectorEnv`` reports for a killed, hung or raising worker (``RESTARTED``, the episode cut
    short) reaches the replay as nothing: every stored episode is whole, ``step`` and ``frames`` count only
    stored steps, the discarded ones are counted beside them (train.csv, summary.json), and the episode is played
    again from its seed, so no episode index is lost."""
    env = FakeVectorEnv(num_envs=2, length=5, restart_at=restart_at)
    replay = ReplayBuffer(1000, env.single_observation_space, action_dim=1, frame_stack=1, nstep=1)
    agent = FakeAgent()
    loop = parts_loop(tmp_path, env, VectorCollector(env, seed_steps=4), agent, replay, frames=40,
                      checkpoint_every=20, discards=Discards())
    summary = loop.train()
    lengths = _stored_episode_lengths(replay)
    assert lengths and all(n == 5 for n in lengths), lengths  # whole episodes only: nothing of a discarded one
    assert loop.step == sum(lengths) == replay._num_actions >= 20
    assert summary["frames"] == 2 * sum(lengths)
    assert summary["discarded_steps"] == discarded == loop.discarded_steps
    assert summary["discarded_episodes"] == 1 == loop.discarded_episodes
    rows = _rows(tmp_path / "train.csv")
    assert float(rows[-1]["discarded_steps"]) == discarded and float(rows[-1]["discarded_episodes"]) == 1
    assert len(rows) == loop.episode == len(lengths)
    seeds = [episode_seed(1, k) for k in range(loop.episode)]
    assert sorted(env.seeded) == sorted([*seeds, seeds[replayed]])  # each episode's seed once, the discarded one's
    # twice: it is played again from its seed
    assert json.loads((tmp_path / "summary.json").read_text())["discarded_steps"] == discarded
