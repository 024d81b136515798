"""The interfaces between a learned world model, a reflector and ``WorldEnv`` (core, so envs/agents/rewards and
the World-Env workflows can all name them without importing each other).

A **world model** predicts frames (and the robot's proprioception) from past frames and actions, batched::

    state = model.init(frames uint8 [B, context, 3, H, W], proprio float32 [B, P])
    state, frame uint8 [B, 3, H, W], proprio float32 [B, P] = model.step(state, action float32 [B, A])

A **reflector** judges frames against an instruction: ``score(frames uint8 [B, H, W, 3], instructions) -> float32
[B]`` in [0, 1] (probability of success), with ``threshold`` above which a frame looks done; the task counts as done
after ``consecutive`` such frames in a row (optional, 1 when absent: one blurry frame of a world model is too weak
evidence). The CLIP reflector is ``robotrl.rewards.reflector.CLIPReflector``; a larger VLM only needs these members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from robotrl.errors import ConfigError, ObservationError

MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")


def default_instructions() -> dict[str, str]:
    """Task -> instruction for MT10, from ``configs/worldenv/default.yaml`` (Meta-World has none; these are ours),
    shared by the World-Env stages and ``agent=vla``."""
    from omegaconf import OmegaConf

    from robotrl.overrides import config_dir

    return dict(OmegaConf.to_container(OmegaConf.load(config_dir() / "worldenv" / "default.yaml").instructions))


@runtime_checkable
class WorldModel(Protocol):
    image_size: int
    action_dim: int
    proprio_dim: int
    context: int

    def init(self, frames: np.ndarray, proprio: np.ndarray) -> Any:
        """Initial rollout state from ``context`` real frames per batch entry and the current proprioception."""

    def step(self, state: Any, action: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """Advance every batch entry by one action: (state, frame uint8 [B, 3, H, W], proprio [B, P])."""


@runtime_checkable
class Reflector(Protocol):
    threshold: float

    def score(self, frames: np.ndarray, instructions: Sequence[str]) -> np.ndarray:
        """Success probability in [0, 1] per frame (uint8 [B, H, W, 3]) and its instruction."""


def termination_rule(reflector: Reflector) -> tuple[float, int]:
    """(threshold, frames above it in a row that end an episode) of a reflector; 1 frame when it says nothing."""
    return float(reflector.threshold), int(getattr(reflector, "consecutive", 1))


def success_streak(streak: np.ndarray, scores: np.ndarray, threshold: float,
                   consecutive: int) -> tuple[np.ndarray, np.ndarray]:
    """One step of the termination rule for a batch: (frames above ``threshold`` in a row so far, done where that
    streak reaches ``consecutive``)."""
    streak = np.where(np.asarray(scores) > threshold, streak + 1, 0)
    return streak, streak >= consecutive


def fired_steps(scores: np.ndarray, threshold: float, consecutive: int) -> np.ndarray:
    """Per step of one episode's scores: has the termination rule fired by this step (True from the firing step
    on)."""
    streak, fired = np.zeros((), np.int64), np.zeros(len(scores), bool)
    for t, score in enumerate(np.asarray(scores)):
        streak, done = success_streak(streak, score, threshold, consecutive)
        if done:
            fired[t:] = True
            break
    return fired


def check_instruction(instruction: Any, known: Sequence[str] | None = None) -> str:
    """The instruction, stripped, or a one-line ConfigError (empty, not text, or not one of ``known``)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError(f"instruction={instruction!r}, expected a non-empty text such as 'open the drawer'")
    text = instruction.strip()
    if known is not None and text not in known:
        raise ConfigError(f"instruction={text!r} is not one this model was trained on; expected one of {list(known)}")
    return text


def check_frames_chw(frames: Any, size: int, name: str = "frames") -> np.ndarray:
    """``frames`` as uint8 [..., 3, size, size] (channels first) or a one-line ObservationError."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise ObservationError(f"{name} have dtype {arr.dtype}, expected uint8 RGB in [0, 255]")
    if arr.ndim < 3 or arr.shape[-3:] != (3, size, size):
        raise ObservationError(f"{name} have shape {arr.shape}, expected [..., 3, {size}, {size}] (channels first)")
    return arr


def check_context(frames: Any, proprio: Any, size: int, context: int, proprio_dim: int,
                  name: str) -> tuple[np.ndarray, np.ndarray]:
    """Episode starts for a world model: uint8 frames [N>=1, context, 3, size, size] and float32 proprio
    [N, proprio_dim], or a one-line ObservationError naming ``name``."""
    frames = check_frames_chw(frames, size, f"{name} initial frames")
    if frames.ndim != 5 or frames.shape[1] != context or frames.shape[0] < 1:
        raise ObservationError(f"{name} initial frames have shape {frames.shape}, expected [N>=1, {context}, 3, "
                               f"{size}, {size}] (N starts of {context} context frames)")
    proprio = np.asarray(proprio, np.float32)
    if proprio.shape != (frames.shape[0], proprio_dim):
        raise ObservationError(f"{name} initial proprio has shape {proprio.shape}, expected "
                               f"({frames.shape[0]}, {proprio_dim})")
    return frames, proprio


__all__ = ["MT10", "Reflector", "WorldModel", "check_frames_chw", "check_instruction", "default_instructions",
           "fired_steps", "success_streak", "termination_rule"]
