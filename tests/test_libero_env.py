"""env=libero (robotrl.envs.libero) on a fake LIBERO package, plus a slow test of the real one when it can run.

The fake stands in for ``libero.libero`` at the boundary the env uses (:class:`robotrl.envs.libero.LiberoAPI`):
a benchmark with task names, instructions and fixed init states, and an ``OffScreenRenderEnv``-shaped env whose
observations carry robosuite 1.4's keys (``agentview_image``, ``robot0_eef_quat``, ...; images stored bottom-up
as robosuite's default ``opengl`` convention renders them) and encode the init state and step count.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from robotrl.envs import libero as lb
from robotrl.envs import make_env, parse_env_cfg

from robotrl.errors import ActionError, AssetError, ConfigError

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
INIT_STATES = 6


class FakeTask(NamedTuple):
    name: str
    language: str
    problem: str
    problem_folder: str
    bddl_file: str
    init_states_file: str


class FakeBenchmark:
    """libero.libero.benchmark's Benchmark: two tasks, init state k of task i has state[0] = 100 * i + k."""

    TASKS = (("open_the_middle_drawer_of_the_cabinet", "open the middle drawer of the cabinet"),
             ("put_the_bowl_on_the_stove", "put the bowl on the stove"))

    def get_task_names(self) -> list[str]:
        return [name for name, _ in self.TASKS]

    def get_task(self, i: int) -> FakeTask:
        name, language = self.TASKS[i]
        return FakeTask(name, language, "Libero", "libero_goal", f"{name}.bddl", f"{name}.pruned_init")

    def get_task_init_states(self, i: int) -> np.ndarray:
        states = np.random.default_rng(i).standard_normal((INIT_STATES, 79))
        states[:, 0] = 100 * i + np.arange(INIT_STATES)
        return states


class FakeRobosuiteEnv:
    action_spec = (-np.ones(7), np.ones(7))


class FakeOffScreenRenderEnv:
    """ControlEnv's interface; success (done) from raw step ``success_after``; every instance is kept in ``made``."""

    made: list[FakeOffScreenRenderEnv] = []
    success_after = lb.SETTLE_STEPS + 4  # raw steps, the settle steps after reset included

    def __init__(self, bddl_file_name: str, camera_names: list[str], camera_heights: int, camera_widths: int,
                 **kwargs: Any) -> None:
        assert os.path.isfile(bddl_file_name), bddl_file_name
        self.kwargs = dict(bddl_file_name=bddl_file_name, camera_names=camera_names, camera_heights=camera_heights,
                           camera_widths=camera_widths, **kwargs)
        self.env = FakeRobosuiteEnv()
        self.state, self.t, self.actions = np.zeros(79), 0, []
        FakeOffScreenRenderEnv.made.append(self)

    def reset(self) -> dict[str, np.ndarray]:
        self.state, self.t = np.zeros(79), 0
        return self.obs()

    def set_init_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        self.state, self.t = np.array(state, dtype=np.float64), 0
        return self.obs()

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        self.actions.append(action)
        self.t += 1
        self.state[1:8] += 0.01 * action
        done = self.t >= self.success_after
        return self.obs(), float(done), done, {}

    def obs(self) -> dict[str, np.ndarray]:
        return raw_obs(self.state, self.t, self.kwargs["camera_heights"])

    def check_success(self) -> bool:
        return self.t >= self.success_after

    def close(self) -> None:
        self.closed = True


def raw_obs(state: np.ndarray, t: int, size: int) -> dict[str, np.ndarray]:
    """robosuite 1.4 observation keys. Upright images have red = init id, green = step, a white top row; stored
    bottom-up (the white row is the last stored row)."""
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0], image[..., 1] = int(state[0]) % 256, t
    image[0] = 255
    wrist = np.full((size, size, 3), 77, np.uint8)
    quat = np.array([0.1, -0.3, 0.2, -0.9 if int(state[0]) % 2 else 0.9])  # both signs of w
    quat /= np.linalg.norm(quat)
    return {
        "agentview_image": image[::-1].copy(), "robot0_eye_in_hand_image": wrist[::-1].copy(),
        "robot0_eef_pos": state[8:11] + 0.5, "robot0_eef_quat": quat,
        "robot0_gripper_qpos": np.array([0.04, -0.04]) + t * 1e-3, "robot0_gripper_qvel": np.zeros(2),
        "robot0_joint_pos": state[1:8].copy(), "robot0_joint_vel": np.zeros(7),
        "robot0_joint_pos_cos": np.cos(state[1:8]), "robot0_joint_pos_sin": np.sin(state[1:8]),
        "object-state": state[20:30].copy(), "robot0_proprio-state": state[1:40].copy(),
    }


@pytest.fixture()
def fake_libero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> lb.LiberoAPI:
    """Route make_env's libero suite to the fake package (bddl files exist under tmp_path)."""
    for name, _ in FakeBenchmark.TASKS:
        (tmp_path / "libero_goal").mkdir(exist_ok=True)
        (tmp_path / "libero_goal" / f"{name}.bddl").write_text("(define (problem Libero))")
    api = lb.LiberoAPI(benchmarks={"libero_goal": FakeBenchmark}, bddl_root=str(tmp_path),
                       make_raw=FakeOffScreenRenderEnv, image_convention="opengl", assets_dir="/pkg/libero/assets",
                       versions={"libero_version": "fake"})
    monkeypatch.setattr(lb, "load_libero", lambda: api)
    FakeOffScreenRenderEnv.made = []
    return api


def libero_env(seed: int = 0, **overrides: Any):
    cfg = {"suite": "libero", "benchmark": "libero_goal", "task": "0", "image_size": 32, "obs_type": "pixels_proprio",
           "action_repeat": 1, "frame_stack": 2, "camera": "agentview", **overrides}
    return make_env(cfg, seed=seed)


# ---------------------------------------------------------------------------------------------- contract
def test_check_env_and_spaces(fake_libero: lb.LiberoAPI) -> None:
    env = libero_env()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)
    expected = ["not having a spec", "different from the unwrapped version", "infinity"]
    assert not [str(w.message) for w in caught if not any(e in str(w.message) for e in expected)]
    assert env.observation_space["pixels"].shape == (6, 32, 32) and env.observation_space["pixels"].dtype == np.uint8
    assert env.observation_space["state"].shape == (15,) and env.observation_space["state"].dtype == np.float32
    assert env.action_space.shape == (7,) and env.action_space.dtype == np.float32
    assert float(env.action_space.low.min()) == -1.0 and float(env.action_space.high.max()) == 1.0
    raw = FakeOffScreenRenderEnv.made[-1]
    assert raw.kwargs["camera_names"] == ["agentview"] and raw.kwargs["camera_heights"] == lb.CAMERA_SIZE
    info = env.robotrl_info
    assert info["name"] == "libero/libero_goal/0" and info["task_name"] == "open_the_middle_drawer_of_the_cabinet"
    assert info["instruction"] == "open the middle drawer of the cabinet" and info["init_states"] == INIT_STATES
    assert info["max_episode_steps"] == lb.DEFAULT_MAX_STEPS and info["action_repeat"] == 1
    assert info["libero_version"] == "fake"
    env.close()
    assert raw.closed


def test_pixels_upright_and_state_is_libero_proprio(fake_libero: lb.LiberoAPI) -> None:
    env = libero_env(image_size=lb.CAMERA_SIZE, frame_stack=1)
    obs, info = env.reset(seed=3)
    pixels = obs["pixels"]  # (3, 128, 128)
    assert (pixels[:, 0] == 255).all() and (pixels[:, -1] != 255).any()  # white row on top: flipped upright
    assert pixels[0, 5, 5] == info["init_state"]  # red = the init state's id (task 0: 0..5)
    assert pixels[1, 5, 5] == lb.SETTLE_STEPS  # green = raw steps: LIBERO's settle steps ran before the agent
    raw = FakeOffScreenRenderEnv.made[-1]
    expected = raw_obs(raw.state, raw.t, lb.CAMERA_SIZE)
    quat = expected["robot0_eef_quat"]
    axis_angle = quat[:3] * 2 * np.arccos(quat[3]) / np.sqrt(1 - quat[3] ** 2)  # robosuite's quat2axisangle
    want = np.concatenate([expected["robot0_eef_pos"], axis_angle, expected["robot0_gripper_qpos"],
                           expected["robot0_joint_pos"]])
    np.testing.assert_allclose(obs["state"], want, rtol=1e-6)
    assert obs["state"].dtype == np.float32
    env.close()


def test_opencv_convention_is_not_flipped(fake_libero: lb.LiberoAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    api = lb.LiberoAPI(**{**fake_libero.__dict__, "image_convention": "opencv"})
    monkeypatch.setattr(lb, "load_libero", lambda: api)
    obs, _ = libero_env(image_size=lb.CAMERA_SIZE).reset(seed=0)
    assert (obs["pixels"][:, -1] == 255).all()  # stored top-down already: the white row stays at the bottom


def test_quat2axisangle_matches_scipy_rotvec_for_positive_w() -> None:
    from scipy.spatial.transform import Rotation

    quats = Rotation.random(20, random_state=0).as_quat()  # (x, y, z, w)
    quats[quats[:, 3] < 0] *= -1
    for q in quats:
        np.testing.assert_allclose(lb.quat2axisangle(q), Rotation.from_quat(q).as_rotvec(), atol=1e-9)
    np.testing.assert_array_equal(lb.quat2axisangle(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))
    q = np.array([0.0, 0.0, np.sin(0.2), -np.cos(0.2)])  # w < 0: robosuite keeps the long way round
    np.testing.assert_allclose(lb.quat2axisangle(q), [0, 0, 2 * np.pi - 0.4], atol=1e-9)


def test_success_terminates_and_is_reported(fake_libero: lb.LiberoAPI) -> None:
    env = libero_env(action_repeat=2)
    env.reset(seed=0)
    steps = []
    for _ in range(10):
        _, reward, terminated, truncated, info = env.step(np.full(7, 0.5, np.float32))
        steps.append((reward, terminated, truncated, info["success"]))
        if terminated or truncated:
            break
    # success after 4 raw steps = 2 agent steps of 2 repeats (settle steps do not count)
    assert steps == [(0.0, False, False, False), (1.0, True, False, True)]
    raw = FakeOffScreenRenderEnv.made[-1]
    np.testing.assert_array_equal(raw.actions[: lb.SETTLE_STEPS], np.zeros((lb.SETTLE_STEPS, 7)))
    np.testing.assert_allclose(raw.actions[-1], np.full(7, 0.5))  # [-1, 1] actions reach LIBERO unchanged
    env.close()


def test_time_limit_truncates(fake_libero: lb.LiberoAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeOffScreenRenderEnv, "success_after", 10**6)
    env = libero_env(max_episode_steps=3)
    env.reset(seed=0)
    ends = [env.step(np.zeros(7, np.float32))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]
    assert FakeOffScreenRenderEnv.made[-1].kwargs["horizon"] == 3 + lb.SETTLE_STEPS


@pytest.mark.parametrize("action", [np.zeros(6), np.full(7, 1.5), np.array([np.nan] + [0.0] * 6)])
def test_bad_actions_raise(fake_libero: lb.LiberoAPI, action: np.ndarray) -> None:
    env = libero_env()
    env.reset(seed=0)
    with pytest.raises(ActionError):
        env.step(action)


def test_seed_picks_a_fixed_init_state(fake_libero: lb.LiberoAPI) -> None:
    env = libero_env(obs_type="proprio")
    picks = {seed: env.reset(seed=seed)[1]["init_state"] for seed in range(12)}
    assert len(set(picks.values())) > 1 and set(picks.values()) <= set(range(INIT_STATES))
    raw = FakeOffScreenRenderEnv.made[-1]
    for seed, index in picks.items():
        obs, info = env.reset(seed=seed)
        assert info["init_state"] == index
        np.testing.assert_array_equal(raw.state[8:], FakeBenchmark().get_task_init_states(0)[index][8:])
        np.testing.assert_array_equal(obs["state"], libero_env(obs_type="proprio").reset(seed=seed)[0]["state"])
    unseeded = [env.reset()[1]["init_state"] for _ in range(12)]  # continues the stream
    assert len(set(unseeded)) > 1


def test_task_by_name_and_second_camera(fake_libero: lb.LiberoAPI) -> None:
    env = libero_env(task="put_the_bowl_on_the_stove", camera=["agentview", "robot0_eye_in_hand"], frame_stack=1)
    obs, info = env.reset(seed=0)
    assert env.robotrl_info["task_id"] == 1 and env.robotrl_info["instruction"] == "put the bowl on the stove"
    assert obs["pixels"].shape == (6, 32, 32) and (obs["pixels"][3:] == 77).all()
    assert obs["pixels"][0, 5, 5] == 100 + info["init_state"]  # task 1's init states
    assert env.render().shape == (128, 256, 3)


def test_list_tasks_and_cli(fake_libero: lb.LiberoAPI, capsys: pytest.CaptureFixture) -> None:
    from robotrl.cli import run

    api = lb.LiberoAPI(**{**fake_libero.__dict__, "benchmarks": dict.fromkeys(lb.BENCHMARKS, FakeBenchmark)})
    names = lb.list_tasks(api)
    assert len(names) == 2 * len(lb.BENCHMARKS) and "libero/libero_10/put_the_bowl_on_the_stove" in names
    assert run("envs", ["libero"]) == 0  # the fake api of the fixture: libero_goal only
    assert capsys.readouterr().out.split() == ["libero/libero_goal/open_the_middle_drawer_of_the_cabinet",
                                               "libero/libero_goal/put_the_bowl_on_the_stove"]


# ---------------------------------------------------------------------------------------------- bad config
@pytest.mark.parametrize(("overrides", "needle"), [
    ({"task": "7"}, "has 2 tasks"),
    ({"task": "put_the_bowl_on_the_stov"}, "did you mean put_the_bowl_on_the_stove"),
    ({"benchmark": "libero_20"}, "libero_spatial"),
    ({"camera": "frontview"}, "robot0_eye_in_hand"),
    ({"obs_type": "pixels_state"}, "pixels_proprio"),
    ({"name": "libero/libero_goal/1"}, "disagrees"),
])
def test_bad_config_is_one_line(fake_libero: lb.LiberoAPI, overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        libero_env(**overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_packaged_config_composes() -> None:
    from robotrl.overrides import check_overrides, compose_config

    check_overrides(["env=libero", "env.benchmark=libero_10", "env.task=3"])
    cfg = compose_config(["env=libero", "env.benchmark=libero_10", "env.task=put_both_moka_pots_on_the_stove"])
    spec = parse_env_cfg(cfg.env)
    assert (spec.suite, spec.task) == ("libero", "libero_10/put_both_moka_pots_on_the_stove")
    assert spec.obs_type == "pixels_proprio" and spec.image_size == lb.CAMERA_SIZE and spec.action_repeat == 1
    assert cfg.run_dir == "runs/libero/libero_10/put_both_moka_pots_on_the_stove/drqv2/seed1"


# ---------------------------------------------------------------------------------- missing package / assets
def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libero", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'robotrl\[libero\]'") as err:
        libero_env()
    assert "\n" not in str(err.value)


def test_missing_libero_config_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import types

    # a package that would block on input() if imported: the check must come first
    monkeypatch.setitem(sys.modules, "libero", types.ModuleType("libero"))
    monkeypatch.setattr(lb, "find_spec", lambda name: object())
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="config.yaml does not exist") as err:
        lb.load_libero()
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("error", [
    FileNotFoundError(2, "No such file or directory", "/pkg/libero/assets/scenes/libero_tabletop_base_style.xml"),
    ValueError("Error: Error opening file '/pkg/libero/assets/stable_scanned_objects/akita_black_bowl/visual/"
               "akita_black_bowl_vis.msh': No such file or directory"),
])
def test_missing_assets_is_one_line(fake_libero: lb.LiberoAPI, monkeypatch: pytest.MonkeyPatch,
                                    error: Exception) -> None:
    """The two ways LIBERO 0.1.1 fails here (probed): no assets at all, and a copy lacking some meshes."""
    def fail(**kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(lb, "load_libero", lambda: lb.LiberoAPI(**{**fake_libero.__dict__, "make_raw": fail}))
    with pytest.raises(AssetError) as err:
        libero_env()
    message = str(err.value)
    assert "\n" not in message and "/pkg/libero/assets/" in message and "Hugging Face" in message
    assert "open_the_middle_drawer_of_the_cabinet" in message


def test_other_construction_errors_are_not_hidden(fake_libero: lb.LiberoAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(**kwargs: Any) -> None:
        raise ValueError("some robosuite bug")

    monkeypatch.setattr(lb, "load_libero", lambda: lb.LiberoAPI(**{**fake_libero.__dict__, "make_raw": fail}))
    with pytest.raises(ValueError, match="some robosuite bug"):
        libero_env()


# ----------------------------------------------------------------------------- alignment with the converter
def test_env_observations_equal_converted_demo(fake_libero: lb.LiberoAPI, tmp_path: Path) -> None:
    """Write the raw observations of an env episode as LIBERO's create_dataset.py does, convert the file with
    robotrl.libero_dataset, and compare with what the env gave for the same observations: pixels and state
    must be identical (same flip, resize and proprioception)."""
    h5py = pytest.importorskip("h5py", reason="the LIBERO converter needs h5py (dev extra)")
    from robotrl.demos import load_demos
    from robotrl.libero_dataset import import_libero

    env = libero_env(image_size=48, frame_stack=1, camera=["agentview", "robot0_eye_in_hand"])
    obs, _ = env.reset(seed=1)
    raw_env = FakeOffScreenRenderEnv.made[-1]
    env_obs, raws, actions = [obs], [raw_env.obs()], [np.zeros(7)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = rng.uniform(-1, 1, 7).astype(np.float32)
        obs, *_ = env.step(action)
        env_obs.append(obs)
        raws.append(raw_env.obs())
        actions.append(action)
    path = tmp_path / "open_the_middle_drawer_of_the_cabinet_demo.hdf5"
    with h5py.File(path, "w") as f:  # create_dataset.py's layout and formulas (robosuite's quat2axisangle)
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "open the middle drawer of the cabinet"})
        data.attrs["macros_image_convention"] = "opengl"
        demo = data.create_group("demo_0")
        demo.create_dataset("actions", data=np.array(actions))
        demo.create_dataset("rewards", data=np.eye(1, 4, 3, dtype=np.uint8)[0])
        demo.create_dataset("dones", data=np.eye(1, 4, 3, dtype=np.uint8)[0])
        group = demo.create_group("obs")
        group.create_dataset("agentview_rgb", data=np.stack([r["agentview_image"] for r in raws]))
        group.create_dataset("eye_in_hand_rgb", data=np.stack([r["robot0_eye_in_hand_image"] for r in raws]))
        quats = [r["robot0_eef_quat"] for r in raws]
        angles = [q[:3] * 2 * np.arccos(q[3]) / np.sqrt(1 - q[3] ** 2) for q in quats]
        group.create_dataset("ee_states", data=np.stack([np.hstack([r["robot0_eef_pos"], a])
                                                         for r, a in zip(raws, angles, strict=True)]))
        group.create_dataset("gripper_states", data=np.stack([r["robot0_gripper_qpos"] for r in raws]))
        group.create_dataset("joint_states", data=np.stack([r["robot0_joint_pos"] for r in raws]))
    import_libero(path, tmp_path / "demos", cameras=["agentview", "robot0_eye_in_hand"], image_size=48)
    episode = load_demos(tmp_path / "demos")[0]
    np.testing.assert_array_equal(episode.obs["pixels"], np.stack([o["pixels"] for o in env_obs]))
    np.testing.assert_allclose(episode.obs["state"], np.stack([o["state"] for o in env_obs]), rtol=1e-6)
    np.testing.assert_array_equal(episode.action, np.array(actions[1:], np.float32))


# ------------------------------------------------------------------------------------------- the real package
def test_real_benchmark_tasks_and_init_states() -> None:
    """LIBERO's benchmark metadata works without assets (skipped where the package is not installed)."""
    pytest.importorskip("libero", reason="the libero package is not installed (pip install 'robotrl[libero]')")
    if not lb.libero_config_file().is_file():
        pytest.skip(f"no LIBERO config at {lb.libero_config_file()} (set LIBERO_CONFIG_PATH)")
    api = lb.load_libero()
    assert set(lb.BENCHMARKS) <= set(api.benchmarks)
    bench = api.benchmarks["libero_goal"]()
    names = list(bench.get_task_names())
    assert len(names) == 10 and lb.task_index(names, "open_the_middle_drawer_of_the_cabinet", "libero_goal") == 0
    assert bench.get_task(0).language == "open the middle drawer of the cabinet"
    assert np.asarray(bench.get_task_init_states(0)).shape == (50, 79)
    task = bench.get_task(0)
    assert os.path.isfile(os.path.join(api.bddl_root, task.problem_folder, task.bddl_file))


@pytest.mark.slow
def test_real_libero_env_steps() -> None:
    """Build and step libero_goal task 0 with the real package; skipped (with the reason) where it cannot run."""
    pytest.importorskip("libero", reason="the libero package is not installed (pip install 'robotrl[libero]')")
    if not lb.libero_config_file().is_file():
        pytest.skip(f"no LIBERO config at {lb.libero_config_file()} (set LIBERO_CONFIG_PATH)")
    try:
        env = libero_env(image_size=64)
    except AssetError as e:
        pytest.skip(f"LIBERO's assets are missing: {e}")
    info = env.robotrl_info
    assert info["instruction"] == "open the middle drawer of the cabinet" and info["init_states"] == 50
    check_env(env, skip_render_check=False)
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (6, 64, 64) and obs["state"].shape == (15,)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(info["success"], bool) and np.isfinite(reward)
    first, _ = env.reset(seed=0)
    again, _ = libero_env(image_size=64).reset(seed=0)
    np.testing.assert_array_equal(first["state"], again["state"])
    np.testing.assert_array_equal(first["pixels"], again["pixels"])
    env.close()
