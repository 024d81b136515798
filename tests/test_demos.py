"""Demo generation (Meta-World scripted expert), save/load round trip, and every bad-file case."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from robotrl.envs.demos import generate_demos

from robotrl.demos import episode_file, load_demos, save_episode
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.types import Episode

os.environ.setdefault("MUJOCO_GL", "egl")
CFG = {"name": "metaworld/reach", "image_size": 32, "video_size": 32, "max_episode_steps": 120}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demos(CFG, num_episodes=2, seed=3, out_dir=tmp_path_factory.mktemp("demos") / "reach")


def test_generator_saves_successful_episodes(demo_dir: Path) -> None:
    meta = json.loads((demo_dir / "meta.json").read_text())
    assert meta["num_episodes"] == 2 and meta["task"] == "reach" and meta["action_repeat"] == 2
    assert meta["metaworld_version"] == "3.1.1" and meta["reward_function_version"] == "v2"
    episodes = load_demos(demo_dir)
    assert len(episodes) == 2
    for ep in episodes:
        t = len(ep.action)
        assert t == 60 and ep.success.any() and not ep.terminated.any()
        assert ep.obs["pixels"].shape == (t + 1, 3, 32, 32) and ep.obs["state"].shape == (t + 1, 39)
        assert np.abs(ep.action).max() <= 1.0
    assert not any(p.name.endswith(".tmp") for p in demo_dir.iterdir())  # atomic writes leave no temp files


def test_generator_never_writes_over_a_recording(demo_dir: Path, tmp_path: Path) -> None:
    """`robotrl demos` rerun into the same out= used to rewrite episode files one by one under the old meta.json (an
    interrupted rerun mixed old and new episodes; a shorter one left the extra files counted by nothing)."""
    before = {p.name: p.read_bytes() for p in demo_dir.iterdir()}
    with pytest.raises(ConfigError, match=rf"out={demo_dir} already holds a recording \(2 episodes"):
        generate_demos(CFG, num_episodes=1, seed=0, out_dir=demo_dir)
    assert {p.name: p.read_bytes() for p in demo_dir.iterdir()} == before
    # what an interrupted write left (episode files, no meta.json: a directory that does not load) is replaced
    partial = tmp_path / "partial"
    shutil.copytree(demo_dir, partial)
    (partial / "meta.json").unlink()
    generate_demos(CFG, num_episodes=1, seed=3, out_dir=partial)
    assert sorted(p.name for p in partial.iterdir()) == ["episode_000000.npz", "meta.json"]
    assert len(load_demos(partial)) == 1


def test_generator_rejects_non_metaworld(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Meta-World"):
        generate_demos({"name": "dmc/cartpole_swingup"}, 1, 0, tmp_path)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = 5
    episode = Episode(
        obs={
            "pixels": rng.integers(0, 255, (t + 1, 3, 8, 8), dtype=np.uint8),
            "state": rng.normal(size=(t + 1, 39)).astype(np.float32),
        },
        action=rng.uniform(-1, 1, (t, 4)).astype(np.float32),
        reward=rng.normal(size=t).astype(np.float32),
        terminated=np.array([0, 0, 0, 0, 1], bool),
        success=np.array([0, 1, 0, 1, 1], bool),
    )
    save_episode(tmp_path / episode_file(0), episode)
    meta = {"format_version": 1, "name": "x", "num_episodes": 1, "image_size": 8, "state_dim": 39, "action_dim": 4}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    [loaded] = load_demos(tmp_path)
    for key in ("pixels", "state"):
        assert np.array_equal(loaded.obs[key], episode.obs[key]) and loaded.obs[key].dtype == episode.obs[key].dtype
    for key in ("action", "reward", "terminated", "success"):
        assert np.array_equal(getattr(loaded, key), getattr(episode, key))


# --------------------------------------------------------------------------------------------- bad files
def _rewrite(key: str, fn: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[Path], None]:
    """Corruption that replaces (or, when fn returns None, drops) one array of episode 0."""

    def corrupt(root: Path) -> None:
        path = root / episode_file(0)
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        new = fn(arrays[key])
        arrays.pop(key) if new is None else arrays.__setitem__(key, new)
        np.savez(path, **arrays)

    return corrupt


def _edit_meta(**changes: object) -> Callable[[Path], None]:
    def corrupt(root: Path) -> None:
        meta = json.loads((root / "meta.json").read_text())
        meta.update(changes)
        (root / "meta.json").write_text(json.dumps(meta))

    return corrupt


BAD_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_dir": (lambda root: shutil.rmtree(root), "directory not found"),
    "missing_meta": (lambda root: (root / "meta.json").unlink(), "meta.json"),
    "bad_json": (lambda root: (root / "meta.json").write_text("{"), "JSON"),
    "empty": (_edit_meta(num_episodes=0), "num_episodes"),
    "meta_missing_key": (lambda root: (root / "meta.json").write_text('{"format_version": 1}'), "'name'"),
    "wrong_version": (_edit_meta(format_version=99), "format_version"),
    "missing_episode_file": (lambda root: (root / episode_file(1)).unlink(), "episode_000001.npz"),
    "not_npz": (lambda root: (root / episode_file(0)).write_text("a text file\n"), "is not a demo episode file"),
    "missing_key": (_rewrite("reward", lambda a: None), "'reward'"),
    "wrong_dtype": (_rewrite("pixels", lambda a: a.astype(np.float32)), "dtype float32, expected uint8"),
    "wrong_ndim": (_rewrite("state", lambda a: a[:, :, None]), "'state'"),
    "wrong_image_size": (_rewrite("pixels", lambda a: a[:, :, :16, :16]), "'pixels'"),
    "length_mismatch": (_rewrite("reward", lambda a: a[:-1]), "'reward' has shape"),
    "obs_length": (_rewrite("state", lambda a: a[:-1]), "'state' has shape"),
    "object_array": (_rewrite("success", lambda a: np.array([{"x": 1}] * len(a), dtype=object)), "npz"),
    "action_out_of_range": (_rewrite("action", lambda a: a * 3), "[-1, 1]"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_demo_files_raise(case: str, demo_dir: Path, tmp_path: Path) -> None:
    corrupt, needle = BAD_CASES[case]
    root = tmp_path / "copy"
    shutil.copytree(demo_dir, root)
    corrupt(root)
    with pytest.raises(DemoFormatError) as err:
        load_demos(root)
    message = str(err.value)
    assert needle in message and str(root) in message and "\n" not in message
    assert case != "not_npz" or "pickle" not in message  # numpy's message for a non-zip file misleads


def test_two_cameras_and_proprioception(tmp_path: Path) -> None:
    """Demos of a two-camera env store both views per frame; ``proprio=True`` keeps the robot's own state entries."""
    from robotrl.envs.metaworld import PROPRIO_INDEX

    cfg = {**CFG, "camera": ["corner2", "corner3"], "obs_type": "pixels_proprio"}
    root = generate_demos(cfg, num_episodes=1, seed=3, out_dir=tmp_path / "two")
    meta = json.loads((root / "meta.json").read_text())
    assert meta["cameras"] == ["corner2", "corner3"] and meta["proprio_index"] == PROPRIO_INDEX.tolist()
    full, = load_demos(root)
    prop, = load_demos(root, proprio=True)
    t = len(full.action)
    assert full.obs["pixels"].shape == (t + 1, 6, 32, 32) and full.obs["state"].shape == (t + 1, 39)
    np.testing.assert_array_equal(prop.obs["state"], full.obs["state"][:, PROPRIO_INDEX])
    # the same seed through a one-camera env gives view 0 of those frames (the expert's episode is the same)
    one, = load_demos(generate_demos(CFG, num_episodes=1, seed=3, out_dir=tmp_path / "one"))
    np.testing.assert_array_equal(one.obs["pixels"], full.obs["pixels"][:, :3])
    del meta["proprio_index"]
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DemoFormatError, match="proprio_index"):
        load_demos(root, proprio=True)
