"""dm-control suite as a gymnasium base env (native action bounds, flattened float32 state).

Seeding: ``reset(seed=s)`` re-seeds the task's ``RandomState`` (the only source of randomness in the suite's
``initialize_episode``), so the initial state is a function of the seed; ``reset()`` continues that stream.
Episode ends: dm_control's ``discount == 0`` at the last step is a real termination, otherwise the last step is
a time limit (``truncated``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np
from robotrl.envs.rendering import camera_tuple, check_cameras, tile_views

DEFAULT_VIDEO_SIZE = 128


def _numpy2_compat() -> None:
    """dm_control 1.0.28's quadruped calls ``np.in1d``, removed in numpy 2.4; alias it to ``np.isin``.

    Without this every ``dmc/quadruped_*`` task fails at construction.  Adding a missing alias cannot change
    the behaviour of code that already works, so the global patch is safe.
    """
    if not hasattr(np, "in1d"):
        np.in1d = np.isin


@cache
def task_table() -> dict[str, tuple[str, str]]:
    """Map ``<domain>_<task>`` -> (domain, task) for every task in ``dm_control.suite.ALL_TASKS``."""
    from dm_control import suite

    return {f"{domain}_{task}": (domain, task) for domain, task in suite.ALL_TASKS}


def default_camera(domain: str) -> int:
    """DrQ-v2's camera choice: camera 2 for quadruped (camera 0 is too far away), 0 otherwise."""
    return 2 if domain == "quadruped" else 0


def _flatten(observation: dict[str, Any]) -> np.ndarray:
    parts = [np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class DMCEnv(gym.Env):
    """One dm_control suite task; ``render_frame(size)`` gives pixels, ``render()`` a video frame."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        task: str,
        seed: int,
        camera: int | str | list[int | str] | None = None,
        max_episode_steps: int | None = None,
        video_size: int = DEFAULT_VIDEO_SIZE,
    ) -> None:
        from dm_control import suite

        _numpy2_compat()
        domain, task_name = task_table()[task]
        task_kwargs: dict[str, Any] = {"random": seed}
        if max_episode_steps is not None:  # our TimeLimit ends episodes; the suite's own limit must not
            task_kwargs["time_limit"] = float("inf")
        self._env = suite.load(domain, task_name, task_kwargs=task_kwargs)
        limit = getattr(self._env, "_step_limit", 1000)
        self.default_max_steps = int(limit) if np.isfinite(limit) else 1000
        self.cameras = camera_tuple(camera, default_camera(domain))
        check_cameras(self._env.physics.model.ptr, self.cameras, f"dmc/{task}", allow_free=True)
        self.camera = self.cameras[0]
        self.video_size = video_size
        self.render_mode = "rgb_array"
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), spec.shape, np.float32
        )
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    @property
    def physics(self) -> Any:
        return self._env.physics

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        time_step = self._env.reset()
        return _flatten(time_step.observation), {}

    def step(self, action: np.ndarray):
        time_step = self._env.step(action)
        terminated = bool(time_step.last() and time_step.discount == 0)
        truncated = bool(time_step.last() and not terminated)
        return _flatten(time_step.observation), float(time_step.reward or 0.0), terminated, truncated, {}

    def render_frame(self, size: int, view: int = 0) -> np.ndarray:
        """(size, size, 3) uint8 frame of the current state from camera ``cameras[view]``."""
        return self._env.physics.render(height=size, width=size, camera_id=self.cameras[view])

    def render(self) -> np.ndarray:
        return tile_views(self, self.video_size)

    def close(self) -> None:
        self._env.close()


def task_names() -> list[str]:
    """Every ``<domain>_<task>`` (the suite's task list for ``list_envs``)."""
    return sorted(task_table())


def build(spec: Any, seed: int) -> tuple[gym.Env, dict[str, Any]]:
    """The base env of an ``EnvSpec`` (registered in ``robotrl.envs.SUITES``) and its version info."""
    from importlib.metadata import version

    env = DMCEnv(spec.task, seed, spec.camera, spec.max_episode_steps, spec.video_size)
    return env, {"dm_control_version": version("dm-control")}
