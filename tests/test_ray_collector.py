"""collector=ray: the chunk streaming/dedup logic (fast, no Ray) and a local Ray run with a killed actor (slow)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from robotrl.workflows.ray_collector import STEP_KEYS, EpisodeAssembler


def _chunks(actor: int, incarnation: int, episode: int, length: int, size: int) -> list[dict]:
    """An episode of ``length`` steps in chunks of ``size``; obs/actions encode (episode, t) to check order."""
    chunks, t = [], 0
    seq = 0
    while t < length:
        n = min(size, length - t)
        obs = [{"state": np.array([episode, 0], np.float32)}] if seq == 0 else []
        obs += [{"state": np.array([episode, t + k + 1], np.float32)} for k in range(n)]
        chunk = {"actor": actor, "incarnation": incarnation, "episode": episode, "seq": seq, "obs": obs,
                 "action": [np.full(2, (t + k) / 100, np.float32) for k in range(n)],
                 "reward": [float(t + k) for k in range(n)], "terminated": [False] * n,
                 "truncated": [t + k + 1 == length for k in range(n)], "success": [False] * n, "infos": [{}] * n}
        chunks.append(chunk)
        t, seq = t + n, seq + 1
    return chunks


def test_assembler_gives_each_episode_once_in_order():
    asm = EpisodeAssembler()
    asm.start(0, 0, episode=5)
    asm.start(1, 0, episode=6)
    a, b = _chunks(0, 0, 5, 7, 3), _chunks(1, 0, 6, 4, 3)
    out = [asm.add(c) for c in (a[0], b[0], a[0], a[1], b[1], b[1], a[2])]  # interleaved, with duplicates
    finished = [o for o in out if o is not None]
    assert [f[0] for f in finished] == [6, 5] and asm.ignored == 2
    ep = finished[1][1]
    assert ep.obs["state"].shape == (8, 2) and list(ep.obs["state"][:, 1]) == list(range(8))
    np.testing.assert_array_equal(ep.reward, np.arange(7, dtype=np.float32))
    assert asm.add(a[2]) is None and asm.ignored == 3  # a delivered episode is never delivered again


def test_dead_actor_partial_episode_is_discarded_and_its_late_chunks_ignored():
    asm = EpisodeAssembler()
    asm.start(0, 0, episode=3)
    old = _chunks(0, 0, 3, 6, 2)
    assert asm.add(old[0]) is None
    episode, steps = asm.drop_actor(0)
    assert (episode, steps) == (3, 2)
    asm.start(0, 1, episode=3)  # the restarted actor plays the same episode again
    assert asm.add(old[1]) is None and asm.ignored == 1  # a late chunk of the dead incarnation
    new = _chunks(0, 1, 3, 6, 2)
    results = [asm.add(c) for c in new]
    assert results[-1] is not None and results[-1][0] == 3
    assert len(results[-1][1].action) == 6  # the replayed episode, whole; nothing of the dead one in it
    assert set(STEP_KEYS) <= set(new[0])


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # starts a local Ray instance and 2 actors (~1-2 min on 2 cores)
def test_ray_run_survives_a_killed_actor(compose_cfg, tmp_path):
    """A local Ray instance on loopback, 2 rollout actors; one is killed mid-run. The run finishes, every episode
    index 0..E-1 is in the replay exactly once and whole, and the killed actor's episode is counted discarded."""
    ray = pytest.importorskip("ray")
    from robotrl.envs import make_env

    from robotrl.workflows.ray_collector import RayCollector
    from robotrl.workflows.train import Trainer, episode_seed

    from .test_vector_train import _stored_episodes

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        cfg = compose_cfg("collector=ray", "ray.num_actors=2", "ray.chunk_size=10", "ray.queue_size=2",
                          "frames=400", "eval_at_start=false", "checkpoint_every_frames=1000")
        trainer = Trainer(cfg, tmp_path)
        collector = trainer.collector
        assert isinstance(collector, RayCollector)
        original, state = collector.receive, {"killed": False}

        def receive_and_kill(chunk, run):
            stats = original(chunk, run)
            if not state["killed"] and chunk["actor"] == 1 and chunk["seq"] == 1:
                state["killed"] = True
                ray.kill(collector.actors[1], no_restart=True)
            return stats

        collector.receive = receive_and_kill
        trainer.train()
        assert state["killed"] and trainer.discarded_episodes == 1 and trainer.discarded_steps == 20
        episodes = _stored_episodes(trainer.replay)
        assert all(len(ep["action"]) == 50 for ep in episodes)
        assert trainer.step == 50 * len(episodes)  # frames: only the steps that reached the replay
        env = make_env(cfg.env, seed=0)
        firsts = []
        for k in range(len(episodes)):
            obs, _ = env.reset(seed=episode_seed(int(cfg.seed), k))
            firsts.append(obs["pixels"][-3:])
        got = sorted(next(k for k, f in enumerate(firsts) if np.array_equal(f, ep["pixels"][0])) for ep in episodes)
        assert got == list(range(len(episodes)))  # no episode duplicated or lost
        assert _rows(tmp_path / "train.csv")[-1]["discarded_episodes"] == "1.0"
    finally:
        ray.shutdown()


@pytest.mark.slow  # two local-Ray runs (~2-3 min on 2 cores)
def test_ray_run_resumes_the_learner_exactly(compose_cfg, tmp_path):
    """The checkpoint of a collector=ray run holds the learner's exact state (taken with no episode in flight);
    resume=true starts from it and continues with the next episode indices, none repeated or skipped."""
    pytest.importorskip("ray")
    from robotrl.envs import make_env

    from robotrl.workflows.train import Trainer, episode_seed

    from .conftest import assert_same_tensors
    from .test_vector_train import _stored_episodes

    ray_args = ["collector=ray", "ray.num_actors=2", "ray.num_cpus=2", "ray.chunk_size=25", "eval_at_start=false"]
    first = Trainer(compose_cfg(*ray_args, "frames=200"), tmp_path)
    first.train()
    # episodes in flight when the end is due finish first: 2 or 3 whole episodes of 50 steps, nothing partial
    assert first.episode in (2, 3) and first.step == 50 * first.episode
    assert len(_stored_episodes(first.replay)) == first.episode
    resumed = Trainer(compose_cfg(*ray_args, "frames=400", "resume=true"), tmp_path)
    assert resumed.step == first.step and resumed.episode == first.episode
    assert_same_tensors(first.agent.state_dict(), resumed.agent.state_dict())
    assert len(resumed.replay) == len(first.replay)
    resumed.train()
    assert resumed.episode > first.episode and resumed.step == 50 * resumed.episode
    stored = _stored_episodes(resumed.replay)
    assert len(stored) == resumed.episode and all(len(ep["action"]) == 50 for ep in stored)
    env = make_env(resumed.cfg.env, seed=0)
    seeds = [env.reset(seed=episode_seed(int(resumed.cfg.seed), k))[0]["pixels"][-3:] for k in range(len(stored))]
    got = sorted(next(k for k, f in enumerate(seeds) if np.array_equal(f, ep["pixels"][0])) for ep in stored)
    assert got == list(range(len(stored)))  # episode indices 0..E-1 across the resume: none repeated or skipped
