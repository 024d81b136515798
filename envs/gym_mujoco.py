"""Gymnasium MuJoCo v5 envs as a robotrl base env (float32 state, ``render_frame(size)`` at any size).

gymnasium's own renderer renders at one size fixed at construction, but robotrl needs two (observation
pixels and video frames), so frames come from :class:`~robotrl.envs.rendering.FrameRenderer` with the env's
default camera config.  One deliberate difference from gymnasium: when that config names a ``trackbodyid``
the camera *tracks* the body (gymnasium leaves it free, so a running agent leaves the picture, which is
useless for pixel-based control).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from robotrl.envs.rendering import FrameRenderer, camera_tuple, check_cameras, free_camera, tile_views

GYM_IDS: dict[str, str] = {
    "ant": "Ant-v5",
    "half_cheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "humanoid": "Humanoid-v5",
    "humanoid_standup": "HumanoidStandup-v5",
    "inverted_pendulum": "InvertedPendulum-v5",
    "inverted_double_pendulum": "InvertedDoublePendulum-v5",
    "pusher": "Pusher-v5",
    "reacher": "Reacher-v5",
    "swimmer": "Swimmer-v5",
    "walker2d": "Walker2d-v5",
}


def _renderer(raw: Any, camera: int | str | None) -> FrameRenderer:
    """A named/numbered model camera, or the env's default free camera (tracking if it names a body)."""
    if camera is not None:
        return FrameRenderer(raw.model, camera)
    config = getattr(getattr(raw, "mujoco_renderer", None), "default_cam_config", None) or {}
    track = int(config.get("trackbodyid", -1))
    cam = free_camera(raw.model, raw.data, config)
    return FrameRenderer(raw.model, cam, track_body=track if track >= 0 else None)


class GymMujocoEnv(gym.Env):
    """One gymnasium MuJoCo v5 env without gymnasium's TimeLimit (robotrl adds its own at agent level)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        task: str,
        seed: int,
        camera: int | str | list[int | str] | None = None,
        max_episode_steps: int | None = None,
        video_size: int = 128,
    ) -> None:
        made = gym.make(GYM_IDS[task], disable_env_checker=True)
        self.default_max_steps = int(made.spec.max_episode_steps or 1000)
        self._raw = made.unwrapped
        self._seed = seed
        self._renderers: list[FrameRenderer] = []
        self._camera_cfg = camera_tuple(camera, None)  # None: the env's default (possibly tracking) camera
        check_cameras(self._raw.model, self._camera_cfg, f"gym/{task}")
        self.cameras = tuple("default" if cam is None else cam for cam in self._camera_cfg)
        self.camera = self.cameras[0]
        self.video_size = video_size
        self.render_mode = "rgb_array"
        space = self._raw.action_space
        self.action_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, self._raw.observation_space.shape, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None  # the make seed determines the first episode
        obs, info = self._raw.reset(seed=seed)
        self._seed = None
        return np.asarray(obs, dtype=np.float32), info

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self._raw.step(np.asarray(action, dtype=np.float64))
        return np.asarray(obs, dtype=np.float32), float(reward), bool(terminated), bool(truncated), info

    def render_frame(self, size: int, view: int = 0) -> np.ndarray:
        """(size, size, 3) uint8 frame of the current state from camera ``cameras[view]``."""
        if not self._renderers:
            self._renderers = [_renderer(self._raw, cam) for cam in self._camera_cfg]
        return self._renderers[view].render(self._raw.data, size)

    def render(self) -> np.ndarray:
        return tile_views(self, self.video_size)

    def close(self) -> None:
        for renderer in self._renderers:
            renderer.close()
        self._raw.close()


def task_names() -> list[str]:
    """Every ``gym/<snake_case>`` task (the suite's task list for ``list_envs``)."""
    return sorted(GYM_IDS)


def build(spec: Any, seed: int) -> tuple[gym.Env, dict[str, Any]]:
    """The base env of an ``EnvSpec`` (registered in ``robotrl.envs.SUITES``) and its version info."""
    env = GymMujocoEnv(spec.task, seed, spec.camera, spec.max_episode_steps, spec.video_size)
    return env, {"gym_id": GYM_IDS[spec.task], "gymnasium_version": gym.__version__}
