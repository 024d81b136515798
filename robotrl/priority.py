"""Loss-adjusted prioritisation (LAP, Fujimoto et al. 2020) for :class:`robotrl.replay.ReplayBuffer`.

A slot's priority is ``max(|loss|, min_priority) ** alpha``; new transitions enter at the largest priority seen so far
(``min_priority ** alpha`` before any update), so they are sampled at least once soon. Sampling is proportional to
priority. The priorities live in a sum tree over the replay's physical slots: sampling a batch and updating it are
O(B log capacity) vectorised numpy, instead of the O(capacity) cumulative sum per batch of facebookresearch/MRQ's
buffer (same distribution). Clamping at ``min_priority`` (1 by default) is what makes it LAP rather than PER: small
errors are sampled uniformly, so no importance weights are needed.

The tree is a pure function of its leaves (every internal node is recomputed as left + right, never adjusted by a
delta), so restoring the leaves restores sampling bit-for-bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robotrl.errors import CheckpointError


class LapPriority:
    """Per-slot LAP priorities in a float64 sum tree; ``capacity`` leaves, the rest padding at 0."""

    def __init__(self, capacity: int, alpha: float = 0.4, min_priority: float = 1.0) -> None:
        if int(capacity) < 1:
            raise ValueError(f"capacity={capacity}, expected >= 1")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha={alpha}, expected in [0, 1] (0: uniform, 1: proportional to the loss)")
        if not float(min_priority) > 0.0:
            raise ValueError(f"min_priority={min_priority}, expected > 0 (a zero priority is never sampled again)")
        self.capacity = int(capacity)
        self.alpha, self.min_priority = float(alpha), float(min_priority)
        self._leaves = 1 << max(0, (self.capacity - 1).bit_length())  # power of two >= capacity
        self._tree = np.zeros(2 * self._leaves, np.float64)  # node i has children 2i, 2i+1; leaves at [L, 2L)
        self.max_priority = self.min_priority**self.alpha

    # ------------------------------------------------------------------ values
    def priority_of(self, loss: np.ndarray) -> np.ndarray:
        """LAP priority of per-sample losses (e.g. |TD error|): ``max(|loss|, min_priority) ** alpha``."""
        loss = np.abs(np.asarray(loss, np.float64))
        if not np.all(np.isfinite(loss)):
            raise ValueError(f"priority losses must be finite, got {loss[~np.isfinite(loss)][:4]}")
        return np.maximum(loss, self.min_priority) ** self.alpha

    @property
    def total(self) -> float:
        return float(self._tree[1])

    def get(self, slot: np.ndarray) -> np.ndarray:
        return self._tree[self._leaves + np.asarray(slot, np.int64)]

    # ------------------------------------------------------------------ writes
    def set(self, slot: np.ndarray, value: np.ndarray | float) -> None:
        """Leaves ``slot`` (physical indices) <- ``value``; parents recomputed level by level."""
        slot = np.asarray(slot, np.int64).reshape(-1)
        if slot.size == 0:
            return
        node = self._leaves + slot
        self._tree[node] = value  # with duplicate slots the last write wins, like numpy fancy assignment
        node = np.unique(node >> 1)
        while node[0] >= 1:
            self._tree[node] = self._tree[2 * node] + self._tree[2 * node + 1]
            if node[0] == 1:
                break
            node = np.unique(node >> 1)

    def set_new(self, slot: np.ndarray) -> None:
        """New transitions: the largest priority seen so far."""
        self.set(slot, self.max_priority)

    def update(self, slot: np.ndarray, loss: np.ndarray) -> None:
        """Set ``slot``'s priorities from their losses (:meth:`priority_of`) and raise ``max_priority``."""
        value = self.priority_of(loss).reshape(-1)
        if value.shape != np.shape(slot):
            raise ValueError(f"got {value.shape[0]} losses for {np.size(slot)} sampled slots, expected one each")
        self.set(slot, value)
        self.max_priority = max(self.max_priority, float(value.max()))

    # ------------------------------------------------------------------ sampling
    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` physical slots drawn with probability priority / total (tree descent, vectorised)."""
        total = self.total
        if not total > 0.0:
            raise ValueError("no slot has a positive priority to sample")
        target = rng.random(count) * total
        node = np.ones(count, np.int64)
        while node[0] < self._leaves:
            left = 2 * node
            go_right = target >= self._tree[left]
            target = np.where(go_right, target - self._tree[left], target)
            node = left + go_right
        # float rounding can step onto an empty padding leaf or slot: walk back to the nearest positive one
        slot = np.minimum(node - self._leaves, self.capacity - 1)
        bad = self.get(slot) <= 0.0
        if bad.any():
            slot[bad] = [self._nearest_positive(int(s)) for s in slot[bad]]
        return slot

    def _nearest_positive(self, slot: int) -> int:
        positive = np.flatnonzero(self._tree[self._leaves:self._leaves + self.capacity] > 0.0)
        return int(positive[np.argmin(np.abs(positive - slot))])

    # ------------------------------------------------------------------ state
    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "min_priority": self.min_priority}

    def state_dict(self, filled: int) -> dict[str, Any]:
        """Leaves of the first ``filled`` slots (the rest are 0) and ``max_priority``; the tree is rebuilt."""
        return {**self.config(), "max_priority": self.max_priority,
                "leaves": self._tree[self._leaves:self._leaves + filled].copy()}

    def load_state_dict(self, state: dict[str, Any], filled: int) -> None:
        leaves = np.asarray(state["leaves"], np.float64)
        if leaves.shape != (filled,) or not np.all(np.isfinite(leaves)) or np.any(leaves < 0):
            raise CheckpointError(f"replay priorities have shape {leaves.shape}, expected ({filled},) finite >= 0")
        if {"alpha": float(state["alpha"]), "min_priority": float(state["min_priority"])} != self.config():
            raise CheckpointError(f"replay priorities were saved with alpha={state['alpha']}, "
                                  f"min_priority={state['min_priority']}, expected {self.config()}")
        self._tree[:] = 0.0
        self._tree[self._leaves:self._leaves + filled] = leaves
        for level_start in _levels(self._leaves):
            nodes = np.arange(level_start, 2 * level_start)
            self._tree[nodes] = self._tree[2 * nodes] + self._tree[2 * nodes + 1]
        self.max_priority = float(state["max_priority"])


def _levels(leaves: int) -> list[int]:
    """First node of each internal level, bottom-up: L/2, L/4, ..., 1."""
    out, start = [], leaves // 2
    while start >= 1:
        out.append(start)
        start //= 2
    return out


class PrioritizedSamplingMixin:
    """LAP sampling for :class:`robotrl.replay.ReplayBuffer` (uses its ``_priority``, ``_last_starts``, ``rng``,
    ``_arrays``, ``_head`` and ``capacity``). Off by default: the uniform path draws exactly what it always did."""

    _priority: LapPriority | None
    _last_starts: np.ndarray | None
    _rng: np.random.Generator
    _arrays: dict[str, np.ndarray]
    _head: int
    capacity: int

    def enable_priority(self, alpha: float = 0.4, min_priority: float = 1.0) -> None:
        """Sample by loss-adjusted priority from now on (:mod:`robotrl.priority`); stored transitions start at
        ``min_priority ** alpha``. Calling again with the same settings does nothing (e.g. after a resume)."""
        if self._priority is not None:
            if self._priority.config() != {"alpha": float(alpha), "min_priority": float(min_priority)}:
                raise ValueError(f"replay priorities are already on with {self._priority.config()}, got "
                                 f"alpha={alpha}, min_priority={min_priority}")
            return
        self._priority = LapPriority(self.capacity, alpha, min_priority)
        filled = min(self._head, self.capacity)
        self._priority.set_new(np.flatnonzero(self._arrays["has_action"][:filled]))

    @property
    def prioritized(self) -> bool:
        return self._priority is not None

    def update_priority(self, loss: np.ndarray | torch.Tensor) -> None:
        """Per-sample losses (e.g. |TD error|, shape (B,) or (B, 1)) of the last sampled batch -> its priorities."""
        if self._priority is None or self._last_starts is None:
            raise ValueError("update_priority() needs enable_priority() and a sampled batch first")
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().to("cpu", torch.float64).numpy()
        self._priority.update(self._last_starts % self.capacity, np.asarray(loss).reshape(-1))

    def _candidates(self, low: int, high: int, need: int) -> np.ndarray:
        """Absolute starts in [low, high): uniform, or by LAP priority when enabled (before the validity check)."""
        if self._priority is None:
            return self.rng.integers(low, high, size=need)
        return low + (self._priority.sample(need, self.rng) - low) % self.capacity

    def _pick(self, every: np.ndarray, need: int) -> np.ndarray:
        """``need`` of the valid starts ``every``: uniform, or by LAP priority when enabled."""
        if self._priority is None:
            return every[self.rng.integers(0, every.size, size=need)]
        weight = self._priority.get(every % self.capacity)
        return self.rng.choice(every, size=need, p=weight / weight.sum())

