"""The replay buffer shared by every agent: n-step transitions (DrQ-v2/DrM) and sub-trajectories (TD-MPC2); the
demo/online mixture at a scheduled ratio (MoDem) is :class:`robotrl.mixed_replay.MixedReplay`.

Frames are stored once: each slot keeps only the newest frame of the stacked observation and the stack is
rebuilt at sample time, so memory is ~1/k of storing stacks (and ~1/2k of storing obs and next_obs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robotrl.atomic import atomic_write
from robotrl.contract import check_action, check_obs
from robotrl.errors import ObservationError
from robotrl.priority import LapPriority, PrioritizedSamplingMixin
from robotrl.replay_io import (
    FRAME_CHANNELS,
    ReplayStateMixin,
    _check_config,
    _check_reset_stack,
    _check_reward,
)
from robotrl.types import Batch, Episode, Obs, Trajectories

__all__ = ["FRAME_CHANNELS", "ReplayBuffer"]
# Rejection rounds before falling back to an exact (O(capacity)) validity mask; only reached when almost no
# slot is a valid start (e.g. long horizons over very short episodes).
_MAX_REJECTION_ROUNDS = 32


class ReplayBuffer(PrioritizedSamplingMixin, ReplayStateMixin):
    """Circular replay of single frames with per-slot episode bookkeeping; samples n-step transitions and
    contiguous sub-trajectories, rebuilding frame stacks on the fly.

    Slot layout: an episode of T steps occupies T+1 consecutive slots (obs_0 .. obs_T). Slot t holds the
    newest frame of obs_t (uint8 (3, H, W)), the state of obs_t (float32), and -- once the step from obs_t
    has been taken -- its action, reward and terminated flag (``has_action`` marks that). Every slot also
    stores the absolute index of its episode's first slot (int64), which makes stack rebuilding (pad with
    the first frame) and same-episode checks plain vectorised numpy. Slots are addressed by absolute,
    monotonically increasing indices; the physical slot is ``index % capacity`` and the live window is
    ``[head - capacity, head)``, so an overwritten slot is never read.

    Valid transition start t: t is in the window, has an action, and its frame-stack history is still
    present (``max(episode_start, t - k + 1)`` is in the window). The n-step horizon is
    m = min(nstep, actions stored from t in its episode): shorter near an episode end (terminated,
    truncated, or the end of what has been written so far of the current episode). Everything needed
    (history, obs_{t+m}) is then in the window and in the same episode.

    A reward flagged ``reward_invalid`` (the reward model failed on that step, ``rewards.base.GuardedModel``) is
    stored with its flag and never enters a learning target: no transition starts at it, an n-step return stops
    before it (bootstrapping from the observation there), and trajectories carry ``reward_valid`` = 0 at it.

    Memory per slot (= per transition for long episodes; an episode of T steps uses T+1 slots):
    ``3*H*W`` (frame) + ``4*S`` (state) + ``4*A`` (action) + 4 (reward) + 1 (terminated) + 1 (has_action)
    + 1 (reward_invalid) + 8 (episode start) bytes, e.g. 21207 B for 84x84 pixels and A=6 (21.2 GB for 1M slots).
    Arrays are ``np.empty`` (or sparse memmaps), so pages are only committed as slots are written.
    """

    def __init__(
        self,
        capacity: int,
        observation_space: gym.spaces.Dict,
        action_dim: int,
        frame_stack: int,
        nstep: int = 3,
        discount: float = 0.99,
        seed: int = 0,
        storage_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        check_stack: bool = True,
    ) -> None:
        """``check_stack``: verify on add() that the stacked pixels match what will be rebuilt (catches
        envs that break the stacking contract); switch off only for tests feeding unrelated random obs."""
        _check_config(capacity, observation_space, action_dim, frame_stack, nstep, discount)
        self.capacity = int(capacity)
        self.observation_space = observation_space
        self.action_dim = int(action_dim)
        self.frame_stack = int(frame_stack)
        pixels = observation_space.spaces.get("pixels")
        self.frame_channels = 0 if pixels is None else pixels.shape[0] // self.frame_stack  # stored per slot
        self.nstep = int(nstep)
        self.discount = float(discount)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.check_stack = bool(check_stack)
        self.storage_dir = None if storage_dir is None else Path(storage_dir)
        self._action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))  # public: sampling draws; state in state_dict()
        self._arrays = self._allocate()
        self._head = 0  # absolute index of the next slot to write
        self._in_episode = False  # an episode is being written step by step (add_first was called)
        self._num_actions = 0  # slots in the window with has_action (maintained on write/overwrite)
        self._num_invalid = 0  # of those, the ones whose reward is flagged reward_invalid
        self._priority: LapPriority | None = None  # LAP sampling, off until enable_priority()
        self._last_starts: np.ndarray | None = None  # absolute starts of the last batch, for update_priority()

    # ------------------------------------------------------------------ storage
    def _slot_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-slot arrays: name -> (shape of one slot, dtype)."""
        specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        if "pixels" in self.observation_space.spaces:
            _, h, w = self.observation_space["pixels"].shape
            specs["pixels"] = ((self.frame_channels, h, w), np.dtype(np.uint8))
        if "state" in self.observation_space.spaces:
            specs["state"] = (self.observation_space["state"].shape, np.dtype(np.float32))
        specs["action"] = ((self.action_dim,), np.dtype(np.float32))
        specs["reward"] = ((), np.dtype(np.float32))
        specs["terminated"] = ((), np.dtype(bool))
        specs["has_action"] = ((), np.dtype(bool))
        specs["reward_invalid"] = ((), np.dtype(bool))
        specs["episode_start"] = ((), np.dtype(np.int64))
        return specs

    def _allocate(self) -> dict[str, np.ndarray]:
        """np.empty (lazy pages) or sparse .npy memmaps in ``storage_dir``; nothing is touched here."""
        arrays = {}
        if self.storage_dir is not None:
            self.storage_dir.mkdir(parents=True, exist_ok=True)
        for name, (shape, dtype) in self._slot_specs().items():
            full = (self.capacity, *shape)
            if self.storage_dir is None:
                arrays[name] = np.empty(full, dtype)
            else:
                path = self.storage_dir / f"{name}.npy"
                arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=full)
        return arrays

    @property
    def nbytes_per_transition(self) -> int:
        """Bytes of storage per slot (one transition in steady state); see the class docstring."""
        return int(
            sum(
                np.prod(shape, dtype=np.int64) * dtype.itemsize
                for shape, dtype in self._slot_specs().values()
            )
        )

    @property
    def _oldest(self) -> int:
        """Absolute index of the oldest slot still in the window."""
        return max(0, self._head - self.capacity)

    def __len__(self) -> int:
        """Number of valid transition starts (O(frame_stack): only the window's first k-1 slots can lack
        their stack history)."""
        oldest = self._oldest
        edge = np.arange(oldest, min(oldest + self.frame_stack - 1, self._head), dtype=np.int64)
        phys = edge % self.capacity
        a = self._arrays
        missing = a["has_action"][phys] & ~a["reward_invalid"][phys] & (a["episode_start"][phys] < oldest)
        return self._num_actions - self._num_invalid - int(missing.sum())

    @property
    def num_invalid_rewards(self) -> int:
        """Stored steps whose reward is flagged ``reward_invalid`` (kept out of every learning target)."""
        return self._num_invalid

    # ------------------------------------------------------------------ writing
    def _write_slots(self, count: int, obs: dict[str, np.ndarray], episode_start: int) -> np.ndarray:
        """Write ``count`` new obs slots at the head (overwriting the oldest); return physical indices."""
        absolute = np.arange(self._head, self._head + count, dtype=np.int64)
        phys = absolute % self.capacity
        overwritten = absolute >= self.capacity
        a, gone = self._arrays, phys[overwritten]
        self._num_actions -= int(a["has_action"][gone].sum())
        self._num_invalid -= int((a["has_action"][gone] & a["reward_invalid"][gone]).sum())
        if "pixels" in a:
            a["pixels"][phys] = obs["pixels"]
        if "state" in a:
            a["state"][phys] = obs["state"]
        a["action"][phys] = 0.0
        a["reward"][phys] = 0.0
        a["terminated"][phys] = False
        a["has_action"][phys] = False
        a["reward_invalid"][phys] = False
        a["episode_start"][phys] = episode_start
        self._head += count
        if self._priority is not None:
            self._priority.set(phys, 0.0)  # no action yet: not a transition start
        return phys

    def add_first(self, obs: Obs) -> None:
        """Start an episode with the observation returned by reset (an unfinished previous episode is ended
        as if truncated: its transitions bootstrap from its last obs)."""
        check_obs(obs, self.observation_space)
        if self.check_stack and "pixels" in obs:
            _check_reset_stack(obs["pixels"], self.frame_channels)
        self._write_slots(1, _newest(obs, self.frame_channels), episode_start=self._head)
        self._in_episode = True

    def add(self, action: np.ndarray, reward: float, obs: Obs, terminated: bool, truncated: bool,
            reward_invalid: bool = False) -> None:
        """Record one env step taken from the last added obs; ``terminated``/``truncated`` end the episode;
        ``reward_invalid``: the reward is made up (a failed reward-model call) and must not be learned from."""
        if not self._in_episode:
            raise ValueError(
                "add() called without an episode in progress; call add_first(obs) after reset first"
            )
        action = check_action(action, self._action_space)
        reward = _check_reward(reward)
        check_obs(obs, self.observation_space)
        prev = (self._head - 1) % self.capacity
        if self.check_stack and "pixels" in obs:
            self._check_step_stack(obs["pixels"])
        a = self._arrays
        a["action"][prev] = action
        a["reward"][prev] = reward
        a["terminated"][prev] = bool(terminated)
        a["has_action"][prev] = True
        a["reward_invalid"][prev] = bool(reward_invalid)
        self._num_actions += 1
        if self._priority is not None:
            self._priority.set_new(np.array([prev]))
        self._num_invalid += bool(reward_invalid)
        self._write_slots(1, _newest(obs, self.frame_channels), episode_start=int(a["episode_start"][prev]))
        if terminated or truncated:
            self._in_episode = False

    def end_episode(self) -> None:
        """End the episode in progress at its last stored observation, storing nothing more: a step whose
        observation could not be made (a camera gave no valid frame) never enters the replay; the episode ends
        there as a truncated one would (n-step returns bootstrap from that observation)."""
        self._in_episode = False

    def add_episode(self, episode: Episode) -> None:
        """Append a whole episode (single frames, see ``Episode``); ends any episode in progress."""
        obs, num_steps = self._check_episode(episode)
        start = self._head
        phys = self._write_slots(num_steps + 1, obs, episode_start=start)[:-1]
        a = self._arrays
        a["action"][phys] = episode.action
        a["reward"][phys] = episode.reward
        a["terminated"][phys] = episode.terminated
        a["has_action"][phys] = True
        invalid = np.zeros(num_steps, bool) if episode.reward_invalid is None else episode.reward_invalid
        a["reward_invalid"][phys] = invalid
        self._num_actions += num_steps
        if self._priority is not None:
            self._priority.set_new(phys)
        self._num_invalid += int(np.count_nonzero(invalid))
        self._in_episode = False

    def _check_step_stack(self, pixels: np.ndarray) -> None:
        """The older frames of a step's stack must be the frames we will rebuild (env stacking contract)."""
        if self.frame_stack == 1:
            return
        history = self._stack(np.array([self._head], dtype=np.int64), self._current_episode_start())[0]
        if not np.array_equal(pixels[: -self.frame_channels], history[: -self.frame_channels]):
            raise ObservationError(
                "observation['pixels'] older frames do not match the previous observation's newer frames; "
                "expected a stack ordered oldest -> newest shifted by one frame per step"
            )

    def _current_episode_start(self) -> np.ndarray:
        return self._arrays["episode_start"][[(self._head - 1) % self.capacity]]

    # ------------------------------------------------------------------ validity and n-step
    def _run_length(self, start: np.ndarray, max_len: int, valid_reward: bool = False) -> np.ndarray:
        """Number of consecutive stored actions from ``start`` within its episode, capped at ``max_len``
        (``valid_reward``: the run also stops at a reward flagged invalid).

        Slot t+i is only read when slot t+i-1 has an action of the same episode, which implies t+i was
        written after it (so it is < head and not overwritten)."""
        a, cap = self._arrays, self.capacity
        ep = a["episode_start"][start % cap]
        length = np.zeros(start.shape, dtype=np.int64)
        alive = np.ones(start.shape, dtype=bool)
        for i in range(max_len):
            phys = (start + i) % cap
            alive &= a["has_action"][phys] & (a["episode_start"][phys] == ep)
            if valid_reward:
                alive &= ~a["reward_invalid"][phys]
            length += alive
        return length

    def _history_ok(self, start: np.ndarray) -> np.ndarray:
        oldest = self._oldest
        ep = self._arrays["episode_start"][start % self.capacity]
        return (start - (self.frame_stack - 1) >= oldest) | (ep >= oldest)

    def _valid(self, start: np.ndarray, horizon: int, valid_reward: bool = False) -> np.ndarray:
        """Mask of starts with >= horizon actions ahead in their episode (with valid rewards if ``valid_reward``)
        and their stack history present."""
        return (self._run_length(start, horizon, valid_reward) >= horizon) & self._history_ok(start)

    def _sample_starts(self, batch_size: int, horizon: int, valid_reward: bool = False) -> np.ndarray:
        """Valid starts by rejection (vectorised) from uniform or LAP-priority candidates; exact mask fallback if
        rejection stalls. Rejecting invalid candidates keeps the priority distribution restricted to valid ones."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}, expected >= 1")
        low, high = self._oldest, self._head - 1  # the newest slot never has an action
        if high <= low:
            raise ValueError(f"replay has no transitions to sample (len={len(self)}); add episodes first")
        chosen: list[np.ndarray] = []
        need = batch_size
        for _ in range(_MAX_REJECTION_ROUNDS):
            cand = self._candidates(low, high, need)
            cand = cand[self._valid(cand, horizon, valid_reward)]
            chosen.append(cand)
            need -= cand.size
            if need == 0:
                self._last_starts = np.concatenate(chosen)
                return self._last_starts
        every = np.arange(low, high, dtype=np.int64)
        every = every[self._valid(every, horizon, valid_reward)]
        if every.size == 0:
            raise ValueError(
                f"replay has no episode segment with {horizon} steps to sample (len={len(self)})"
            )
        chosen.append(self._pick(every, need))
        self._last_starts = np.concatenate(chosen)
        return self._last_starts

    def _nstep(self, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n-step return, discount gamma^m * (1 - terminated), m) for valid starts; the horizon stops before a
        flagged reward, so a made-up reward never enters the sum (the target bootstraps from that step's obs)."""
        a, cap = self._arrays, self.capacity
        m = self._run_length(start, self.nstep, valid_reward=True)
        ret = np.zeros(start.shape, dtype=np.float64)
        scale = np.ones(start.shape, dtype=np.float64)
        terminal = np.zeros(start.shape, dtype=bool)
        for i in range(self.nstep):
            live = i < m
            phys = (start + i) % cap
            ret += np.where(live, scale * a["reward"][phys], 0.0)
            terminal |= live & a["terminated"][phys]
            scale = np.where(live, scale * self.discount, scale)
        return ret, scale * ~terminal, m

    # ------------------------------------------------------------------ gathering
    def _stack(
        self, index: np.ndarray, episode_start: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Rebuild (..., 3k, H, W) stacks for absolute ``index``: frames max(start, index-k+1) .. index."""
        offsets = np.arange(-(self.frame_stack - 1), 1, dtype=np.int64)
        src = np.maximum(index[..., None] + offsets, episode_start[..., None]) % self.capacity
        frames = self._arrays["pixels"]
        shape = (*index.shape, self.frame_stack * self.frame_channels, *frames.shape[2:])
        if out is None:
            return frames[src].reshape(shape)
        np.take(frames, src, axis=0, out=out.reshape(*src.shape, *frames.shape[1:]), mode="clip")
        return out

    def _empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Output array; page-locked when sampling to CUDA so the host->device copy can be asynchronous."""
        if self.device.type == "cuda":
            return torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], pin_memory=True).numpy()
        return np.empty(shape, dtype)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _gather_obs(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Observation dict (stacked pixels, state) at absolute ``index`` of any shape."""
        a = self._arrays
        phys = index % self.capacity
        obs = {}
        if "pixels" in a:
            shape = (*index.shape, *self.observation_space["pixels"].shape)
            out = self._stack(index, a["episode_start"][phys], self._empty(shape, np.dtype(np.uint8)))
            obs["pixels"] = self._to_device(out)
        if "state" in a:
            obs["state"] = self._to_device(_take(a["state"], phys, self._empty))
        return obs

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int) -> Batch:
        """n-step transitions, uniform or by LAP priority once enabled: pixels uint8 (B, 3k, H, W), reward/discount
        float32 (B, 1); never one that starts at a flagged (``reward_invalid``) reward."""
        start = self._sample_starts(batch_size, horizon=1, valid_reward=True)
        ret, disc, m = self._nstep(start)
        action = _take(self._arrays["action"], start % self.capacity, self._empty)
        return Batch(
            obs=self._gather_obs(start),
            action=self._to_device(action),
            reward=self._to_device(ret.astype(np.float32)[:, None]),
            discount=self._to_device(disc.astype(np.float32)[:, None]),
            next_obs=self._gather_obs(start + m),
        )

    def sample_trajectories(self, batch_size: int, horizon: int) -> Trajectories:
        """``horizon``-step segments in one episode, starts drawn as in :meth:`sample`; time-major: obs (H+1, B, ...),
        action (H, B, A), reward (H, B, 1), terminated (H, B, 1) float32 (1.0 where the MDP ended); ``reward_valid``
        (H, B, 1) float32 is 0.0 at flagged rewards (None when the batch has none: nothing to mask)."""
        if horizon < 1:
            raise ValueError(f"horizon={horizon}, expected >= 1")
        start = self._sample_starts(batch_size, horizon)
        steps = start[None, :] + np.arange(horizon + 1, dtype=np.int64)[:, None]  # (H+1, B)
        phys = steps[:-1] % self.capacity
        a = self._arrays
        invalid = a["reward_invalid"][phys]
        return Trajectories(
            obs=self._gather_obs(steps),
            action=self._to_device(_take(a["action"], phys, self._empty)),
            reward=self._to_device(_take(a["reward"], phys, self._empty)[..., None]),
            terminated=self._to_device(a["terminated"][phys][..., None].astype(np.float32)),
            reward_valid=self._to_device((~invalid)[..., None].astype(np.float32)) if invalid.any() else None,
        )

    def save(self, path: str | Path) -> None:
        """Write an .npz atomically (temp file in the same dir, fsync, os.replace); no pickle involved."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        payload = {f"arrays/{name}": arr for name, arr in self._filled().items()}
        for key, sub in self.observation_space.spaces.items():
            payload[f"space/{key}/low"] = sub.low
            payload[f"space/{key}/high"] = sub.high
        if self._priority is not None:  # LAP priorities: settings in meta, leaves as an array
            priority = self._priority.state_dict(min(self._head, self.capacity))
            payload["priority/leaves"] = priority.pop("leaves")
            meta["priority"] = priority
        payload["meta"] = np.array(json.dumps(meta, default=str))
        with atomic_write(path) as f:
            np.savez(f, **payload)


# ---------------------------------------------------------------------- helpers
_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float32): torch.float32,
    np.dtype(bool): torch.bool,
    np.dtype(np.int64): torch.int64,
}


def _newest(obs: Obs, frame_channels: int) -> dict[str, np.ndarray]:
    """What a slot stores: the newest frame of the stack (every view) and the state."""
    out = dict(obs)
    if "pixels" in obs:
        out["pixels"] = obs["pixels"][-frame_channels:]
    return out


def _take(array: np.ndarray, index: np.ndarray, empty: Callable[..., np.ndarray]) -> np.ndarray:
    out = empty((*index.shape, *array.shape[1:]), array.dtype)
    np.take(array, index, axis=0, out=out, mode="clip")  # "raise" would copy via a temp buffer
    return out


