"""LeRobotDataset v3.0: a deploy recording (with operator segments) -> v3 layout -> back to the demo format."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("av")

import pyarrow.parquet as pq  # noqa: E402

from robotrl.demos import load_demos  # noqa: E402
from robotrl.errors import ConfigError, DemoFormatError  # noqa: E402
from robotrl.lerobot_dataset import export_lerobot, import_lerobot  # noqa: E402
from robotrl.workflows.deploy import ScriptedOperator, deploy  # noqa: E402
from tests.deploy_helpers import SLOW_CPU, train_reach_policy  # noqa: E402


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    run = train_reach_policy(root / "run", "frames=100")  # the trainer's checkpoint path; no updates needed here
    deploy(str(run), hz=50, steps=8, episodes=2, robot_overrides=SLOW_CPU, record=str(root / "rec"),
           out=str(root / "out"),
           operator=ScriptedOperator([(2, 4, [0.0, 0.0, 0.5, -1.0])]))
    return root / "rec"


def test_export_writes_the_v3_layout(recording, tmp_path):
    out = export_lerobot(recording, tmp_path / "ds")
    for rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet",
                "videos/observation.images.corner2/chunk-000/file-000.mp4"):
        assert (out / rel).is_file(), rel
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 25  # 50 Hz commands / action repeat 2
    assert info["total_episodes"] == 2 and info["total_frames"] == 18  # 2 x (8 steps + final observation)
    assert info["features"]["observation.images.corner2"]["dtype"] == "video"
    assert info["features"]["action"]["shape"] == [4]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert data["index"] == list(range(18)) and data["frame_index"][:10] == [*range(9), 0]
    np.testing.assert_allclose(data["timestamp"][:3], [0.0, 0.04, 0.08], atol=1e-7)
    assert data["intervention"][:9] == [False, False, True, True, False, False, False, False, False]
    assert data["next.done"][8] and not any(data["next.done"][:8])
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 9), (9, 18)]
    assert episodes[1]["videos/observation.images.corner2/from_timestamp"] == pytest.approx(9 / 25)
    assert pq.read_table(out / "meta/tasks.parquet").to_pydict()["task"] == ["reach"]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.corner2"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [18] and len(stats["action"]["q50"]) == 4


def test_round_trip_exact_actions_and_states_frames_within_codec_tolerance(recording, tmp_path):
    back = import_lerobot(export_lerobot(recording, tmp_path / "ds"), tmp_path / "back")
    before, after = load_demos(recording), load_demos(back)  # load_demos is MoDem's demo loader
    assert len(before) == len(after) == 2
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.obs["state"], b.obs["state"])
        np.testing.assert_array_equal(a.reward, b.reward)
        assert a.obs["pixels"].shape == b.obs["pixels"].shape
        err = np.abs(a.obs["pixels"].astype(int) - b.obs["pixels"]).mean(axis=(1, 2, 3))
        # h264 yuv420p at 32x32 (chroma at 16x16): a few grey levels on average, measured ~4.5
        assert err.max() < 8.0, err
    flags = [np.load(back / f"episode_{i:06d}.npz")["intervention"].tolist() for i in range(2)]
    assert flags == [[False, False, True, True, False, False, False, False]] * 2
    meta = json.loads((back / "meta.json").read_text())
    assert meta["frame_stack"] == 3 and meta["action_repeat"] == 2 and meta["cameras"] == ["corner2"]


def test_foreign_dataset_needs_action_bounds_and_valid_layout(recording, tmp_path):
    ds = export_lerobot(recording, tmp_path / "ds")
    (ds / "meta/robotrl.json").unlink()  # as a dataset recorded by LeRobot itself
    table = pq.read_table(ds / "data/chunk-000/file-000.parquet")
    degrees = [[v * 90.0 for v in row] for row in table.column("action").to_pylist()]  # e.g. joint degrees
    import pyarrow as pa

    table = table.set_column(table.column_names.index("action"), "action", pa.array(degrees, pa.list_(pa.float32())))
    pq.write_table(table, ds / "data/chunk-000/file-000.parquet")
    with pytest.raises(DemoFormatError, match=r"expected \[-1, 1\]; pass action_bounds"):
        import_lerobot(ds, tmp_path / "bad")
    back = import_lerobot(ds, tmp_path / "ok", action_bounds=([-90.0] * 4, [90.0] * 4),
                          defaults={"name": "metaworld/reach", "frame_stack": 3}, image_size=16)
    episodes = load_demos(back)
    np.testing.assert_allclose(episodes[0].action, load_demos(recording)[0].action, atol=1e-5)
    assert episodes[0].obs["pixels"].shape == (9, 3, 16, 16)
    with pytest.raises(ConfigError, match="camera 'wrist' is not in"):
        import_lerobot(ds, tmp_path / "cam", cameras=["wrist"])
    with pytest.raises(ConfigError, match="already exists"):
        export_lerobot(recording, ds)
    (ds / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(DemoFormatError, match="codebase_version 'v2.1', expected 'v3.0'"):
        import_lerobot(ds, tmp_path / "old")


def test_a_dataset_of_several_tasks_is_named_after_itself_and_keeps_each_episodes_task(recording, tmp_path):
    """A LeRobot dataset recorded over two instructions was imported under the first one's name, the second task
    dropped without a word."""
    import pandas as pd

    ds = export_lerobot(recording, tmp_path / "two_tasks")
    (ds / "meta/robotrl.json").unlink()  # as a dataset recorded by LeRobot itself
    pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(["reach the button", "push the puck"], name="task")).to_parquet(
        ds / "meta/tasks.parquet")
    path = next((ds / "meta/episodes").glob("chunk-*/file-*.parquet"))
    episodes = pq.read_table(path).to_pylist()
    episodes[0]["tasks"], episodes[1]["tasks"] = ["reach the button"], ["push the puck"]
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(episodes, schema=pq.read_schema(path)), path)
    meta = json.loads((import_lerobot(ds, tmp_path / "back") / "meta.json").read_text())
    assert meta["name"] == "lerobot/two_tasks", meta["name"]
    assert meta["tasks"] == ["reach the button", "push the puck"]
    assert meta["episode_tasks"] == [["reach the button"], ["push the puck"]]


def test_every_frame_comes_back_at_its_own_index(recording, tmp_path):
    """Frames stamped with their index (a white block at column 3 * i; episode 2 black at the top) come back in
    place, so episode boundaries and from/to timestamps map frames exactly (the arm moves < 1 px per step at
    32x32, too little to check alignment on the recording itself)."""
    import shutil

    stamped = tmp_path / "stamped"
    shutil.copytree(recording, stamped)
    for e in range(2):
        path = stamped / f"episode_{e:06d}.npz"
        arrays = dict(np.load(path))
        for i in range(len(arrays["pixels"])):
            arrays["pixels"][i, :, :8] = 0 if e else 128
            arrays["pixels"][i, :, :8, 3 * i:3 * i + 8] = 255
        np.savez(path, **arrays)
    back = load_demos(import_lerobot(export_lerobot(stamped, tmp_path / "ds"), tmp_path / "back"))
    for e, episode in enumerate(back):
        band = episode.obs["pixels"][:, :, :8].astype(float)
        assert abs(np.median(band) - (0 if e else 128)) < 20  # the right episode's background
        columns = band.mean(axis=(1, 2))  # (T+1, W)
        starts = [int(np.argmax(np.convolve(c, np.ones(8), "valid"))) for c in columns]
        assert starts == [3 * i for i in range(len(columns))], starts


def _split_in_two_files(ds):
    """The one-file dataset ``ds`` as LeRobot writes a larger one: episode 1's rows in data file-001 and its
    metadata in episodes file-001 (file indices and global row indices as LeRobot keeps them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data_0, episodes_0 = ds / "data/chunk-000/file-000.parquet", ds / "meta/episodes/chunk-000/file-000.parquet"
    data, schema = pq.read_table(data_0), pq.read_schema(episodes_0)
    episodes = pq.read_table(episodes_0).to_pylist()
    pq.write_table(data.filter(pc.equal(data["episode_index"], 0)), data_0)
    pq.write_table(data.filter(pc.equal(data["episode_index"], 1)), ds / "data/chunk-000/file-001.parquet")
    episodes[1]["data/file_index"] = 1
    pq.write_table(pa.Table.from_pylist(episodes[:1], schema=schema), episodes_0)
    pq.write_table(pa.Table.from_pylist(episodes[1:], schema=schema), ds / "meta/episodes/chunk-000/file-001.parquet")


def test_a_dataset_in_several_files_imports_every_episode(recording, tmp_path):
    """LeRobot splits a larger dataset over data/ and meta/episodes/ files; the import read file-000 only, so the
    other episodes were dropped (or read at the wrong rows) without a word."""
    ds = export_lerobot(recording, tmp_path / "ds")
    whole = load_demos(import_lerobot(ds, tmp_path / "whole"))
    _split_in_two_files(ds)
    split = load_demos(import_lerobot(ds, tmp_path / "split"))
    assert len(split) == len(whole) == 2
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.obs["state"], b.obs["state"])
        np.testing.assert_array_equal(a.obs["pixels"], b.obs["pixels"])


def test_a_dataset_missing_episodes_is_refused(recording, tmp_path):
    ds = export_lerobot(recording, tmp_path / "ds")
    info = json.loads((ds / "meta/info.json").read_text())
    info["total_episodes"] = 3
    (ds / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DemoFormatError, match="meta/info.json says total_episodes=3, its episode files hold 2"):
        import_lerobot(ds, tmp_path / "back")


def test_the_appended_hold_keeps_the_gripper_in_joint_space_too():
    """An SO-101 session's actions are 5 joint deltas + the gripper (+1 closed): the final frame's hold zeroed the
    gripper, i.e. commanded it half closed."""
    from robotrl.lerobot_dataset import _hold_action

    ee = np.array([[0.1, 0.2, 0.3, 1.0]], np.float32)
    joint = np.array([[0.1, -0.2, 0.3, 0.0, 0.5, -1.0]], np.float32)
    assert _hold_action(ee).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert _hold_action(joint).tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, -1.0]


def test_a_frame_rate_that_is_not_whole_is_refused():
    """20 Hz with action_repeat 3 was exported as round(6.67) = 7 fps: every LeRobot timestamp 5% off."""
    from robotrl.lerobot_dataset import lerobot_fps

    assert lerobot_fps(20, 2) == 10 and lerobot_fps(80.0, 2) == 40
    with pytest.raises(ConfigError, match=r"control rate 20 Hz / action_repeat 3 = 6.667 frames/s is not one"):
        lerobot_fps(20, 3)
