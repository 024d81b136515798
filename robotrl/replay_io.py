"""Saving, restoring and validating :class:`robotrl.replay.ReplayBuffer` (split from ``replay.py`` to keep it short).

``ReplayStateMixin`` holds everything that turns a buffer into plain tensors/arrays and back (``state_dict``,
``load_state_dict``, the ``load`` classmethod; ``save`` stays in ``replay.py``), and the checks of a buffer's
configuration and of what is added to it. The LAP priorities (:mod:`robotrl.priority`), when enabled, are saved and
restored with the rest.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robotrl.errors import CheckpointError, ObservationError
from robotrl.priority import LapPriority
from robotrl.types import Episode

FRAME_CHANNELS = 3  # per camera view; a frame holds 3 * views channels (the stack's channels / frame_stack)
_FORMAT_VERSION = 1


class ReplayStateMixin:
    """State (de)serialisation, summaries and episode checks of ``ReplayBuffer``; uses its attributes, holds none."""

    def mean_abs_reward(self, eps: float = 1e-8) -> float:
        """Mean |reward| over the stored steps with a valid reward (MR.Q's reward scale), at least ``eps``."""
        filled = min(self._head, self.capacity)
        a = self._arrays
        keep = a["has_action"][:filled] & ~a["reward_invalid"][:filled]
        return max(float(np.abs(a["reward"][:filled][keep]).mean()) if keep.any() else 0.0, eps)

    def has_terminations(self) -> bool:
        """Whether any stored step ended its episode with ``terminated`` (MR.Q trains its done head only then)."""
        filled = min(self._head, self.capacity)
        return bool((self._arrays["terminated"][:filled] & self._arrays["has_action"][:filled]).any())

    def _config(self) -> dict[str, Any]:
        spaces = {
            key: {"shape": list(sub.shape), "dtype": str(sub.dtype)}
            for key, sub in self.observation_space.spaces.items()
        }
        return {
            "version": _FORMAT_VERSION,
            "capacity": self.capacity,
            "action_dim": self.action_dim,
            "frame_stack": self.frame_stack,
            "nstep": self.nstep,
            "discount": self.discount,
            "spaces": spaces,
        }

    def _filled(self) -> dict[str, np.ndarray]:
        """Views of the written physical slots (the whole array once wrapped)."""
        n = min(self._head, self.capacity)
        return {name: arr[:n] for name, arr in self._arrays.items()}

    def _meta(self) -> dict[str, Any]:
        return {
            "config": self._config(),
            "head": self._head,
            "in_episode": self._in_episode,
            "num_actions": self._num_actions,
            "rng": self.rng.bit_generator.state,
        }

    def state_dict(self) -> dict[str, Any]:
        """Full state (contents, positions, RNG). Arrays are CPU torch tensors *aliasing* the live storage
        (like nn.Module.state_dict): serialise before adding more. Tensors, not numpy arrays, because
        torch.load(weights_only=True) refuses numpy arrays; np.asarray(tensor) gives numpy back for free."""
        state = self._meta()
        state["arrays"] = {name: torch.from_numpy(np.asarray(arr)) for name, arr in self._filled().items()}
        if self._priority is not None:
            state["priority"] = self._priority.state_dict(min(self._head, self.capacity))
            state["priority"]["leaves"] = torch.from_numpy(state["priority"]["leaves"])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict from a buffer with the same config (CheckpointError otherwise)."""
        mine, theirs = self._config(), _plain(state.get("config"))
        if mine != theirs:
            raise CheckpointError(f"replay state has config {theirs}, expected {mine}")
        head = int(state["head"])
        filled = min(head, self.capacity)
        arrays = state["arrays"]
        if "reward_invalid" not in arrays and "has_action" in arrays:  # saved before rewards carried their flag
            arrays = {**arrays, "reward_invalid": np.zeros(np.shape(arrays["has_action"]), bool)}
        for name, (shape, dtype) in self._slot_specs().items():
            value = np.asarray(arrays[name]) if name in arrays else None
            if value is None or value.shape != (filled, *shape) or value.dtype != dtype:
                got = "missing" if value is None else f"{value.shape} {value.dtype}"
                raise CheckpointError(
                    f"replay state array {name!r} is {got}, expected {(filled, *shape)} {dtype}"
                )
        for name in self._arrays:
            self._arrays[name][:filled] = np.asarray(arrays[name])
        self._head = head
        self._in_episode = bool(state["in_episode"])
        self._num_actions = int(state["num_actions"])
        filled_arrays = self._filled()
        self._num_invalid = int(np.count_nonzero(filled_arrays["has_action"] & filled_arrays["reward_invalid"]))
        self.rng.bit_generator.state = state["rng"]
        self._load_priority(state.get("priority"), filled)

    def _load_priority(self, saved: dict[str, Any] | None, filled: int) -> None:
        """LAP priorities as saved: on (with their settings and values) or off, whatever this buffer had."""
        self._priority, self._last_starts = None, None
        if saved is not None:
            self._priority = LapPriority(self.capacity, float(saved["alpha"]), float(saved["min_priority"]))
            self._priority.load_state_dict({**saved, "leaves": np.asarray(saved["leaves"])}, filled)


    @classmethod
    def load(
        cls,
        path: str | Path,
        storage_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        check_stack: bool = True,
    ) -> Any:
        """Rebuild a buffer saved with ``save``; CheckpointError naming ``path`` if missing/corrupt."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                contents = {key: data[key] for key in data.files}  # reads (and CRC-checks) every member
            meta = json.loads(str(contents["meta"]))
            config = meta["config"]
            spaces = {
                key: gym.spaces.Box(
                    contents[f"space/{key}/low"], contents[f"space/{key}/high"], dtype=np.dtype(spec["dtype"])
                )
                for key, spec in config["spaces"].items()
            }
            buffer = cls(
                config["capacity"], gym.spaces.Dict(spaces), config["action_dim"], config["frame_stack"],
                nstep=config["nstep"], discount=config["discount"], storage_dir=storage_dir, device=device,
                check_stack=check_stack,
            )  # fmt: skip
            meta["rng"] = _rng_from_json(meta["rng"])
            meta["arrays"] = {k.split("/", 1)[1]: v for k, v in contents.items() if k.startswith("arrays/")}
            if "priority" in meta:
                meta["priority"]["leaves"] = contents["priority/leaves"]
            buffer.load_state_dict(meta)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from err
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(
                f"{path}: not a readable replay checkpoint ({type(err).__name__}: {err})"
            ) from err
        return buffer

    def _check_episode(self, episode: Episode) -> tuple[dict[str, np.ndarray], int]:
        """Validate an Episode against the buffer's spaces; return its obs and its number of steps T."""
        if set(episode.obs) != set(self.observation_space.spaces):
            raise ObservationError(
                f"episode obs keys {sorted(episode.obs)} != expected {sorted(self.observation_space.spaces)}"
            )
        num_steps = int(np.asarray(episode.reward).shape[0])
        expected = {
            name: ((num_steps + 1, *shape), dtype) for name, (shape, dtype) in self._slot_specs().items()
        }
        expected["action"] = ((num_steps, self.action_dim), np.dtype(np.float32))
        for name, value in [*episode.obs.items(), ("action", episode.action)]:
            shape, dtype = expected[name]
            if np.shape(value) != shape or np.asarray(value).dtype != dtype:
                raise ValueError(
                    f"episode {name} has shape {np.shape(value)} dtype {np.asarray(value).dtype}, "
                    f"expected {shape} {dtype} (obs are single frames, T+1 of them)"
                )
        for name in ("terminated", "reward_invalid"):
            value = getattr(episode, name)
            if value is not None and np.shape(value) != (num_steps,):
                raise ValueError(f"episode {name} has shape {np.shape(value)}, expected ({num_steps},)")
        if num_steps < 1 or num_steps + 1 > self.capacity:
            raise ValueError(f"episode has {num_steps} steps, expected 1 .. capacity-1 = {self.capacity - 1}")
        if not np.all(np.isfinite(episode.reward)) or not np.all(np.isfinite(episode.action)):
            raise ValueError("episode reward/action contain NaN or inf, expected finite values")
        if np.any(np.abs(episode.action) > 1.0 + 1e-6):
            raise ValueError(
                f"episode actions reach {np.abs(episode.action).max():.4f}, expected within [-1, 1]"
            )
        if np.any(np.asarray(episode.terminated)[:-1]):
            raise ValueError(
                "episode terminated is True before the last step, expected only at the last step"
            )
        return dict(episode.obs), num_steps


def _check_config(
    capacity: int, space: gym.spaces.Dict, action_dim: int, frame_stack: int, nstep: int, discount: float
) -> None:
    """Fail at construction, with the offending value, rather than deep inside sampling."""
    if (
        not isinstance(space, gym.spaces.Dict)
        or not set(space.spaces)
        or not set(space.spaces) <= {"pixels", "state"}
    ):
        raise ValueError(f"observation_space must be a Dict with keys 'pixels' and/or 'state', got {space}")
    if frame_stack < 1:
        raise ValueError(f"frame_stack={frame_stack}, expected >= 1")
    if capacity < frame_stack + 1 or capacity < 2:
        raise ValueError(
            f"capacity={capacity}, expected >= max(2, frame_stack + 1) = {max(2, frame_stack + 1)}"
        )
    if action_dim < 1 or nstep < 1:
        raise ValueError(f"action_dim={action_dim}, nstep={nstep}, expected both >= 1")
    if not 0.0 < discount <= 1.0:
        raise ValueError(f"discount={discount}, expected in (0, 1]")
    if "pixels" in space.spaces:
        pix = space["pixels"]
        if pix.dtype != np.uint8 or len(pix.shape) != 3 or pix.shape[0] % (FRAME_CHANNELS * frame_stack):
            raise ValueError(
                f"pixels space is {pix.shape} {pix.dtype}, "
                f"expected uint8 ({FRAME_CHANNELS} * views * {frame_stack}, H, W) "
                f"for frame_stack={frame_stack}"
            )
    if "state" in space.spaces:
        st = space["state"]
        if st.dtype != np.float32 or len(st.shape) != 1:
            raise ValueError(f"state space is {st.shape} {st.dtype}, expected float32 (S,)")


def _check_reward(reward: Any) -> float:
    value = np.asarray(reward, dtype=np.float64)
    if value.size != 1 or not np.isfinite(value).all():
        raise ValueError(f"reward is {reward!r}, expected a finite scalar")
    return float(value.reshape(()))


def _check_reset_stack(pixels: np.ndarray, frame_channels: int) -> None:
    frames = pixels.reshape(-1, frame_channels, *pixels.shape[1:])
    if not (frames == frames[-1]).all():
        raise ObservationError(
            "observation['pixels'] at reset holds different frames, "
            "expected frame_stack copies of the first frame"
        )


def _plain(value: Any) -> Any:
    """Normalise a config that went through JSON / torch.save (tuples -> lists)."""
    return json.loads(json.dumps(value)) if value is not None else None


def _rng_from_json(state: dict[str, Any]) -> dict[str, Any]:
    """JSON keeps PCG64's 128-bit ints exactly (Python ints); nothing to convert but make it explicit."""
    return {**state, "state": {k: int(v) for k, v in state["state"].items()}}
