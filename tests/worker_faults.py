"""A light contract env for env-worker tests (no simulator: a spawned worker starts in about a second):
its ``kind`` call number ``at`` hangs (``hang_reset``) or raises (``raise_step``), once per test (a marker file is
written first, so the restarted worker plays on normally)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


class InjectedFault:
    """Call number ``at`` of ``kind`` (``hang_reset`` or ``raise_step``) hangs or raises, once per test: the marker
    file is written first, so the restarted worker plays on normally. No marker: no fault."""

    kind: str = ""
    at: int = 0
    calls: int = 0
    marker: Path | None = None

    def _maybe_fail(self, call: str) -> None:
        if self.marker is None or not self.kind.endswith(call):
            return
        self.calls += 1
        if self.calls != self.at or self.marker.exists():
            return
        self.marker.write_text(self.kind)
        if self.kind == "hang_reset":
            time.sleep(3600)  # a camera that never answers: the vector env's timeout kills the worker
        raise RuntimeError("injected: EGL context lost")


class FaultyCounter(InjectedFault, gym.Env):
    """``obs["state"] = [reset seed mod 997, t]``; episodes of ``length`` steps."""

    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    robotrl_info = {"suite": "fake"}  # what the trainer records of a contract env

    def __init__(self, length: int, kind: str = "", at: int = 0, marker: str = "") -> None:
        self.length, self.kind, self.at, self.calls = length, kind, at, 0
        self.marker = Path(marker) if marker else None
        self.seed_id, self.t = -1, 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": np.array([self.seed_id, self.t], np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._maybe_fail("reset")
        self.seed_id, self.t = -1 if seed is None else seed % 997, 0
        return self._obs(), {}

    def render_frame(self, size: int) -> np.ndarray:
        """The frame a reward model scores: every pixel ``10 t``."""
        return np.full((size, size, 3), 10 * self.t, np.uint8)

    def step(self, action: Any):
        self._maybe_fail("step")
        self.t += 1
        return self._obs(), float(self.t), False, self.t >= self.length, {}
