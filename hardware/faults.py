"""Injected faults shared by the mock and sim robots: latency, noise, dropped frames, and driver failures.

Configured under ``faults:`` in a robot config (``robot=sim faults.stall_at=10``) or passed directly in tests.
Send counts are 1-based: ``raise_at=3`` makes the third ``send`` raise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from robotrl.errors import ConfigError


@dataclass
class Faults:
    """What to inject. All off by default."""

    latency_ms: float = 0.0  # added to every state read and every send
    obs_noise_std: float = 0.0  # Gaussian noise on measured joint (rad) and end-effector (m) positions
    drop_frame_prob: float = 0.0  # a camera read returns the previous frame (old timestamp) with this probability
    raise_at: int | None = None  # this send raises RuntimeError inside the driver
    disconnect_at: int | None = None  # from this send on the link is down (ConnectionError)
    stall_at: int | None = None  # this send blocks for stall_s seconds (a hung bus)
    stall_s: float = 5.0
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any, where: str = "robot.faults") -> Faults:
        cfg = dict(cfg.items()) if hasattr(cfg, "items") and not isinstance(cfg, Mapping) else dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys: {sorted(known)}")
        faults = cls(**cfg)
        for key in ("latency_ms", "obs_noise_std", "stall_s"):
            value = getattr(faults, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"{where}.{key}={value!r}, expected a finite number >= 0")
        if not 0 <= faults.drop_frame_prob <= 1:
            raise ConfigError(f"{where}.drop_frame_prob={faults.drop_frame_prob!r}, expected a probability in [0, 1]")
        for key in ("raise_at", "disconnect_at", "stall_at"):
            value = getattr(faults, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{where}.{key}={value!r}, expected null or a send count >= 1")
        return faults


class FaultInjector:
    """Applies :class:`Faults` inside a driver's hooks (call ``on_send`` first thing in ``_send``)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.sends = 0
        self.link_down = False
        self.rng = np.random.default_rng(self.faults.seed)

    def _latency(self) -> None:
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000)

    def on_send(self) -> None:
        """Count the send and fail, stall or delay it as configured."""
        f = self.faults
        self.sends += 1
        if f.disconnect_at is not None and self.sends >= f.disconnect_at:
            self.link_down = True
        if self.link_down:
            raise ConnectionError(f"link lost (injected at send {f.disconnect_at})")
        if f.raise_at == self.sends:
            raise RuntimeError(f"driver exception (injected at send {f.raise_at})")
        if f.stall_at == self.sends:
            time.sleep(f.stall_s)
        self._latency()

    def on_read(self) -> None:
        if self.link_down:
            raise ConnectionError("link lost")
        self._latency()

    def noise(self, shape: tuple[int, ...]) -> np.ndarray:
        std = self.faults.obs_noise_std
        return self.rng.normal(0.0, std, shape) if std else np.zeros(shape)

    def drop_frame(self) -> bool:
        p = self.faults.drop_frame_prob
        return bool(p) and bool(self.rng.random() < p)
