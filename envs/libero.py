"""LIBERO (Liu et al. 2023) tasks as a robotrl base env: ``env=libero env.benchmark=libero_goal env.task=0``.

Optional suite (``pip install 'robotrl[libero]'``).  It wraps LIBERO's ``OffScreenRenderEnv`` (a robosuite 1.4
Panda with the OSC_POSE controller) so that, through the shared wrappers of :func:`robotrl.envs.make_env`, it gives
the robotrl contract, matching what :mod:`robotrl.libero_dataset` makes of LIBERO's own demo files:

- task: ``env.benchmark`` (``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``, ``libero_90``)
  and ``env.task``, the task's index in LIBERO's task order 0 or its name; the instruction is LIBERO's
  ``language`` (``robotrl_info["instruction"]``);
- ``reset(seed=s)``: one of the benchmark's fixed init states (50 per task), drawn with the env's ``np_random``
  (so the seed fixes it), set with LIBERO's ``set_init_state``, then ``SETTLE_STEPS`` zero actions as LIBERO's
  own evaluation does (``libero/lifelong/metric.py``) so objects come to rest before the agent acts;
- pixels: cameras rendered at LIBERO's 128x128, turned upright when robosuite's ``IMAGE_CONVENTION`` is
  ``opengl`` and resized by :func:`robotrl.libero_dataset.upright_frames`, the converter's own function;
- state: the 15-d proprioception LIBERO's datasets store (``ee_states`` = eef position + axis-angle of the eef
  quaternion by robosuite's ``quat2axisangle``, ``gripper_states``, ``joint_states``), so only ``proprio`` /
  ``pixels_proprio`` (and ``pixels``) observation types exist;
- actions: 7-d in [-1, 1] (LIBERO's controller range, so the [-1, 1] rescale is the identity);
- ``info["success"]``: LIBERO's ``done`` (its ``check_success``); a success terminates the episode (LIBERO's
  evaluation stops there) and the reward is LIBERO's sparse 1.0 on success;
- episodes: ``DEFAULT_MAX_STEPS`` = 600 env steps, LIBERO's ``configs/eval/default.yaml`` ``max_steps``.

The package's first import asks questions on stdin unless ``$LIBERO_CONFIG_PATH/config.yaml`` exists, and its
scene/object assets are not in the wheel: LIBERO downloads them from the Hugging Face Hub on first use.  Both
are one-line errors here instead of a prompt or a MuJoCo traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from robotrl.envs.rendering import camera_tuple, tile_views

from robotrl.errors import AssetError, ConfigError
from robotrl.libero_dataset import upright_frames

BENCHMARKS = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
CAMERAS = ("agentview", "robot0_eye_in_hand")  # LIBERO's two cameras (its datasets record both)
DEFAULT_CAMERA = "agentview"
CAMERA_SIZE = 128  # LIBERO's datasets and evaluation render 128x128
DEFAULT_MAX_STEPS = 600  # LIBERO configs/eval/default.yaml max_steps
SETTLE_STEPS = 5  # zero actions after set_init_state, as libero/lifelong/metric.py
ACTION_DIM = 7  # OSC_POSE (6) + gripper
STATE_DIM = 15  # eef pos 3 + axis-angle 3 + gripper qpos 2 + joint pos 7
INSTALL = "pip install 'robotrl[libero]'"
ASSETS_HINT = ("LIBERO downloads its scene/object assets from the Hugging Face Hub on first use (needs internet once; "
               "they land in ~/.cache/libero/assets), or put the complete assets/ folder of LIBERO's GitHub "
               "repository at {local}")


@dataclass(frozen=True)
class LiberoAPI:
    """The parts of the libero package the env uses (tests hand in a fake one; see :func:`load_libero`)."""

    benchmarks: Mapping[str, Callable[[], Any]]  # libero.libero.benchmark.get_benchmark_dict()
    bddl_root: str  # get_libero_path("bddl_files")
    make_raw: Callable[..., Any]  # libero.libero.envs.OffScreenRenderEnv
    image_convention: str = "opengl"  # robosuite.macros.IMAGE_CONVENTION
    assets_dir: str = "libero/libero/assets"  # where a local copy of the assets is looked for (for messages)
    versions: dict[str, str] = field(default_factory=dict)


def libero_config_file() -> Path:
    """The config file LIBERO reads at import (``$LIBERO_CONFIG_PATH/config.yaml``, default ``~/.libero``)."""
    return Path(os.environ.get("LIBERO_CONFIG_PATH", "~/.libero")).expanduser() / "config.yaml"


def load_libero() -> LiberoAPI:
    """Import the libero package, or raise a one-line ConfigError saying how to install or configure it."""
    if find_spec("libero") is None:
        raise ConfigError(f"env=libero needs the libero package, which is not installed: {INSTALL}")
    config = libero_config_file()
    if not config.is_file():  # without it, `import libero.libero` blocks on input() questions
        raise ConfigError(f"LIBERO's config {config} does not exist (its first import would ask questions on stdin): "
                          "run `python -c 'import libero.libero'` once in a terminal, or write that file with keys "
                          "benchmark_root, bddl_files, init_states, datasets, assets (LIBERO_CONFIG_PATH: its folder)")
    try:
        from importlib.metadata import version

        import libero.libero as libero_root
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
        from robosuite import macros
    except ImportError as e:
        raise ConfigError(f"env=libero: the libero package failed to import ({e}); {INSTALL}") from None
    return LiberoAPI(
        benchmarks=benchmark.get_benchmark_dict(),
        bddl_root=get_libero_path("bddl_files"),
        make_raw=OffScreenRenderEnv,
        image_convention=macros.IMAGE_CONVENTION,
        assets_dir=str(Path(libero_root.__file__).parent / "assets"),
        versions={"libero_version": version("libero"), "robosuite_version": version("robosuite")},
    )


def list_tasks(api: LiberoAPI | None = None) -> list[str]:
    """``libero/<benchmark>/<task name>`` for every task of :data:`BENCHMARKS` (needs the libero package)."""
    api = api or load_libero()
    with contextlib.redirect_stdout(sys.stderr):  # LIBERO prints "[info] using task orders ..." per benchmark
        return [f"libero/{b}/{name}" for b in BENCHMARKS if b in api.benchmarks
                for name in api.benchmarks[b]().get_task_names()]


def split_task(task: str) -> tuple[str, str]:
    """``<benchmark>/<task index or name>`` -> its two parts; ConfigError for an unknown benchmark."""
    benchmark, sep, name = str(task).partition("/")
    if not sep or not name or "/" in name:
        raise ConfigError(f"libero task {task!r}, expected '<benchmark>/<task index or name>' "
                          f"(env.benchmark and env.task), benchmarks: {list(BENCHMARKS)}")
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"env.benchmark={benchmark!r}, expected one of {list(BENCHMARKS)}")
    return benchmark, name


def task_index(names: list[str], task: str, benchmark: str) -> int:
    """The index of ``task`` (an index or a name) in the benchmark's task list ``names``."""
    if task.isdigit():
        if int(task) >= len(names):
            raise ConfigError(f"env.task={task}: {benchmark} has {len(names)} tasks (0..{len(names) - 1})")
        return int(task)
    if task not in names:
        close = difflib.get_close_matches(task, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"env.task={task!r} is not a {benchmark} task; {hint}use an index 0..{len(names) - 1} or "
                          f"a name: {names}")
    return names.index(task)


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """robosuite's ``transform_utils.quat2axisangle`` ((x, y, z, w) -> axis * angle), the formula LIBERO's
    ``create_dataset.py`` used for ``ee_states``; for w < 0 the angle exceeds pi, unlike scipy's rotvec."""
    x, y, z, w = (float(v) for v in quat)
    w = min(max(w, -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * 2.0 * math.acos(w) / den


def proprio(obs: Mapping[str, Any]) -> np.ndarray:
    """A robosuite observation dict -> LIBERO's 15-d ``[ee_states, gripper_states, joint_states]`` (float32)."""
    parts = [obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"],
             obs["robot0_joint_pos"]]
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts]).astype(np.float32)


def _missing_file(error: BaseException) -> str | None:
    """The file a failed env construction could not open (a scene XML, mesh or texture: the task's bddl file was
    checked before), or None for any other error."""
    if isinstance(error, FileNotFoundError) and error.filename:
        return str(error.filename)  # robosuite parsing a scene/object XML
    opened = re.search(r"Error opening file '([^']+)'", str(error))  # MuJoCo compiling a mesh/texture
    return opened.group(1) if opened else None


class LiberoEnv(gym.Env):
    """One LIBERO task (see the module docstring); ``render_frame(size, view)`` gives upright camera pixels."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}  # LIBERO's control_freq

    def __init__(
        self,
        task: str,
        seed: int,
        camera: Any = None,
        max_episode_steps: int | None = None,
        video_size: int = 128,
        api: LiberoAPI | None = None,
    ) -> None:
        benchmark, name = split_task(task)
        api = api or load_libero()
        if benchmark not in api.benchmarks:
            raise ConfigError(f"env.benchmark={benchmark!r} is not in this libero package: {sorted(api.benchmarks)}")
        bench = api.benchmarks[benchmark]()
        self.task_id = task_index(list(bench.get_task_names()), name, benchmark)
        spec = bench.get_task(self.task_id)
        self.benchmark, self.task_name, self.instruction = benchmark, spec.name, str(spec.language)
        self.init_states = np.asarray(bench.get_task_init_states(self.task_id))
        bddl = os.path.join(api.bddl_root, spec.problem_folder, spec.bddl_file)
        if not os.path.isfile(bddl):
            raise ConfigError(f"LIBERO's task file {bddl} does not exist (bddl_files in {libero_config_file()})")
        self.cameras = camera_tuple(camera, DEFAULT_CAMERA)
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad:
            raise ConfigError(f"env.camera={bad}, expected LIBERO cameras from {list(CAMERAS)}")
        self.camera = self.cameras[0]
        self.flip = api.image_convention == "opengl"  # robosuite renders bottom-up unless set to opencv
        self.default_max_steps = DEFAULT_MAX_STEPS
        self.video_size = video_size
        self.proprio_index = np.arange(STATE_DIM)
        self.render_mode = "rgb_array"
        self._raw = self._build(api, bddl, max_episode_steps or DEFAULT_MAX_STEPS)
        low, high = (np.asarray(b, np.float32) for b in self._raw.env.action_spec)
        if low.shape != (ACTION_DIM,) or not (np.allclose(low, -1) and np.allclose(high, 1)):
            raise ConfigError(f"LIBERO env actions are {low.shape} in [{low.min()}, {high.max()}], expected "
                              f"({ACTION_DIM},) in [-1, 1] (OSC_POSE)")
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        self._obs: Mapping[str, Any] | None = None
        self._frames: dict[tuple[int, int], np.ndarray] = {}  # (view, size) -> frame of the current observation
        self.np_random, _ = gym.utils.seeding.np_random(seed)

    def _build(self, api: LiberoAPI, bddl: str, max_steps: int) -> Any:
        """``OffScreenRenderEnv`` for ``bddl``; a missing scene/object asset becomes one AssetError line."""
        try:
            return api.make_raw(
                bddl_file_name=bddl,
                camera_names=list(self.cameras),
                camera_heights=CAMERA_SIZE,
                camera_widths=CAMERA_SIZE,
                horizon=max_steps + SETTLE_STEPS,
                ignore_done=True,  # robosuite's own horizon never ends an episode; robotrl's TimeLimit does
            )
        except (OSError, ValueError) as e:
            missing = _missing_file(e)
            if missing is None:
                raise
            raise AssetError(f"LIBERO asset {missing} is missing, so {self.benchmark}/{self.task_name} cannot be "
                             f"built: {ASSETS_HINT.format(local=api.assets_dir)}") from None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        index = int(self.np_random.integers(len(self.init_states)))
        self._raw.reset()
        obs = self._raw.set_init_state(self.init_states[index])
        for _ in range(SETTLE_STEPS):
            obs, _, _, _ = self._raw.step(np.zeros(ACTION_DIM))
        self._set_obs(obs)
        return proprio(obs), {"success": False, "init_state": index}

    def step(self, action: np.ndarray):
        obs, reward, done, info = self._raw.step(np.asarray(action, dtype=np.float64))
        self._set_obs(obs)
        success = bool(done)  # LIBERO's step returns done = check_success()
        return proprio(obs), float(reward), success, False, {**info, "success": success}

    def _set_obs(self, obs: Mapping[str, Any]) -> None:
        self._obs, self._frames = obs, {}

    def render_frame(self, size: int, view: int = 0) -> np.ndarray:
        """(size, size, 3) uint8 upright frame of camera ``cameras[view]`` from the latest observation."""
        if self._obs is None:
            raise RuntimeError("LiberoEnv.render_frame before reset()")
        key = (view, size)
        if key not in self._frames:
            image = np.asarray(self._obs[f"{self.cameras[view]}_image"])
            self._frames[key] = upright_frames(image[None], self.flip, size)[0].transpose(1, 2, 0)
        return self._frames[key]

    def render(self) -> np.ndarray:
        return tile_views(self, self.video_size)

    def close(self) -> None:
        raw, self._raw = getattr(self, "_raw", None), None
        if raw is not None:
            raw.close()


def build(spec: Any, seed: int) -> tuple[gym.Env, dict[str, Any]]:
    """The base env of an ``EnvSpec`` (registered in ``robotrl.envs.SUITES``) and LIBERO's task/version info."""
    api = load_libero()
    env = LiberoEnv(spec.task, seed, spec.camera, spec.max_episode_steps, spec.video_size, api=api)
    extra = {"benchmark": env.benchmark, "task_id": env.task_id, "task_name": env.task_name,
             "instruction": env.instruction, "init_states": len(env.init_states), **api.versions}
    return env, extra
