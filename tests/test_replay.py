"""Replay buffer tests: n-step targets, frame-stack rebuilding, episode/overwrite safety, trajectories,
demo mixing, state round trips, checkpoints, memmap storage and memory use.

Frames carry their absolute slot index (encoded in pixel (0, 0) across the 3 channels), so every sampled
stack can be decoded and compared with the stack a reference FrameStack rollout produced.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch

from robotrl.errors import ActionError, CheckpointError, ObservationError
from robotrl.mixed_replay import MixedReplay
from robotrl.replay import ReplayBuffer
from robotrl.types import Episode

H = W = 2
STATE_DIM = 2
ACTION_DIM = 2


def make_space(frame_stack: int, pixels: bool = True, state: bool = True, size: int = H) -> gym.spaces.Dict:
    spaces = {}
    if pixels:
        spaces["pixels"] = gym.spaces.Box(0, 255, (3 * frame_stack, size, size), np.uint8)
    if state:
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
    return gym.spaces.Dict(spaces)


def frame(gid: int) -> np.ndarray:
    """A (3, H, W) frame whose pixel (0, 0) encodes ``gid`` in base 256 over the channels."""
    f = np.zeros((3, H, W), np.uint8)
    for c in range(3):
        f[c, 0, 0] = (gid >> (8 * c)) & 255
    return f


def decode(stack: np.ndarray) -> list[int]:
    """Frame ids of a (3k, H, W) stack, oldest -> newest."""
    frames = stack.reshape(-1, 3, H, W).astype(np.int64)
    return [int(f[0, 0, 0] + (f[1, 0, 0] << 8) + (f[2, 0, 0] << 16)) for f in frames]


def action_for(gid: int) -> np.ndarray:
    return np.array([(gid % 997) / 997.0, -((gid % 13) / 13.0)], np.float32)


@dataclass
class Reference:
    """What the env produced, indexed by absolute slot: the stacked obs, episode, step, action, reward."""

    frame_stack: int
    capacity: int
    nstep: int
    gamma: float
    stacked: dict[int, np.ndarray] = field(default_factory=dict)
    episode_of: dict[int, int] = field(default_factory=dict)
    step_of: dict[int, int] = field(default_factory=dict)
    episodes: list[dict] = field(default_factory=list)  # start, rewards, terminated
    head: int = 0

    @property
    def oldest(self) -> int:
        return max(0, self.head - self.capacity)

    def new_obs(self, stack: deque, episode: int, step: int) -> dict[str, np.ndarray]:
        a = self.head
        self.stacked[a] = np.concatenate(list(stack))
        self.episode_of[a], self.step_of[a] = episode, step
        self.head += 1
        return {"pixels": self.stacked[a], "state": np.array([a, step], np.float32)}

    def has_action(self, a: int) -> bool:
        return self.step_of[a] < len(self.episodes[self.episode_of[a]]["rewards"])

    def valid(self, a: int, horizon: int = 1) -> bool:
        """In the window, ``horizon`` actions ahead in its episode, and every frame of its stack present."""
        if not self.oldest <= a < self.head or self.step_of[a] + horizon > self._num_actions(a):
            return False
        return min(decode(self.stacked[a])) >= self.oldest

    def _num_actions(self, a: int) -> int:
        return len(self.episodes[self.episode_of[a]]["rewards"])

    def valid_set(self, horizon: int = 1) -> set[int]:
        return {a for a in range(self.oldest, self.head) if self.valid(a, horizon)}

    def nstep_target(self, a: int) -> tuple[float, float, int]:
        ep = self.episodes[self.episode_of[a]]
        t, rewards = self.step_of[a], ep["rewards"]
        m = min(self.nstep, len(rewards) - t)
        ret = sum(self.gamma**i * rewards[t + i] for i in range(m))
        ends = ep["terminated"] and t + m == len(rewards)
        return ret, 0.0 if ends else self.gamma**m, m


def run_episode_stepwise(
    buf: ReplayBuffer, ref: Reference, rng: np.random.Generator, length: int, end: str
) -> None:
    """Reset + ``length`` steps through add_first/add with a reference FrameStack; ``end`` in
    terminated/truncated/abandoned (the next add_first starts a new episode without an end flag)."""
    k = ref.frame_stack
    ep = len(ref.episodes)
    ref.episodes.append({"start": ref.head, "rewards": [], "terminated": False})
    first = frame(ref.head)
    stack = deque([first] * k, maxlen=k)
    buf.add_first(ref.new_obs(stack, ep, 0))
    for t in range(length):
        act = action_for(ref.head - 1)
        reward = float(rng.normal())
        last = t == length - 1
        terminated, truncated = last and end == "terminated", last and end == "truncated"
        ref.episodes[ep]["rewards"].append(reward)
        ref.episodes[ep]["terminated"] = terminated
        stack.append(frame(ref.head))
        buf.add(act, reward, ref.new_obs(stack, ep, t + 1), terminated, truncated)


def add_whole_episode(
    buf: ReplayBuffer, ref: Reference, rng: np.random.Generator, length: int, term: bool
) -> None:
    k = ref.frame_stack
    ep = len(ref.episodes)
    rewards = rng.normal(size=length).astype(np.float32)
    ref.episodes.append({"start": ref.head, "rewards": [float(r) for r in rewards], "terminated": term})
    start = ref.head
    stack = deque([frame(start)] * k, maxlen=k)
    states = []
    for t in range(length + 1):
        if t:
            stack.append(frame(ref.head))
        states.append(ref.new_obs(stack, ep, t)["state"])
    ids = range(start, start + length + 1)
    terminated = np.zeros(length, bool)
    terminated[-1] = term
    buf.add_episode(
        Episode(
            obs={"pixels": np.stack([frame(i) for i in ids]), "state": np.stack(states)},
            action=np.stack([action_for(i) for i in ids][:-1]),
            reward=rewards,
            terminated=terminated,
            success=np.zeros(length, bool),
        )
    )


def check_batch(buf: ReplayBuffer, ref: Reference, batch_size: int) -> list[int]:
    """Sample and compare every transition with the reference; return the sampled absolute indices."""
    batch = buf.sample(batch_size)
    assert batch.obs["pixels"].dtype == torch.uint8 and batch.reward.shape == (batch_size, 1)
    starts = []
    for b in range(batch_size):
        a = decode(batch.obs["pixels"][b].numpy())[-1]
        assert ref.valid(a), f"sampled invalid start {a} (window {ref.oldest}..{ref.head})"
        np.testing.assert_array_equal(batch.obs["pixels"][b].numpy(), ref.stacked[a])
        assert batch.obs["state"][b, 0].item() == a
        np.testing.assert_array_equal(batch.action[b].numpy(), action_for(a))
        ret, disc, m = ref.nstep_target(a)
        assert batch.reward[b, 0].item() == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert batch.discount[b, 0].item() == pytest.approx(disc, rel=1e-6)
        np.testing.assert_array_equal(batch.next_obs["pixels"][b].numpy(), ref.stacked[a + m])
        assert ref.episode_of[a + m] == ref.episode_of[a]
        starts.append(a)
    return starts


def check_trajectories(buf: ReplayBuffer, ref: Reference, batch_size: int, horizon: int) -> None:
    if not ref.valid_set(horizon):
        with pytest.raises(ValueError):
            buf.sample_trajectories(batch_size, horizon)
        return
    traj = buf.sample_trajectories(batch_size, horizon)
    assert traj.obs["pixels"].shape[:2] == (horizon + 1, batch_size)
    assert traj.action.shape == (horizon, batch_size, ACTION_DIM) and traj.terminated.shape == (
        horizon,
        batch_size,
        1,
    )
    for b in range(batch_size):
        a0 = decode(traj.obs["pixels"][0, b].numpy())[-1]
        assert ref.valid(a0, horizon)
        ep = ref.episodes[ref.episode_of[a0]]
        for h in range(horizon + 1):
            np.testing.assert_array_equal(traj.obs["pixels"][h, b].numpy(), ref.stacked[a0 + h])
            assert ref.episode_of[a0 + h] == ref.episode_of[a0]
        for h in range(horizon):
            t = ref.step_of[a0 + h]
            np.testing.assert_array_equal(traj.action[h, b].numpy(), action_for(a0 + h))
            assert traj.reward[h, b, 0].item() == pytest.approx(ep["rewards"][t], abs=1e-6)
            assert traj.terminated[h, b, 0].item() == float(ep["terminated"] and t == len(ep["rewards"]) - 1)


def fill_random(
    buf: ReplayBuffer, ref: Reference, rng: np.random.Generator, episodes: int, max_len: int
) -> None:
    for _ in range(episodes):
        kind = rng.choice(["terminated", "truncated", "abandoned", "whole_term", "whole_trunc"])
        length = int(rng.integers(1, max_len + 1))
        if kind.startswith("whole"):
            add_whole_episode(buf, ref, rng, length, kind == "whole_term")
        else:
            run_episode_stepwise(buf, ref, rng, length, kind)


def make_pair(capacity=23, frame_stack=3, nstep=3, gamma=0.9, seed=0, **kw) -> tuple[ReplayBuffer, Reference]:
    buf = ReplayBuffer(
        capacity, make_space(frame_stack), ACTION_DIM, frame_stack, nstep, gamma, seed=seed, **kw
    )
    return buf, Reference(frame_stack, capacity, nstep, gamma)


# ---------------------------------------------------------------------- n-step by hand
@pytest.mark.parametrize("terminated", [True, False])
def test_nstep_hand_computation(terminated: bool) -> None:
    gamma = 0.5
    expected = {  # step t -> (return, discount) for rewards 1, 2, 3, 4 and nstep 3
        0: (1 + 0.5 * 2 + 0.25 * 3, 0.125),
        1: (2 + 0.5 * 3 + 0.25 * 4, 0.0 if terminated else 0.125),
        2: (3 + 0.5 * 4, 0.0 if terminated else 0.25),
        3: (4.0, 0.0 if terminated else 0.5),
    }
    next_step = {0: 3, 1: 4, 2: 4, 3: 4}
    buf = ReplayBuffer(10, make_space(1, pixels=False), ACTION_DIM, 1, nstep=3, discount=gamma)
    states = np.array([[t, 0] for t in range(5)], np.float32)
    rewards = np.array([1, 2, 3, 4], np.float32)
    term = np.array([False, False, False, terminated])
    buf.add_episode(Episode({"state": states}, np.zeros((4, ACTION_DIM), np.float32), rewards, term, term))
    assert len(buf) == 4
    batch = buf.sample(200)
    seen = set()
    for b in range(200):
        t = int(batch.obs["state"][b, 0])
        seen.add(t)
        assert batch.reward[b, 0].item() == pytest.approx(expected[t][0])
        assert batch.discount[b, 0].item() == pytest.approx(expected[t][1])
        assert int(batch.next_obs["state"][b, 0]) == next_step[t]
    assert seen == {0, 1, 2, 3}


def test_nstep_longer_than_episode_and_in_progress_episode() -> None:
    """nstep > remaining steps uses the whole remainder; the episode being written samples what exists."""
    gamma = 0.9
    buf = ReplayBuffer(50, make_space(1, pixels=False), ACTION_DIM, 1, nstep=10, discount=gamma)
    buf.add_first({"state": np.array([0, 0], np.float32)})
    assert len(buf) == 0
    with pytest.raises(ValueError, match="no transitions"):
        buf.sample(4)
    for t in range(1, 4):
        buf.add(
            np.zeros(ACTION_DIM, np.float32), float(t), {"state": np.array([t, 0], np.float32)}, False, False
        )
    assert len(buf) == 3
    batch = buf.sample(100)
    for b in range(100):
        t = int(batch.obs["state"][b, 0])
        m = 3 - t
        assert batch.reward[b, 0].item() == pytest.approx(sum(gamma**i * (t + 1 + i) for i in range(m)))
        assert batch.discount[b, 0].item() == pytest.approx(gamma**m)
        assert int(batch.next_obs["state"][b, 0]) == 3


# ---------------------------------------------------------------------- frame stacks
def test_frame_stack_padding_at_episode_start() -> None:
    buf, ref = make_pair(capacity=100, frame_stack=3)
    rng = np.random.default_rng(0)
    run_episode_stepwise(buf, ref, rng, 4, "truncated")
    run_episode_stepwise(buf, ref, rng, 4, "terminated")
    traj = buf.sample_trajectories(64, 4)
    stacks = {tuple(decode(traj.obs["pixels"][h, b].numpy())) for h in range(5) for b in range(64)}
    assert stacks == {(0, 0, 0), (0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4), (5, 5, 5), (5, 5, 6), (5, 6, 7),
                      (6, 7, 8), (7, 8, 9)}  # fmt: skip


@pytest.mark.parametrize("frame_stack,nstep", [(3, 3), (1, 1), (4, 5)])
def test_random_episodes_never_mix_or_use_overwritten_slots(frame_stack: int, nstep: int) -> None:
    """Property test: small capacity, random lengths and ends, step-wise and whole episodes, wrap-around."""
    rng = np.random.default_rng(frame_stack * 10 + nstep)
    buf, ref = make_pair(capacity=23, frame_stack=frame_stack, nstep=nstep, seed=1)
    for _ in range(150):
        fill_random(buf, ref, rng, 1, max_len=12)
        valid = ref.valid_set()
        assert len(buf) == len(valid)
        if valid:
            check_batch(buf, ref, 24)
        check_trajectories(buf, ref, 8, horizon=int(rng.integers(1, 5)))
    assert ref.head > 10 * ref.capacity  # wrapped many times


def test_sampling_is_uniform_over_valid_starts() -> None:
    rng = np.random.default_rng(3)
    buf, ref = make_pair(capacity=40, frame_stack=3)
    fill_random(buf, ref, rng, 30, max_len=9)
    valid = ref.valid_set()
    starts = np.array(check_batch(buf, ref, 40 * len(valid)))
    counts = np.array([np.sum(starts == a) for a in sorted(valid)])
    assert counts.sum() == starts.size and counts.min() > 0
    assert np.abs(counts - 40).max() < 6 * np.sqrt(40)


def test_trajectories_contiguous_and_time_major() -> None:
    rng = np.random.default_rng(5)
    buf, ref = make_pair(capacity=60, frame_stack=2)
    fill_random(buf, ref, rng, 20, max_len=10)
    check_trajectories(buf, ref, 32, horizon=3)
    traj = buf.sample_trajectories(5, 3)
    assert traj.obs["state"].shape == (4, 5, STATE_DIM) and traj.reward.dtype == torch.float32


# ---------------------------------------------------------------------- mixing
def _const_buffer(value: float, seed: int) -> ReplayBuffer:
    buf = ReplayBuffer(30, make_space(1, pixels=False), ACTION_DIM, 1, seed=seed)
    states = np.full((11, STATE_DIM), value, np.float32)
    buf.add_episode(Episode({"state": states}, np.zeros((10, 2), np.float32), np.zeros(10, np.float32),
                            np.zeros(10, bool), np.zeros(10, bool)))  # fmt: skip
    return buf


def test_mixed_replay_exact_ratio() -> None:
    mixed = MixedReplay(_const_buffer(0.0, 0), _const_buffer(1.0, 1), ratio=lambda step: min(1.0, step / 100))
    for step in [0, 10, 33, 50, 99, 100, 500]:
        for batch_size in [1, 7, 64]:
            want = round(min(1.0, step / 100) * batch_size)
            batch = mixed.sample(batch_size, step)
            assert batch.obs["state"].shape[0] == batch_size
            assert int(batch.obs["state"][:, 0].sum()) == want == mixed.num_demo(batch_size, step)
            traj = mixed.sample_trajectories(batch_size, 2, step)
            assert traj.obs["state"].shape[:2] == (3, batch_size)
            assert int(traj.obs["state"][0, :, 0].sum()) == want
    fixed = MixedReplay(_const_buffer(0.0, 0), _const_buffer(1.0, 1), ratio=0.25)
    assert int(fixed.sample(64).obs["state"][:, 0].sum()) == 16
    with pytest.raises(ValueError, match="expected within"):
        MixedReplay(_const_buffer(0.0, 0), _const_buffer(1.0, 1), ratio=1.5).sample(8)


# ---------------------------------------------------------------------- state, checkpoints, storage
def _assert_same_batches(a: ReplayBuffer, b: ReplayBuffer, rounds: int = 3) -> None:
    for _ in range(rounds):
        x, y = a.sample(16), b.sample(16)
        for key in x.obs:
            assert torch.equal(x.obs[key], y.obs[key]) and torch.equal(x.next_obs[key], y.next_obs[key])
        assert torch.equal(x.reward, y.reward) and torch.equal(x.discount, y.discount)
        tx, ty = a.sample_trajectories(4, 2), b.sample_trajectories(4, 2)
        assert torch.equal(tx.obs["pixels"], ty.obs["pixels"]) and torch.equal(tx.action, ty.action)


def test_state_dict_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(7)
    buf, ref = make_pair(capacity=31, seed=11)
    fill_random(buf, ref, rng, 12, max_len=9)
    run_episode_stepwise(buf, ref, rng, 0, "abandoned")  # leave an episode in progress
    buf.sample(5)
    blob = io.BytesIO()
    torch.save(buf.state_dict(), blob)
    blob.seek(0)
    clone, _ = make_pair(capacity=31, seed=999)
    clone.load_state_dict(torch.load(blob, weights_only=True))
    _assert_same_batches(buf, clone)
    # Both continue the in-progress episode the same way.
    for target in (buf, clone):
        prev = ref.stacked[ref.head - 1]
        stack = deque(np.split(prev, 3), maxlen=3)
        stack.append(frame(ref.head))
        obs = {"pixels": np.concatenate(list(stack)), "state": np.zeros(STATE_DIM, np.float32)}
        target.add(action_for(0), 1.0, obs, False, True)
    _assert_same_batches(buf, clone)
    other, _ = make_pair(capacity=32)
    with pytest.raises(CheckpointError, match="config"):
        other.load_state_dict(buf.state_dict())


def test_save_load_round_trip_and_corruption(tmp_path) -> None:
    rng = np.random.default_rng(8)
    buf, ref = make_pair(capacity=29, seed=4)
    fill_random(buf, ref, rng, 10, max_len=8)
    path = tmp_path / "replay.npz"
    buf.save(path)
    assert sorted(os.listdir(tmp_path)) == ["replay.npz"]  # no temp files left behind
    loaded = ReplayBuffer.load(path)
    assert len(loaded) == len(buf) and loaded.observation_space == buf.observation_space
    _assert_same_batches(buf, loaded)

    raw = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[raw.index(b"\x93NUMPY", len(raw) // 3) + 140] ^= 0xFF  # in an array's data: a zip header's date
    # field is not CRC-checked (the checkpoint manifest's sha256 covers the whole file: tests/test_checkpoint.py)
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with np.load(path) as data:
        np.savez(tmp_path / "missing.npz", **{k: data[k] for k in data.files if k != "arrays/reward"})
    for name in ["truncated.npz", "flipped.npz", "missing.npz", "absent.npz"]:
        with pytest.raises(CheckpointError, match=name):
            ReplayBuffer.load(tmp_path / name)


def test_memmap_storage_matches_memory(tmp_path) -> None:
    rng = np.random.default_rng(9)
    mem, ref = make_pair(capacity=25, seed=2)
    disk, _ = make_pair(capacity=25, seed=2, storage_dir=tmp_path / "store")
    fill_random(mem, ref, rng, 10, max_len=8)
    for name in ("pixels", "action", "episode_start"):
        assert (tmp_path / "store" / f"{name}.npy").exists()
    disk.load_state_dict(mem.state_dict())
    _assert_same_batches(mem, disk)
    assert isinstance(disk._arrays["pixels"], np.memmap)
    check_batch(disk, ref, 16)


# ---------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_bytes_per_transition_documented_and_measured() -> None:
    capacity, k = 2000, 3
    space = make_space(k, size=84)
    buf = ReplayBuffer(capacity, space, 6, k)
    assert buf.nbytes_per_transition == 3 * 84 * 84 + 4 * STATE_DIM + 4 * 6 + 4 + 1 + 1 + 1 + 8  # +1: reward_invalid
    assert sum(arr.nbytes for arr in buf._arrays.values()) == capacity * buf.nbytes_per_transition
    # Resident memory really grows by that much when the buffer fills. Measured in a fresh interpreter: inside a
    # long pytest process, memory freed by earlier tests makes RSS deltas meaningless.
    code = f"""
import numpy as np, gymnasium as gym
from robotrl.replay import ReplayBuffer
from robotrl.types import Episode
def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))
space = gym.spaces.Dict({{"pixels": gym.spaces.Box(0, 255, (9, 84, 84), np.uint8),
                         "state": gym.spaces.Box(-np.inf, np.inf, ({STATE_DIM},), np.float32)}})
buf = ReplayBuffer({capacity}, space, 6, 3)
pixels = np.random.default_rng(0).integers(0, 256, ({capacity}, 3, 84, 84), dtype=np.uint8)
episode = Episode({{"pixels": pixels, "state": np.zeros(({capacity}, {STATE_DIM}), np.float32)}},
                  np.zeros(({capacity} - 1, 6), np.float32), np.zeros({capacity} - 1, np.float32),
                  np.zeros({capacity} - 1, bool), np.zeros({capacity} - 1, bool))
base = rss()
buf.add_episode(episode)
print(rss() - base, buf.nbytes_per_transition)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    grown, per = map(int, proc.stdout.split())
    assert 0.9 * capacity * per < grown < 1.3 * capacity * per


def test_million_slot_buffer_is_lazy() -> None:
    with open("/proc/sys/vm/overcommit_memory") as f:
        if f.read().strip() == "2":
            pytest.skip("strict overcommit: a 21 GB np.empty is refused by the kernel")
    before = _rss_bytes()
    buf = ReplayBuffer(1_000_000, make_space(3, size=84), 6, 3)
    assert buf.nbytes_per_transition * 1_000_000 > 20e9
    assert _rss_bytes() - before < 100e6
    del buf


# ---------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors() -> None:
    buf, ref = make_pair(capacity=20)
    obs = {"pixels": np.zeros((9, H, W), np.uint8), "state": np.zeros(STATE_DIM, np.float32)}
    with pytest.raises(ValueError, match="add_first"):
        buf.add(np.zeros(2, np.float32), 0.0, obs, False, False)
    with pytest.raises(ObservationError, match="keys"):
        buf.add_first({"pixels": obs["pixels"]})
    with pytest.raises(ObservationError, match="dtype"):
        buf.add_first({**obs, "pixels": obs["pixels"].astype(np.float32)})
    with pytest.raises(ObservationError, match="channels-last"):
        buf.add_first({**obs, "pixels": np.zeros((H, W, 9), np.uint8)})
    with pytest.raises(ObservationError, match="copies of the first frame"):
        buf.add_first({**obs, "pixels": np.concatenate([frame(1), frame(2), frame(2)])})
    buf.add_first(obs)
    with pytest.raises(ValueError, match="reward"):
        buf.add(np.zeros(2, np.float32), float("nan"), obs, False, False)
    with pytest.raises(ActionError, match="shape"):
        buf.add(np.zeros(3, np.float32), 0.0, obs, False, False)
    newest_first = np.concatenate([frame(5), frame(0), frame(0)])
    with pytest.raises(ObservationError, match="oldest -> newest"):
        buf.add(np.zeros(2, np.float32), 0.0, {**obs, "pixels": newest_first}, False, False)
    assert len(buf) == 0  # nothing half-written
    with pytest.raises(ValueError, match="frame_stack"):
        ReplayBuffer(10, make_space(3), ACTION_DIM, frame_stack=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling_matches_cpu() -> None:
    """Pinned, non-blocking host->device copies deliver exactly the CPU batches (uint8 pixels stay uint8)."""
    rng = np.random.default_rng(12)
    cpu, ref = make_pair(capacity=40, seed=5)
    fill_random(cpu, ref, rng, 15, max_len=9)
    gpu, _ = make_pair(capacity=40, seed=5, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    for _ in range(3):
        x, y = cpu.sample(32), gpu.sample(32)
        assert y.obs["pixels"].device.type == "cuda" and y.obs["pixels"].dtype == torch.uint8
        for a, b in [(x.obs["pixels"], y.obs["pixels"]), (x.next_obs["state"], y.next_obs["state"]),
                     (x.action, y.action), (x.reward, y.reward), (x.discount, y.discount)]:  # fmt: skip
            assert torch.equal(a, b.cpu())
        tx, ty = cpu.sample_trajectories(8, 3), gpu.sample_trajectories(8, 3)
        assert torch.equal(tx.obs["pixels"], ty.obs["pixels"].cpu()) and torch.equal(
            tx.reward, ty.reward.cpu()
        )
    mixed = MixedReplay(gpu, gpu, ratio=0.5)
    assert mixed.sample(16).obs["pixels"].device.type == "cuda"


def test_several_camera_views_per_frame_rebuild_exactly() -> None:
    """Frames of 3 * views channels (two cameras): every rebuilt stack is an observation the env really gave."""
    from robotrl.envs import make_env

    env = make_env({"name": "metaworld/reach", "image_size": 16, "camera": ["corner2", "corner3"], "frame_stack": 3,
                    "max_episode_steps": 16}, seed=0)
    buf = ReplayBuffer(100, env.observation_space, env.action_space.shape[0], frame_stack=3, seed=0)
    assert buf.frame_channels == 6
    seen = set()
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        buf.add_first(obs)
        seen.add(obs["pixels"].tobytes())
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            buf.add(action, reward, obs, terminated, truncated)  # check_stack verifies the 6-channel layout too
            seen.add(obs["pixels"].tobytes())
            done = terminated or truncated
    env.close()
    traj = buf.sample_trajectories(32, 3)
    stacks = traj.obs["pixels"].numpy().reshape(-1, 18, 16, 16)
    assert all(s.tobytes() in seen for s in stacks)
    assert len({s.tobytes() for s in stacks}) > 10
    with pytest.raises(ValueError, match="views"):
        ReplayBuffer(100, gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (8, 4, 4), np.uint8)}), ACTION_DIM,
                     frame_stack=3)
