"""The robotrl demo format (one documented on-disk format for demonstrations): save, load, validate.

Format (``FORMAT_VERSION = 1``): a directory holding

``meta.json``
    ``{"format_version": 1, "name", "suite", "task", "seed", "image_size", "frame_stack", "action_repeat",
    "camera", "cameras", "fast_render", "max_episode_steps", "metaworld_version", "reward_function_version",
    "state_dim", "proprio_index", "action_dim", "num_episodes", "episode_seeds", "episode_lengths",
    "episode_returns", "attempts"}``.  ``num_episodes`` is authoritative: episode files beyond it are ignored.
    ``cameras`` (optional, default ``[camera]``) lists the views of each frame; ``proprio_index`` (optional) says
    which state entries are the robot's proprioception (``load_demos(path, proprio=True)`` keeps only those).
``episode_000000.npz`` ... ``episode_{num_episodes-1:06d}.npz``
    ``pixels``  (T+1, 3 * views, H, W) uint8 -- single frames: the newest frame of each stacked observation
    (``stacked[-3 * views:]``), so frame stacks are rebuilt by the loader/replay and never stored;
    ``state``   (T+1, S) float32      -- the 39-d Meta-World state;
    ``action``  (T, A) float32 in [-1, 1] (what the env executed, after clipping the expert);
    ``reward``  (T,) float32 (summed over the action repeat);
    ``terminated`` (T,) bool (time-limit ends are not terminations);
    ``success`` (T,) bool (any success during the step's action repeat);
    ``intervention`` (T,) bool, optional (written by ``robotrl deploy record=``): steps a human operator drove.

Every file is written atomically (temp file in the same directory, flush, fsync, ``os.replace``) so a crash never
leaves a half-written episode behind a valid name. Core (no env import): agents and reward models read demos through
:func:`load_demos`; Meta-World's scripted-expert generator is :func:`robotrl.envs.demos.generate_demos`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.readers import read_json, read_npz
from robotrl.types import Episode

FORMAT_VERSION = 1
META = "meta.json"
KEYS = ("pixels", "state", "action", "reward", "terminated", "success")
_DTYPES = {
    "pixels": np.uint8,
    "state": np.float32,
    "action": np.float32,
    "reward": np.float32,
    "terminated": np.bool_,
    "success": np.bool_,
}
_NDIM = {"pixels": 4, "state": 2, "action": 2, "reward": 1, "terminated": 1, "success": 1}
_META_KEYS = ("format_version", "name", "num_episodes", "image_size", "state_dim", "action_dim")


def episode_file(index: int) -> str:
    return f"episode_{index:06d}.npz"


# ------------------------------------------------------------------------------------------------- writing
def save_episode(path: Path, episode: Episode) -> None:
    """Write one episode atomically in the documented npz layout."""
    arrays = {"pixels": episode.obs["pixels"], "state": episode.obs["state"], "action": episode.action}
    arrays.update(reward=episode.reward, terminated=episode.terminated, success=episode.success)
    with atomic_write(path) as f:
        np.savez_compressed(f, **{k: np.asarray(v, dtype=_DTYPES[k]) for k, v in arrays.items()})


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    with atomic_write(out / META, "w") as f:
        json.dump(meta, f, indent=2)


def load_meta(root: Path) -> dict[str, Any]:
    """The checked metadata (``meta.json``) of the demo directory ``root``; DemoFormatError naming what is wrong."""
    if not root.is_dir():
        raise DemoFormatError(f"{root}: demo directory not found")
    path = root / META
    if not path.is_file():
        raise DemoFormatError(f"{path}: missing {META} (expected the demo metadata written by generate_demos)")
    meta = read_json(path, DemoFormatError, "demo metadata")
    if not isinstance(meta, dict):
        raise DemoFormatError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key in _META_KEYS:
        if key not in meta:
            raise DemoFormatError(f"{path}: missing key {key!r} (expected keys {list(_META_KEYS)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise DemoFormatError(f"{path}: format_version {meta['format_version']!r}, expected {FORMAT_VERSION}")
    if not isinstance(meta["num_episodes"], int) or meta["num_episodes"] < 1:
        raise DemoFormatError(f"{path}: num_episodes is {meta['num_episodes']!r}, expected an int >= 1 (empty)")
    return meta


def prepare_new_demo_dir(out: Path, key: str) -> None:
    """Make ``out`` ready for a new demo directory. One that holds a recording (a meta.json) is never written over: a
    ConfigError naming it (rewriting it episode by episode would mix old and new episodes under the old meta.json, or
    leave a longer recording's extra files counted by nothing). Episode files without a meta.json are what an
    interrupted write left (such a directory does not load): removed, so they cannot mix with the new episodes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{key}={str(out)!r} is a file; expected a directory for the recording (made if missing)")
    if (out / META).is_file():
        count = load_meta(out)["num_episodes"]
        raise ConfigError(f"{key}={out} already holds a recording ({count} episode{'s' if count != 1 else ''}, "
                          f"{out / META}); a new one is never written over it: choose another dir or move that one")
    if out.is_dir():
        for stale in out.glob("episode_*.npz"):
            stale.unlink()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    return read_npz(path, DemoFormatError, "demo episode file")


def _expected_shapes(meta: dict[str, Any], length: int) -> dict[str, tuple[int, ...]]:
    size, s, a = meta["image_size"], meta["state_dim"], meta["action_dim"]
    views = len(meta.get("cameras") or [meta.get("camera")])
    return {
        "pixels": (length + 1, 3 * views, size, size),
        "state": (length + 1, s),
        "action": (length, a),
        "reward": (length,),
        "terminated": (length,),
        "success": (length,),
    }


def _validate(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    for key in KEYS:
        if key not in arrays:
            raise DemoFormatError(f"{path}: missing key {key!r} (expected keys {list(KEYS)})")
        arr = arrays[key]
        if arr.dtype != _DTYPES[key]:
            raise DemoFormatError(f"{path}: {key!r} has dtype {arr.dtype}, expected {np.dtype(_DTYPES[key])}")
        if arr.ndim != _NDIM[key]:
            raise DemoFormatError(f"{path}: {key!r} has shape {arr.shape}, expected {_NDIM[key]} dims")
    length = arrays["action"].shape[0]
    if length < 1:
        raise DemoFormatError(f"{path}: 'action' is empty, expected at least one step")
    for key, shape in _expected_shapes(meta, length).items():
        if arrays[key].shape != shape:
            raise DemoFormatError(
                f"{path}: {key!r} has shape {arrays[key].shape}, expected {shape} (T={length} from 'action')"
            )
    action = arrays["action"]
    if not np.all(np.isfinite(action)) or np.abs(action).max() > 1.0 + 1e-6:
        raise DemoFormatError(f"{path}: 'action' has values outside [-1, 1] or non-finite values")


def _proprio_index(root: Path, meta: dict[str, Any]) -> np.ndarray:
    index = meta.get("proprio_index")
    if not isinstance(index, list) or not index or not all(
        isinstance(i, int) and 0 <= i < meta["state_dim"] for i in index
    ):
        raise DemoFormatError(f"{root / META}: proprio_index is {index!r}, expected a non-empty list of state "
                              f"indices < state_dim={meta['state_dim']} (regenerate the demos with this robotrl)")
    return np.asarray(index, dtype=np.int64)


def load_demos(path: str | Path, proprio: bool = False) -> list[Episode]:
    """Load and validate a demo directory; any format problem raises DemoFormatError naming file and key.

    ``proprio``: "state" keeps only the entries ``meta["proprio_index"]`` (for ``*_proprio`` observation types).
    """
    root = Path(path)
    meta = load_meta(root)
    keep = _proprio_index(root, meta) if proprio else None
    episodes = []
    for index in range(meta["num_episodes"]):
        file = root / episode_file(index)
        arrays = _read_npz(file)
        _validate(file, arrays, meta)
        episodes.append(
            Episode(  # whole arrays read from disk, not steps: no EpisodeBuilder (robotrl.episodes) needed
                obs={"pixels": arrays["pixels"],
                     "state": arrays["state"] if keep is None else arrays["state"][:, keep]},
                action=arrays["action"],
                reward=arrays["reward"],
                terminated=arrays["terminated"],
                success=arrays["success"],
            )
        )
    return episodes


__all__ = ["FORMAT_VERSION", "episode_file", "load_demos", "save_episode"]
