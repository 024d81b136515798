"""LIBERO demo files -> robotrl demo format, on tiny hdf5 files written in LIBERO's layout (create_dataset.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robotrl.demos import load_demos
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.libero_dataset import import_libero

h5py = pytest.importorskip("h5py", reason="h5py is in the dev extra; the LIBERO converter needs it")

INSTRUCTION = "open the middle drawer of the cabinet"
TASK = "open_the_middle_drawer_of_the_cabinet"


def write_libero_file(path: Path, lengths=(6, 4), size: int = 8, convention: str = "opengl",
                      problem_info: str | None = None, actions_scale: float = 0.9) -> dict[str, dict]:
    """A LIBERO-layout hdf5; frame k of demo i has red = 10 * i + k and a green stored row 0 (the image bottom
    under the opengl convention). Returns the arrays written, per demo."""
    rng = np.random.default_rng(0)
    written = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = problem_info or json.dumps(
            {"problem_name": "libero_kitchen_tabletop_manipulation", "language_instruction": INSTRUCTION})
        data.attrs["macros_image_convention"] = convention
        data.attrs["env_name"] = "Libero_Kitchen_Tabletop_Manipulation"
        for i, t in enumerate(lengths):
            demo = data.create_group(f"demo_{i}")
            frames = np.zeros((t, size, size, 3), np.uint8)
            frames[..., 0] = (10 * i + np.arange(t))[:, None, None]
            frames[:, 0, :, 1] = 255
            wrist = np.full((t, size, size, 3), 200, np.uint8)
            arrays = {
                "actions": (rng.uniform(-1, 1, (t, 7)) * actions_scale).astype(np.float64),
                "rewards": np.eye(1, t, t - 1, dtype=np.uint8)[0],
                "dones": np.eye(1, t, t - 1, dtype=np.uint8)[0],
                "states": rng.standard_normal((t, 79)),
                "robot_states": rng.standard_normal((t, 9)),
            }
            for key, value in arrays.items():
                demo.create_dataset(key, data=value)
            obs = {"agentview_rgb": frames, "eye_in_hand_rgb": wrist, "ee_states": rng.standard_normal((t, 6)),
                   "gripper_states": rng.standard_normal((t, 2)), "joint_states": rng.standard_normal((t, 7))}
            obs["ee_pos"], obs["ee_ori"] = obs["ee_states"][:, :3], obs["ee_states"][:, 3:]
            group = demo.create_group("obs")
            for key, value in obs.items():
                group.create_dataset(key, data=value)
            demo.attrs["num_samples"] = t
            written[f"demo_{i}"] = {**arrays, **obs}
    return written


@pytest.fixture
def libero_file(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    path = tmp_path / "libero_goal" / f"{TASK}_demo.hdf5"
    path.parent.mkdir()
    return path, write_libero_file(path)


def test_converted_demos_load_and_line_up(libero_file, tmp_path):
    path, written = libero_file
    out = tmp_path / "demos"
    meta = import_libero(path, out)
    episodes = load_demos(out)
    assert len(episodes) == meta["num_episodes"] == 2
    assert meta["instruction"] == INSTRUCTION and meta["task"] == TASK and meta["name"] == f"libero/{TASK}"
    assert meta["image_size"] == 8 and meta["state_dim"] == 15 and meta["action_dim"] == 7
    assert meta["proprio_index"] == list(range(15))
    assert json.loads((out / "meta.json").read_text()) == meta
    for (key, raw), ep in zip(written.items(), episodes, strict=True):
        t = len(raw["actions"])
        # T recorded frames (each after its action) -> T frames and the T-1 actions between them: actions[1:]
        assert ep.obs["pixels"].shape == (t, 3, 8, 8) and ep.action.shape == (t - 1, 7)
        np.testing.assert_allclose(ep.action, raw["actions"][1:].astype(np.float32))
        assert list(ep.obs["pixels"][:, 0, 0, 0]) == [10 * int(key[-1]) + k for k in range(t)]
        # opengl stores the bottom row first: it is the last row after conversion
        assert (ep.obs["pixels"][:, 1, -1] == 255).all() and (ep.obs["pixels"][:, 1, 0] == 0).all()
        state = np.concatenate([raw["ee_states"], raw["gripper_states"], raw["joint_states"]], axis=1)
        np.testing.assert_allclose(ep.obs["state"], state.astype(np.float32))
        assert ep.success.tolist() == [False] * (t - 2) + [True] and (ep.terminated == ep.success).all()
        assert ep.reward.sum() == 1.0 and ep.reward[-1] == 1.0
    assert meta["episode_lengths"] == [5, 3] and meta["successes"] == 2


def test_cameras_resize_and_first_n(libero_file, tmp_path):
    path, _ = libero_file
    out = tmp_path / "two_views"
    meta = import_libero(path, out, cameras=["agentview", "robot0_eye_in_hand"], image_size=4, episodes=1,
                         image_convention="opencv")
    (ep,) = load_demos(out)
    assert meta["cameras"] == ["agentview", "robot0_eye_in_hand"] and ep.obs["pixels"].shape == (6, 6, 4, 4)
    assert (ep.obs["pixels"][:, 3:] == 200).all()  # the wrist view, resized
    green = ep.obs["pixels"][:, 1]
    assert (green[:, 0] > 0).all() and (green[:, -1] == 0).all()  # opencv: the stored top row stays on top


@pytest.mark.parametrize(("change", "kwargs", "error", "needle"), [
    ({"problem_info": "{}"}, {}, DemoFormatError, "language_instruction"),
    ({"actions_scale": 1.5}, {}, DemoFormatError, "expected finite (T, A) in [-1, 1]"),
    ({"convention": "directx"}, {}, DemoFormatError, "image_convention=opengl|opencv"),
    ({"lengths": (1,)}, {}, DemoFormatError, "at least 2"),
    ({}, {"cameras": ["frontview"]}, ConfigError, "robot0_eye_in_hand"),
    ({}, {"episodes": 3}, ConfigError, "holds 2 demos"),
    ({}, {"image_convention": "dx"}, ConfigError, "opencv"),
])
def test_bad_files_and_options_are_one_line_errors(tmp_path, change, kwargs, error, needle):
    path = tmp_path / f"{TASK}_demo.hdf5"
    write_libero_file(path, **change)
    with pytest.raises(error) as info:
        import_libero(path, tmp_path / "out", **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_mismatched_rows_and_missing_keys_are_refused(libero_file, tmp_path):
    path, _ = libero_file
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/joint_states"]
        f["data/demo_1/obs"].create_dataset("joint_states", data=np.zeros((2, 7)))
    with pytest.raises(DemoFormatError, match=r"demo_1: 'joint_states' has 2 rows, expected 4"):
        import_libero(path, tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()  # demo_0 written, but no meta.json: does not load
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/ee_states"]
    with pytest.raises(DemoFormatError, match="missing 'ee_states'"):
        import_libero(path, tmp_path / "out2")


def test_refuses_existing_demos_and_missing_file(libero_file, tmp_path):
    path, _ = libero_file
    import_libero(path, tmp_path / "out")
    with pytest.raises(ConfigError, match="already holds demos"):
        import_libero(path, tmp_path / "out")
    with pytest.raises(ConfigError, match="file not found"):
        import_libero(tmp_path / "nope_demo.hdf5", tmp_path / "out3")
    (tmp_path / "junk_demo.hdf5").write_text("not hdf5")
    with pytest.raises(DemoFormatError, match="not a readable hdf5"):
        import_libero(tmp_path / "junk_demo.hdf5", tmp_path / "out4")


def test_worldenv_reads_converted_demos_with_their_instruction(libero_file, tmp_path):
    from robotrl.workflows.worldenv.data import load_data

    path, _ = libero_file
    import_libero(path, tmp_path / "run" / "data" / "expert" / TASK)
    rows = load_data(tmp_path / "run", kinds=["expert"])
    assert [(task, instruction) for task, instruction, _, _ in rows] == [(TASK, INSTRUCTION)] * 2
    assert rows[0][3].tolist() == list(range(15))


def test_cli_converts_and_reports_errors_in_one_line(libero_file, tmp_path):
    path, _ = libero_file
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "robotrl.cli", "demos", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    out = tmp_path / "cli"
    proc = cli(f"libero_dataset={path}", f"out={out}", "episodes=1", "camera=agentview,robot0_eye_in_hand")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert INSTRUCTION in proc.stdout
    (ep,) = load_demos(out)
    assert ep.obs["pixels"].shape == (6, 6, 8, 8)  # image_size not given: the file's size
    bad = cli(f"libero_dataset={path}", "env=metaworld/reach", f"out={tmp_path / 'x'}")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "env= does not apply" in bad.stderr


def test_missing_h5py_names_the_extra(libero_file, tmp_path, monkeypatch):
    path, _ = libero_file
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'robotrl\[libero\]'"):
        import_libero(path, tmp_path / "out")


def test_demos_of_different_frame_sizes_need_image_size(libero_file, tmp_path):
    path, _ = libero_file
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/agentview_rgb"]
        f["data/demo_1/obs"].create_dataset("agentview_rgb", data=np.zeros((4, 6, 6, 3), np.uint8))
    with pytest.raises(DemoFormatError, match="pass image_size=N"):
        import_libero(path, tmp_path / "out")
    meta = import_libero(path, tmp_path / "resized", image_size=8)
    assert meta["image_size"] == 8 and len(load_demos(tmp_path / "resized")) == 2
