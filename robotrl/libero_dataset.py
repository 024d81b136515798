"""LIBERO's demonstration files (``<task>_demo.hdf5``) -> the robotrl demo format (:mod:`robotrl.demos`).

LIBERO (Liu et al. 2023) ships one hdf5 file per task, written by its ``scripts/create_dataset.py`` in robomimic's
layout, which the user downloads separately (LIBERO's ``benchmark_scripts/download_libero_datasets.py``):

``data`` attrs: ``problem_info`` (JSON with ``language_instruction``), ``macros_image_convention`` (``opengl``:
rows stored bottom-up, as robosuite renders them, or ``opencv``), ``bddl_file_name``, ``env_args``;
``data/demo_<i>/actions`` (T, 7) in [-1, 1] (OSC_POSE deltas + gripper), ``rewards`` / ``dones`` (T,) with only the
last entry set, and ``obs/agentview_rgb`` / ``obs/eye_in_hand_rgb`` (T, 128, 128, 3) uint8, ``obs/ee_states``
(T, 6: eef position + axis-angle), ``obs/gripper_states`` (T, 2), ``obs/joint_states`` (T, 7).

Alignment: ``create_dataset.py`` replays the teleoperated actions and records ``obs[j]`` *after* ``env.step(actions
[j])``, so the step that leads from ``obs[k]`` to ``obs[k + 1]`` is ``actions[k + 1]``.  An episode of T recorded
observations therefore becomes T frames and the T - 1 actions ``actions[1:]`` (the first action, whose
pre-observation was not recorded, is dropped), with ``reward[t] = rewards[t + 1]``, ``success[t] = dones[t + 1]``
(LIBERO's demos end at the first successful frame) and ``terminated = success`` (LIBERO's env ends an episode on
success).  ``state`` is the robot's 15-d proprioception ``[ee_states, gripper_states, joint_states]`` (all of it is
``proprio_index``): the file's simulator ``states`` are recorded before each step and do not line up with the frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.demos import FORMAT_VERSION, META, _write_meta, episode_file, save_episode
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.types import Episode

CAMERA_KEYS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}
PROPRIO_KEYS = ("ee_states", "gripper_states", "joint_states")  # 6 + 2 + 7 = 15 entries
IMAGE_CONVENTIONS = ("opengl", "opencv")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ConfigError("reading LIBERO datasets needs h5py: pip install 'robotrl[libero]'") from None
    return h5py


def task_name(path: Path) -> str:
    """LIBERO's task name from its dataset file name (``<task>_demo.hdf5`` -> ``<task>``)."""
    return path.name.removesuffix(".hdf5").removesuffix("_demo")


def _demo_keys(data: Any, path: Path) -> list[str]:
    keys = [k for k in data if re.fullmatch(r"demo_\d+", k)]
    if not keys:
        raise DemoFormatError(f"{path}: no data/demo_<i> groups (expected a LIBERO/robomimic hdf5)")
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def _instruction(data: Any, path: Path) -> str:
    raw = data.attrs.get("problem_info")
    try:
        info = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        instruction = info["language_instruction"]
    except (TypeError, ValueError, KeyError):
        raise DemoFormatError(f"{path}: data.attrs['problem_info'] is {str(raw)[:80]!r}, expected JSON with a "
                              "'language_instruction'") from None
    if not isinstance(instruction, str) or not instruction.strip():
        raise DemoFormatError(f"{path}: language_instruction is {instruction!r}, expected a non-empty string")
    return instruction.strip()


def _image_convention(data: Any, path: Path, override: str | None) -> str:
    if override is not None:
        if override not in IMAGE_CONVENTIONS:
            raise ConfigError(f"image_convention={override!r}, expected one of {list(IMAGE_CONVENTIONS)}")
        return override
    raw = data.attrs.get("macros_image_convention")
    value = raw.decode() if isinstance(raw, bytes) else raw
    if value not in IMAGE_CONVENTIONS:
        raise DemoFormatError(f"{path}: data.attrs['macros_image_convention'] is {value!r}, expected one of "
                              f"{list(IMAGE_CONVENTIONS)}; pass image_convention=opengl|opencv")
    return value


def _array(group: Any, key: str, where: str) -> np.ndarray:
    if key not in group:
        raise DemoFormatError(f"{where}: missing {key!r} (has {sorted(group.keys())})")
    return np.asarray(group[key][()])


def _frames(obs: Any, camera: str, where: str, size: int | None, flip: bool) -> np.ndarray:
    frames = _array(obs, CAMERA_KEYS[camera], where)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DemoFormatError(f"{where}: {CAMERA_KEYS[camera]} is {frames.dtype} {frames.shape}, "
                              "expected uint8 (T, H, W, 3)")
    h, w = frames.shape[1:3]
    if h != w:
        raise DemoFormatError(f"{where}: {CAMERA_KEYS[camera]} frames are {h}x{w}, expected square frames")
    return upright_frames(frames, flip, size)


def upright_frames(frames: np.ndarray, flip: bool, size: int | None = None) -> np.ndarray:
    """Square (T, H, W, 3) uint8 camera images -> (T, 3, S, S) channels first with row 0 at the top.

    ``flip``: the images are stored bottom-up (robosuite's ``opengl`` image convention); ``size``: resize with
    PIL bilinear (None keeps H).  The converter and the LIBERO env (``robotrl.envs.libero``) both go through this
    function, so a demo frame and an env observation of the same simulator image are the same array.
    """
    if flip:  # opengl: row 0 is the bottom of the image
        frames = frames[:, ::-1]
    if size is not None and size != frames.shape[1]:
        from PIL import Image

        frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # channels first


def _episode(demo: Any, where: str, cameras: list[str], size: int | None, flip: bool) -> Episode:
    """One LIBERO demo as a robotrl episode (see the module docstring for the alignment)."""
    obs = demo.get("obs")
    if obs is None:
        raise DemoFormatError(f"{where}: missing 'obs' group")
    actions = _array(demo, "actions", where).astype(np.float64)
    length = len(actions)
    if length < 2:
        raise DemoFormatError(f"{where}: {length} steps, expected at least 2 (the first action is dropped)")
    if actions.ndim != 2 or not np.all(np.isfinite(actions)) or np.abs(actions).max() > 1.0 + 1e-6:
        raise DemoFormatError(f"{where}: actions {actions.shape} span [{np.nanmin(actions):.4g}, "
                              f"{np.nanmax(actions):.4g}], expected finite (T, A) in [-1, 1]")
    views = [_frames(obs, cam, where, size, flip) for cam in cameras]
    if len({v.shape for v in views}) > 1:
        raise DemoFormatError(f"{where}: camera frames differ in shape {[v.shape for v in views]}; pass image_size=N")
    pixels = np.concatenate(views, axis=1)
    if len(pixels) != length:
        raise DemoFormatError(f"{where}: {len(pixels)} frames, expected {length} (one per action)")
    per_step = {key: _array(obs, key, where) for key in PROPRIO_KEYS}
    per_step.update(rewards=_array(demo, "rewards", where), dones=_array(demo, "dones", where))
    for key, arr in per_step.items():
        if len(arr) != length:
            raise DemoFormatError(f"{where}: {key!r} has {len(arr)} rows, expected {length} (one per action)")
    proprio = np.concatenate([per_step[key].reshape(length, -1) for key in PROPRIO_KEYS], axis=1)
    success = per_step["dones"].astype(bool)[1:]
    return Episode(  # whole arrays converted from LIBERO's file, not steps: no EpisodeBuilder (robotrl.episodes)
        obs={"pixels": pixels, "state": proprio.astype(np.float32)},
        action=actions[1:].astype(np.float32),
        reward=per_step["rewards"].astype(np.float32)[1:],
        terminated=success.copy(),
        success=success,
    )


def import_libero(dataset: str | Path, out_dir: str | Path, cameras: list[str] | None = None,
                  image_size: int | None = None, episodes: int | None = None,
                  image_convention: str | None = None) -> dict[str, Any]:
    """Convert one LIBERO task file to a robotrl demo directory; returns its ``meta.json`` content.

    ``cameras``: LIBERO camera names (default ``["agentview"]``; ``robot0_eye_in_hand`` adds the wrist view);
    ``image_size``: resize frames to this size (default: keep the file's, 128 in LIBERO's release);
    ``episodes``: convert only the first N demos; ``image_convention``: override the file's
    ``macros_image_convention``.  Refuses an ``out_dir`` that already holds demos; every file is written atomically
    and ``meta.json`` last, so an interrupted conversion leaves a directory that does not load.
    """
    h5py = _h5py()
    path, out = Path(dataset), Path(out_dir)
    cameras = list(cameras or ["agentview"])
    bad = [c for c in cameras if c not in CAMERA_KEYS]
    if bad or not cameras:
        raise ConfigError(f"camera={bad or cameras}, expected LIBERO cameras from {list(CAMERA_KEYS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r}, expected a positive int (or null: the file's size)")
    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
        raise ConfigError(f"episodes={episodes!r}, expected a positive int (or null: all demos)")
    if not path.is_file():
        raise ConfigError(f"libero_dataset={str(path)!r}: file not found (LIBERO's <task>_demo.hdf5)")
    if (out / META).exists():
        raise ConfigError(f"{out}: already holds demos ({META}); choose another out=")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DemoFormatError(f"{path}: not a readable hdf5 file ({e})") from None
    with f:
        if "data" not in f:
            raise DemoFormatError(f"{path}: no 'data' group (expected a LIBERO/robomimic hdf5)")
        data = f["data"]
        instruction = _instruction(data, path)
        flip = _image_convention(data, path, image_convention) == "opengl"
        keys = _demo_keys(data, path)
        if episodes is not None and episodes > len(keys):
            raise ConfigError(f"episodes={episodes}, but {path} holds {len(keys)} demos")
        keys = keys[:episodes]
        out.mkdir(parents=True, exist_ok=True)
        lengths, returns, successes, shapes = [], [], 0, None
        for index, key in enumerate(keys):
            episode = _episode(data[key], f"{path}:data/{key}", cameras, image_size, flip)
            got = (episode.obs["pixels"].shape[1:], episode.obs["state"].shape[1], episode.action.shape[1])
            if shapes is not None and got != shapes:  # meta.json holds one frame size, state and action dim
                raise DemoFormatError(f"{path}:data/{key}: (frame, state dim, action dim) {got} differ from "
                                      f"{keys[0]}'s {shapes}; pass image_size=N if only the frame size differs")
            shapes = got
            save_episode(out / episode_file(index), episode)
            lengths.append(len(episode.action))
            returns.append(float(episode.reward.sum()))
            successes += bool(episode.success.any())
    (_, _, size), state_dim, action_dim = shapes
    task = task_name(path)
    meta = {
        "format_version": FORMAT_VERSION, "name": f"libero/{task}", "suite": "libero", "task": task,
        "image_size": int(size), "frame_stack": 1, "action_repeat": 1, "camera": cameras[0], "cameras": cameras,
        "max_episode_steps": None, "seed": None, "state_dim": int(state_dim), "proprio_index": list(range(state_dim)),
        "action_dim": int(action_dim), "num_episodes": len(keys), "episode_seeds": None,
        "episode_lengths": lengths, "episode_returns": returns, "attempts": len(keys),
        "instruction": instruction, "kind": "expert", "successes": successes,
        "source": {"libero_dataset": str(path.resolve()), "demos": keys,
                   "image_convention": "opengl" if flip else "opencv", "dropped_first_action": True},
    }
    _write_meta(out, meta)
    return meta


__all__ = ["CAMERA_KEYS", "PROPRIO_KEYS", "import_libero", "task_name", "upright_frames"]
