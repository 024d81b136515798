"""Meta-World v3 tasks as a gymnasium base env that honours ``reset(seed=)``.

Why not ``gym.make("Meta-World/MT1", ...)``: Meta-World's ``reset`` ignores its ``seed`` argument and seeds
only at construction (machine-facts.md), and MT1 draws each episode's goal from 50 pre-sampled tasks with an
unseeded wrapper RNG.  Here the raw task class is built directly in the goal-observable, DrM/DrQ-v2 style
set-up (``_freeze_rand_vec = False``: a fresh object/goal vector per episode) and with Meta-World's own
``seeded_rand_vec`` switch, which draws that vector from the env's ``np_random``.  ``reset(seed=s)``
re-seeds that generator, so the seed fully determines the episode's initial state and goal; ``reset()``
continues the stream, so the same ``make_env(seed)`` gives the same goal sequence.

Rendering uses fixed cameras (default ``corner2``, mounted upside down in the XML -> ``rot90(img, 2)``; a list
gives several views, e.g. MoDem-V2's two cameras) through :class:`~robotrl.envs.rendering.FrameRenderer`;
``fast_render`` turns off shadows, reflections and offscreen multisampling (about 16x faster on llvmpipe; measured
in machine-facts.md).  Proprioception (``PROPRIO_INDEX``) is MoDem's Meta-World choice (facebookresearch/modem
``tasks/metaworld.py``): hand position and gripper opening now and one frame earlier, 8 of the 39 state entries.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

import gymnasium as gym
import numpy as np
from robotrl.envs.rendering import FrameRenderer, camera_tuple, check_cameras, make_fast, tile_views

DEFAULT_CAMERA = "corner2"
DEFAULT_MAX_STEPS = 500
DEFAULT_REWARD_VERSION = "v2"  # the ``reward_function_version`` every metaworld 3.1.1 v3 task defaults to
UPSIDE_DOWN_CAMERAS = frozenset({"corner2"})  # measured; other cameras are rendered as MuJoCo gives them
PROPRIO_INDEX = np.r_[0:4, 18:22]  # hand xyz + gripper, and the same four of the previous frame (obs[18:22])
TASK_SAMPLING = "uniform rand_vec per reset from env.np_random (goal observable, seeded by reset(seed))"


@cache
def task_names() -> list[str]:
    """The 50 v3 task names without the ``-v3`` suffix, e.g. ``reach``, ``pick-place``."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS)


def versions(reward_function_version: str = DEFAULT_REWARD_VERSION) -> dict[str, str]:
    """Version strings logged with every Meta-World result."""
    return {"metaworld_version": version("metaworld"), "reward_function_version": reward_function_version}


def _make_raw(task: str, size: int, reward_function_version: str) -> Any:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    raw = ALL_V3_ENVIRONMENTS[f"{task}-v3"](reward_function_version=reward_function_version, width=size, height=size)
    raw._partially_observable = False  # goal observable: the scripted expert needs obs[36:39]
    raw.__dict__.pop("sawyer_observation_space", None)  # cached_property: recompute for the new observability
    raw._set_task_called = True
    raw._freeze_rand_vec = False
    raw.seeded_rand_vec = True
    return raw


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task; ``info["success"]`` is a bool; ``render_frame(size)`` gives camera pixels."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        seed: int,
        camera: str | list[str] | tuple[str, ...] | None = None,
        max_episode_steps: int | None = None,
        video_size: int = 128,
        image_size: int = 84,
        fast_render: bool = True,
        reward_function_version: str = DEFAULT_REWARD_VERSION,
    ) -> None:
        self._raw = _make_raw(task, max(image_size, video_size), reward_function_version)
        self.default_max_steps = DEFAULT_MAX_STEPS
        self._raw.max_path_length = max_episode_steps or DEFAULT_MAX_STEPS  # never raise before our TimeLimit
        self._raw.seed(seed)
        self.cameras = camera_tuple(camera, DEFAULT_CAMERA)
        check_cameras(self._raw.model, self.cameras, f"metaworld/{task}")
        self.camera = self.cameras[0]
        self.proprio_index = PROPRIO_INDEX
        # per view: rendered turned by 180 degrees (reward models that project 3-D points into frames need it)
        self.rotated_views = tuple(cam in UPSIDE_DOWN_CAMERAS for cam in self.cameras)
        if fast_render:
            make_fast(self._raw.model)
        self._renderers = [
            FrameRenderer(self._raw.model, cam, fast=fast_render, rotate180=rotated)
            for cam, rotated in zip(self.cameras, self.rotated_views, strict=True)
        ]
        self.video_size = video_size
        self.render_mode = "rgb_array"
        self.action_space = gym.spaces.Box(-1.0, 1.0, self._raw.action_space.shape, np.float32)
        bounds = self._raw.sawyer_observation_space  # finite: Meta-World clips its observations to these
        self.observation_space = gym.spaces.Box(
            bounds.low.astype(np.float32), bounds.high.astype(np.float32), bounds.shape, np.float32
        )

    @property
    def raw(self) -> Any:
        """The underlying ``SawyerXYZEnv`` (for the scripted expert and tests)."""
        return self._raw

    @property
    def goal(self) -> np.ndarray:
        """The current episode's goal position (``_target_pos``)."""
        return np.array(self._raw._target_pos, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._raw.seed(seed)
        obs, _ = self._raw.reset()
        return np.asarray(obs, dtype=np.float32), {"success": False}

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self._raw.step(np.asarray(action, dtype=np.float32))
        info = {**info, "success": bool(info.get("success", False))}
        return np.asarray(obs, dtype=np.float32), float(reward), bool(terminated), bool(truncated), info

    def render_frame(self, size: int, view: int = 0) -> np.ndarray:
        """(size, size, 3) uint8 upright frame of the current state from camera ``cameras[view]``."""
        return self._renderers[view].render(self._raw.data, size)

    def render(self) -> np.ndarray:
        return tile_views(self, self.video_size)

    def close(self) -> None:
        for renderer in self._renderers:
            renderer.close()
        self._raw.close()


def build(spec: Any, seed: int) -> tuple[gym.Env, dict[str, Any]]:
    """The base env of an ``EnvSpec`` (registered in ``robotrl.envs.SUITES``) and its version/sampling info."""
    env = MetaWorldEnv(spec.task, seed, camera=spec.camera, max_episode_steps=spec.max_episode_steps,
                       video_size=spec.video_size, image_size=spec.image_size, fast_render=spec.fast_render,
                       reward_function_version=spec.reward_function_version)
    extra = {**versions(spec.reward_function_version), "env_name": f"{spec.task}-v3",
             "fast_render": spec.fast_render, "task_sampling": TASK_SAMPLING}
    return env, extra
