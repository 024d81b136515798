"""LeRobotDataset v3.0 export and import for robotrl demo directories (``robotrl.envs.demos`` format).

Written without the ``lerobot`` package, with ``pyarrow`` + ``av`` (``pip install robotrl[lerobot]``), in the
layout of huggingface/lerobot's ``CODEBASE_VERSION = "v3.0"`` (see ``shared/research/hardware.md`` §1)::

    meta/info.json       codebase_version, fps, features, counters, chunks_size, file-size limits, path templates
    meta/stats.json      {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}; images per channel /255
    meta/tasks.parquet   index "task" (the task string), column task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, row range, data/video locations
    data/chunk-000/file-000.parquet            one row per frame
    videos/observation.images.<cam>/chunk-000/file-000.mp4   every episode's frames, one after the other

Frames: a demo episode has T+1 observations and T actions; LeRobot stores one (observation, action) pair per
frame, so an episode becomes T+1 frames and the last frame's action is "hold" (zero end-effector delta, gripper
unchanged), with ``next.done`` true. Import drops that last action again, so actions and states round-trip
exactly and frames within the video codec's error. ``next.reward``, ``next.success`` and ``intervention`` (the
deploy recorder's operator flag) are per-frame columns; ``action.commanded`` too when the episodes have a
``commanded_action`` array (``robotrl record``: the teleop device's command before the safety layer's clips).
``meta/robotrl.json`` keeps the demo ``meta.json`` (camera, frame stack, action repeat...) so import restores it; a
dataset without it (teleoperated LeRobot data) imports with the settings passed to :func:`import_lerobot`.

All episodes go into file 000 of chunk 000 (the 100 MB / 200 MB roll-over of LeRobot is not implemented: the
export refuses a dataset that would exceed it).
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.readers import read_json

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_MB = 100
VIDEO_FILES_SIZE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_PREFIX = "observation.images."
METAWORLD_SIM_HZ = 80  # Meta-World: 12.5 ms of simulated time per env step (frame_skip 5 x 2.5 ms)


# LeRobot v3 columns -> robotrl record's npz keys: per frame and camera, the capture time (monotonic s) and whether
# the frame is new (robotrl.workflows.record_frames)
FRAME_COLUMNS = {"observation.frame_time": "frame_time", "observation.frame_new": "frame_new"}

def _require() -> tuple[Any, Any]:
    try:
        import av
        import pyarrow
    except ImportError as exc:
        raise ConfigError(f"LeRobotDataset export/import needs pyarrow and av ({exc.name} is missing): "
                          "pip install 'robotrl[lerobot]'") from None
    return pyarrow, av


# ------------------------------------------------------------------------------------------------ stats
def feature_stats(x: np.ndarray) -> dict[str, list[Any]]:
    """LeRobot's per-feature statistics over axis 0 (exact quantiles rather than its 5000-bin histograms)."""
    x = np.asarray(x, np.float64)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out.update({f"q{round(q * 100):02d}": np.quantile(x, q, axis=0) for q in QUANTILES})
    stats = {k: np.asarray(v).tolist() for k, v in out.items()}
    stats["count"] = [int(x.shape[0])]
    return stats


def image_stats(frames: np.ndarray) -> dict[str, list[Any]]:
    """Per-channel stats of (N, H, W, 3) uint8 frames scaled to [0, 1], shaped (3, 1, 1) as LeRobot's."""
    per_channel = (frames.reshape(-1, 3) / 255.0)
    stats = feature_stats(per_channel)
    return {k: (np.asarray(v)[:, None, None].tolist() if k != "count" else [int(frames.shape[0])])
            for k, v in stats.items()}


# ------------------------------------------------------------------------------------------------ video
def encode_video(path: Path, frames: np.ndarray, fps: int, vcodec: str, crf: int) -> None:
    """(N, H, W, 3) uint8 -> mp4, frame i at pts i / fps (written next to ``path``, then renamed)."""
    _, av = _require()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        with av.open(str(tmp), "w") as container:
            try:
                stream = container.add_stream(vcodec, rate=fps)
            except (av.error.FFmpegError, ValueError) as exc:
                raise ConfigError(f"vcodec={vcodec!r} cannot encode here ({exc}); try libx264") from None
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.options = {"crf": str(crf), "g": "2"}
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def decode_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, H, W, 3) uint8, timestamps (N,) s) of every frame in ``path``."""
    _, av = _require()
    images, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base))
    return np.stack(images), np.asarray(times)


# ------------------------------------------------------------------------------------------------ export
def _frames_per_camera(pixels: np.ndarray, cameras: list[str]) -> dict[str, np.ndarray]:
    """Demo pixels (T+1, 3 * views, H, W) -> {camera: (T+1, H, W, 3)}."""
    return {cam: pixels[:, 3 * v:3 * v + 3].transpose(0, 2, 3, 1) for v, cam in enumerate(cameras)}


def lerobot_fps(hz: float, action_repeat: int) -> int:
    """The frame rate of a recording at ``hz`` sends per second, one frame per ``action_repeat`` sends. LeRobot
    stores an integer fps and derives every timestamp from it, so a rate that is not whole (20 Hz / 3) would put
    every frame at the wrong time: a ConfigError naming the rate."""
    rate = float(hz) / int(action_repeat)
    if abs(rate - round(rate)) > 1e-9 or round(rate) < 1:
        raise ConfigError(f"a LeRobotDataset stores a whole fps; control rate {hz:g} Hz / action_repeat "
                          f"{action_repeat} = {rate:.4g} frames/s is not one: choose a rate divisible by the action "
                          f"repeat, or export=none")
    return int(round(rate))


def _hold_action(action: np.ndarray) -> np.ndarray:
    """The action appended to the final observation: no motion, the gripper (last in every robotrl action: the
    end-effector (dx, dy, dz, gripper) and the joint-space (joint deltas..., gripper) layouts) as last commanded;
    a zero there would command the gripper half closed."""
    hold = np.zeros_like(action[-1])
    hold[-1] = action[-1, -1]
    return hold


def export_lerobot(demo_dir: str | Path, out_dir: str | Path, fps: int | None = None, task: str | None = None,
                   vcodec: str = "libx264", crf: int = 18) -> Path:
    """Write the demo directory ``demo_dir`` as a LeRobotDataset v3.0 at ``out_dir`` (must not exist).

    ``fps`` defaults to the recording's agent-step rate (``hz / action_repeat``) or, for simulated demos,
    Meta-World's 80 Hz / ``action_repeat``. ``task`` (the language instruction) defaults to the demo's task name.
    The directory is assembled under a temporary name and renamed at the end (a crash leaves no half dataset).
    """
    pa, _ = _require()
    import pyarrow.parquet as pq

    from robotrl.demos import load_demos, load_meta

    src, out = Path(demo_dir), Path(out_dir)
    if out.exists():
        raise ConfigError(f"{out} already exists; export writes a new dataset directory")
    meta = load_meta(src)
    episodes = load_demos(src)
    cameras = [str(c) for c in (meta.get("cameras") or [meta.get("camera")])]
    repeat = int(meta.get("action_repeat", 1))
    fps = int(fps or lerobot_fps(meta.get("hz", METAWORLD_SIM_HZ), repeat))
    task = task or str(meta.get("task", meta["name"]))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dataset(tmp, src, meta, episodes, cameras, fps, task, vcodec, crf, pa, pq)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_dataset(root: Path, src: Path, meta: dict[str, Any], episodes: list[Any], cameras: list[str], fps: int,
                   task: str, vcodec: str, crf: int, pa: Any, pq: Any) -> None:
    columns: dict[str, list[Any]] = {k: [] for k in (
        "observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index",
        "next.reward", "next.done", "next.success", "intervention")}
    videos: dict[str, list[np.ndarray]] = {cam: [] for cam in cameras}
    episode_rows, start = [], 0
    commanded = all("commanded_action" in np.load(src / f"episode_{e:06d}.npz").files for e in range(len(episodes)))
    columns["action.commanded"] = []
    # robotrl record's per-frame capture times and newness (robotrl.workflows.record_frames): extra columns
    stamped = all("frame_time" in np.load(src / f"episode_{e:06d}.npz").files for e in range(len(episodes)))
    columns.update({key: [] for key in FRAME_COLUMNS})
    for e, ep in enumerate(episodes):
        n = len(ep.action) + 1
        arrays = np.load(src / f"episode_{e:06d}.npz")
        flags = arrays["intervention"] if "intervention" in arrays.files else np.zeros(n - 1, bool)
        actions = np.concatenate([ep.action, _hold_action(ep.action)[None]]).astype(np.float32)
        columns["observation.state"] += list(ep.obs["state"].astype(np.float32))
        columns["action"] += list(actions)
        columns["timestamp"] += list((np.arange(n) / fps).astype(np.float32))
        columns["frame_index"] += list(range(n))
        columns["episode_index"] += [e] * n
        columns["index"] += list(range(start, start + n))
        columns["task_index"] += [0] * n
        columns["next.reward"] += list(np.append(ep.reward, 0.0).astype(np.float32))
        columns["next.done"] += [False] * (n - 1) + [True]
        columns["next.success"] += list(np.append(ep.success, ep.success[-1]).astype(bool))
        columns["intervention"] += list(np.append(flags, False).astype(bool))
        if commanded:  # the last frame's command is the same hold as its action
            columns["action.commanded"] += list(np.concatenate([arrays["commanded_action"], actions[-1:]]))
        if stamped:
            for key, name in FRAME_COLUMNS.items():
                columns[key] += list(arrays[name])
        row: dict[str, Any] = {
            "episode_index": e, "tasks": [task], "length": n, "dataset_from_index": start,
            "dataset_to_index": start + n, "data/chunk_index": 0, "data/file_index": 0,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for cam, frames in _frames_per_camera(ep.obs["pixels"], cameras).items():
            key = IMAGE_PREFIX + cam
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": start / fps, f"videos/{key}/to_timestamp": (start + n) / fps})
            videos[cam].append(frames)
        for feature, values in (("observation.state", ep.obs["state"]), ("action", actions)):
            for stat, value in feature_stats(values).items():
                row[f"stats/{feature}/{stat}"] = value
        episode_rows.append(row)
        start += n
    total = start
    features = _features(meta, cameras, fps, vcodec, episodes[0].obs["pixels"].shape[-1])
    if commanded:
        features["action.commanded"] = {**features["action"]}
    data = pa.table({
        "observation.state": pa.array([list(v) for v in columns["observation.state"]], pa.list_(pa.float32())),
        "action": pa.array([list(v) for v in columns["action"]], pa.list_(pa.float32())),
        "timestamp": pa.array(columns["timestamp"], pa.float32()),
        **{k: pa.array(columns[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
        "next.reward": pa.array(columns["next.reward"], pa.float32()),
        **{k: pa.array(columns[k], pa.bool_()) for k in ("next.done", "next.success", "intervention")},
    })
    if stamped:
        for key, (dtype, kind) in zip(FRAME_COLUMNS, (("float64", pa.float64()), ("bool", pa.bool_())), strict=True):
            features[key] = {"dtype": dtype, "shape": [len(cameras)], "names": cameras}
            data = data.append_column(key, pa.array([list(v) for v in columns[key]], pa.list_(kind)))
    if commanded:
        data = data.append_column("action.commanded", pa.array([list(v) for v in columns["action.commanded"]],
                                                                pa.list_(pa.float32())))
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(data, root / DATA_PATH.format(chunk_index=0, file_index=0))
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    import pandas as pd  # LeRobot reads tasks.parquet with pandas: the task string is the index

    pd.DataFrame({"task_index": [0]}, index=pd.Index([task], name="task")).to_parquet(root / "meta/tasks.parquet")
    stats: dict[str, Any] = {"observation.state": feature_stats(np.stack(columns["observation.state"])),
                             "action": feature_stats(np.stack(columns["action"]))}
    for cam in cameras:
        frames = np.concatenate(videos[cam])
        encode_video(root / VIDEO_PATH.format(video_key=IMAGE_PREFIX + cam, chunk_index=0, file_index=0),
                     frames, fps, vcodec, crf)
        stats[IMAGE_PREFIX + cam] = image_stats(frames)
    size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    if size_mb > DATA_FILES_SIZE_MB:
        raise ConfigError(f"dataset would be {size_mb:.0f} MB in one file; export supports up to "
                          f"{DATA_FILES_SIZE_MB} MB (file roll-over is not implemented)")
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": str(meta.get("robot", meta.get("suite", "unknown"))),
        "total_episodes": len(episodes), "total_frames": total, "total_tasks": 1, "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_MB, "video_files_size_in_mb": VIDEO_FILES_SIZE_MB, "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
        "features": features,
    }
    atomic_write_text(root / "meta/info.json", json.dumps(info, indent=2))
    atomic_write_text(root / "meta/stats.json", json.dumps(stats, indent=2))
    with atomic_write(root / "meta/robotrl.json", "w") as f:
        json.dump(meta, f, indent=2)


def _features(meta: dict[str, Any], cameras: list[str], fps: int, vcodec: str, size: int) -> dict[str, Any]:
    state_names = meta.get("state_names") or [f"state_{i}" for i in range(meta["state_dim"])]
    action_names = ["dx", "dy", "dz", "gripper"] if meta["action_dim"] == 4 else [
        f"action_{i}" for i in range(meta["action_dim"])]
    scalar = {"shape": [1], "names": None}
    features: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [meta["state_dim"]], "names": state_names},
        "action": {"dtype": "float32", "shape": [meta["action_dim"]], "names": action_names},
    }
    for cam in cameras:
        features[IMAGE_PREFIX + cam] = {
            "dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": size, "video.width": size, "video.codec": vcodec.removeprefix("lib"),
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False}}
    features.update({
        "timestamp": {"dtype": "float32", **scalar}, "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar}, "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar}, "next.reward": {"dtype": "float32", **scalar},
        "next.done": {"dtype": "bool", **scalar}, "next.success": {"dtype": "bool", **scalar},
        "intervention": {"dtype": "bool", **scalar},
    })
    return features


# ------------------------------------------------------------------------------------------------ import
def _read_info(root: Path) -> dict[str, Any]:
    path = root / "meta/info.json"
    if not path.is_file():
        raise DemoFormatError(f"{path}: missing (expected a LeRobotDataset v3.0 directory)")
    info = read_json(path, DemoFormatError, "LeRobotDataset info.json")
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DemoFormatError(f"{path}: codebase_version {info.get('codebase_version')!r}, expected "
                              f"{CODEBASE_VERSION!r} (convert older datasets with lerobot's converter first)")
    return info


def _to_unit_range(action: np.ndarray, bounds: tuple[Any, Any] | None, where: Path) -> np.ndarray:
    if bounds is not None:
        low, high = (np.asarray(b, np.float64) for b in bounds)
        action = 2.0 * (action - low) / (high - low) - 1.0
    if not np.all(np.isfinite(action)) or np.abs(action).max() > 1.0 + 1e-6:
        raise DemoFormatError(f"{where}: actions span [{action.min():.4g}, {action.max():.4g}], expected [-1, 1]; "
                              "pass action_bounds=(low, high) to rescale them")
    return action.astype(np.float32)


def _fit(frames: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` (None: frames must already be square)."""
    h, w = frames.shape[1:3]
    if size is None:
        if h != w:
            raise DemoFormatError(f"video frames are {h}x{w}; pass image_size=N to centre-crop and resize them")
        return frames
    from PIL import Image

    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.stack([np.asarray(Image.fromarray(f[top:top + s, left:left + s]).resize((size, size),
                                                                                        Image.BILINEAR))
                     for f in frames])


def import_lerobot(dataset_dir: str | Path, out_dir: str | Path, cameras: list[str] | None = None,
                   image_size: int | None = None, action_bounds: tuple[Any, Any] | None = None,
                   defaults: dict[str, Any] | None = None) -> Path:
    """Convert a LeRobotDataset v3.0 at ``dataset_dir`` into a robotrl demo directory at ``out_dir``.

    ``cameras``: which ``observation.images.<cam>`` views make a frame, in order (default: every video feature).
    ``defaults``: demo meta fields for a dataset not exported by robotrl (``name``, ``frame_stack``,
    ``action_repeat``...). Frames within the codec's tolerance; states, actions, rewards exact.
    """
    _require()
    import pyarrow.parquet as pq

    from robotrl.demos import FORMAT_VERSION, episode_file, load_demos

    root, out = Path(dataset_dir), Path(out_dir)
    info = _read_info(root)
    fps = int(info["fps"])
    video_keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    cams = cameras or [k.removeprefix(IMAGE_PREFIX) for k in video_keys]
    for cam in cams:
        if IMAGE_PREFIX + cam not in video_keys:
            raise ConfigError(f"camera {cam!r} is not in {root}; its video features are {video_keys}")
    robotrl_meta = root / "meta/robotrl.json"
    meta: dict[str, Any] = read_json(robotrl_meta, DemoFormatError, "robotrl.json") if robotrl_meta.is_file() else {}
    meta.update(defaults or {})
    episodes_meta = sorted((row for path in sorted(root.glob("meta/episodes/chunk-*/file-*.parquet"))
                            for row in pq.read_table(path).to_pylist()), key=lambda r: r["episode_index"])
    if len(episodes_meta) != int(info.get("total_episodes", len(episodes_meta))):
        raise DemoFormatError(f"{root}: meta/info.json says total_episodes={info['total_episodes']}, its episode files "
                              f"hold {len(episodes_meta)}")
    data_files: dict[tuple[int, int], dict[str, Any]] = {}
    video_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out.mkdir(parents=True, exist_ok=True)
    lengths, size = [], None
    for ep in episodes_meta:
        where = (int(ep.get("data/chunk_index", 0)), int(ep.get("data/file_index", 0)))
        if where not in data_files:  # an episode's rows are in its own data file (LeRobot splits larger datasets)
            data_files[where] = pq.read_table(root / DATA_PATH.format(chunk_index=where[0],
                                                                      file_index=where[1])).to_pydict()
        data = data_files[where]
        first = int(data["index"][0]) if data.get("index") else 0  # the file's first global row index
        lo, hi = int(ep["dataset_from_index"]) - first, int(ep["dataset_to_index"]) - first
        state = np.asarray(data["observation.state"][lo:hi], np.float32)
        action = _to_unit_range(np.asarray(data["action"][lo:hi - 1], np.float64), action_bounds, root)
        views = []
        for cam in cams:
            key = IMAGE_PREFIX + cam
            if key not in video_cache:
                video_cache[key] = decode_video(root / VIDEO_PATH.format(
                    video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                    file_index=ep[f"videos/{key}/file_index"]))
            frames, times = video_cache[key]
            want = ep[f"videos/{key}/from_timestamp"] + np.asarray(data["timestamp"][lo:hi], np.float64)
            idx = np.searchsorted(times, want - 1e-4)  # LeRobot's tolerance_s
            if idx.max(initial=0) >= len(times) or np.abs(times[idx] - want).max() > 1e-4:
                raise DemoFormatError(f"{root}: {key} has no frame within 1e-4 s of episode {ep['episode_index']}'s "
                                      "timestamps")
            views.append(_fit(frames[idx], image_size).transpose(0, 3, 1, 2))
        pixels = np.concatenate(views, axis=1)
        size = pixels.shape[-1]
        arrays = {
            "pixels": pixels.astype(np.uint8), "state": state, "action": action,
            "reward": np.asarray(data["next.reward"][lo:hi - 1], np.float32) if "next.reward" in data
            else np.zeros(hi - lo - 1, np.float32),
            "terminated": np.zeros(hi - lo - 1, bool),
            "success": np.asarray(data["next.success"][lo:hi - 1], bool) if "next.success" in data
            else np.zeros(hi - lo - 1, bool),
            "intervention": np.asarray(data["intervention"][lo:hi - 1], bool) if "intervention" in data
            else np.zeros(hi - lo - 1, bool),
        }
        for key, name in FRAME_COLUMNS.items():
            if key in data:
                arrays[name] = np.asarray(data[key][lo:hi], np.float64 if name == "frame_time" else bool)
        if "action.commanded" in data:
            arrays["commanded_action"] = np.asarray(data["action.commanded"][lo:hi - 1], np.float32)
        with atomic_write(out / episode_file(len(lengths))) as f:
            np.savez_compressed(f, **arrays)
        lengths.append(hi - lo - 1)
    tasks = [str(t) for t in pq.read_table(root / "meta/tasks.parquet").to_pydict()["task"]]
    meta.update({
        "format_version": FORMAT_VERSION, "image_size": size, "tasks": tasks,
        "name": meta.get("name", f"lerobot/{tasks[0] if len(tasks) == 1 else root.name}"),
        "episode_tasks": [list(ep.get("tasks") or []) for ep in episodes_meta],
        "camera": cams[0], "cameras": cams, "state_dim": int(info["features"]["observation.state"]["shape"][0]),
        "action_dim": int(info["features"]["action"]["shape"][0]), "num_episodes": len(lengths),
        "episode_lengths": lengths, "lerobot_fps": fps, "imported_from": str(root),
    })
    meta.setdefault("frame_stack", 3)
    meta.setdefault("action_repeat", 1)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    load_demos(out)  # validate what was written (shapes, dtypes, action range) before anyone trains on it
    return out
