"""Headless OpenGL set-up and a small MuJoCo frame renderer shared by the Meta-World and gym suites.

Why this module exists: MuJoCo and dm_control pick their GL backend from ``MUJOCO_GL`` *when they are
imported*, and an unusable backend otherwise surfaces as an opaque ``RuntimeError``/``ImportError`` deep
inside a wrapper.  :func:`ensure_gl` sets the default (EGL, the only backend that works headless on the
project machines) before anything imports mujoco, creates one tiny context, and turns any failure into a
one-line :class:`~robotrl.errors.RenderError` that names the backend and the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np

from robotrl.errors import ConfigError, RenderError

DEFAULT_BACKEND = "egl"
_FIX = (
    "install libegl1 + libgl1-mesa-dri, or set MUJOCO_GL=osmesa (apt install libosmesa6) "
    "or MUJOCO_GL=glfw with a display"
)
_checked: set[str] = set()


def render_error(backend: str, cause: BaseException | str) -> RenderError:
    """Build the one-line RenderError for ``backend`` (newlines in ``cause`` are collapsed)."""
    detail = " ".join(str(cause).split())[:200]
    return RenderError(f"MUJOCO_GL={backend} failed ({detail}): {_FIX}")


def ensure_gl() -> str:
    """Default ``MUJOCO_GL`` to egl and check once per process that a GL context can be created.

    Must run before ``mujoco``/``dm_control`` are first imported, because both read ``MUJOCO_GL`` at import.
    Returns the backend name; raises RenderError (one line) if the context cannot be made.
    """
    os.environ.setdefault("MUJOCO_GL", DEFAULT_BACKEND)
    backend = os.environ["MUJOCO_GL"]
    if backend in _checked:
        return backend
    preload_triton()  # before this process's first GL context (see preload_triton)
    try:
        import mujoco

        if mujoco.GLContext is None:
            raise RuntimeError("mujoco has no GL context class for this backend")
        ctx = mujoco.GLContext(8, 8)
        ctx.make_current()
        ctx.free()
    except Exception as exc:  # any failure here is a GL set-up failure: report it as one line
        raise render_error(backend, f"{type(exc).__name__}: {exc}") from exc
    _checked.add(backend)
    return backend


def preload_triton() -> None:
    """Import triton (torch's compiler backend) before any GL driver is loaded.

    triton bundles its own LLVM; Mesa's llvmpipe (software EGL/OSMesa) links the system LLVM. Importing triton
    *after* a Mesa GL context exists segfaults the process (seen here with torch 2.14 + Mesa 22.3: torch.optim
    imports torch._dynamo, which imports triton). Loading triton first makes both coexist.
    """
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def probe_backend(backend: str, timeout: float = 60.0) -> str | None:
    """Try ``backend`` in a fresh interpreter; return None if it works, else the RenderError message.

    A subprocess is needed because the backend is fixed at mujoco's import in this process.
    """
    code = "from robotrl.envs.rendering import ensure_gl; ensure_gl()"
    env = {**os.environ, "MUJOCO_GL": backend}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if "RenderError" in ln]
    return lines[-1] if lines else proc.stderr.strip().splitlines()[-1]


def free_camera(model: Any, data: Any, config: dict[str, Any] | None) -> Any:
    """A free ``MjvCamera`` set up like gymnasium's MuJoCo renderer (median geom lookat, then ``config``)."""
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.fixedcamid = -1
    for i in range(3):
        cam.lookat[i] = np.median(data.geom_xpos[:, i])
    cam.distance = model.stat.extent
    for key, value in (config or {}).items():
        if isinstance(value, np.ndarray):
            getattr(cam, key)[:] = value
        else:
            setattr(cam, key, value)
    return cam


def camera_tuple(camera: Any, default: Any) -> tuple[Any, ...]:
    """``env.camera`` as the tuple of views a base env renders: one camera (name/id), a list of them, or None
    (``default``)."""
    if camera is None:
        return (default,)
    if isinstance(camera, (list, tuple)):
        if not camera:
            raise ValueError("env.camera is an empty list, expected at least one camera")
        return tuple(default if cam is None else cam for cam in camera)
    return (camera,)


def check_cameras(model: Any, cameras: tuple[Any, ...], env_name: str, allow_free: bool = False) -> None:
    """Raise a one-line ConfigError unless every camera name/id in ``cameras`` exists in the MuJoCo ``model``.

    Called when an env is built, so a typo fails at once instead of at the first rendered frame (where MuJoCo
    raises deep inside a renderer, after the run has started). ``None`` (the suite's default) is always valid;
    ``allow_free`` also accepts id -1 (dm_control's free camera).
    """
    import mujoco

    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) or str(i) for i in range(model.ncam)]
    for cam in cameras:
        if cam is None:
            continue
        if isinstance(cam, str) and not cam.lstrip("-").isdigit():
            valid = cam in names
        else:
            valid = (-1 if allow_free else 0) <= int(cam) < model.ncam
        if not valid:
            ids = f"ids {'-1..' if allow_free else '0..'}{model.ncam - 1}"
            raise ConfigError(f"env.camera={cam!r} is not a camera of {env_name}; expected one of "
                              f"{', '.join(names) or 'none'} (or {ids})")


def tile_views(env: Any, size: int) -> np.ndarray:
    """A video frame of every camera view of a base env side by side: (size, size * views, 3)."""
    views = [env.render_frame(size, view) for view in range(len(env.cameras))]
    return views[0] if len(views) == 1 else np.concatenate(views, axis=1)


def make_fast(model: Any) -> None:
    """Turn off offscreen multisampling (must happen before any GL context is made for ``model``)."""
    model.vis.quality.offsamples = 0


class FrameRenderer:
    """Renders square RGB frames of one camera at several sizes (one ``mujoco.Renderer`` per size).

    ``camera`` is a camera name, a camera id, or an ``MjvCamera``.  ``fast`` turns shadows and
    reflections off (about 16x faster for Meta-World scenes, see machine-facts.md); call :func:`make_fast`
    on the model as well to drop multisampling.  ``rotate180`` fixes cameras mounted upside down.
    ``track_body`` points a free ``MjvCamera`` at that body's subtree centre of mass before every frame;
    MuJoCo's own ``mjCAMERA_TRACKING`` low-pass filters the look-at point, so its frames depend on render
    history and a seeded reset would not reproduce the same pixels.
    """

    def __init__(
        self,
        model: Any,
        camera: Any,
        fast: bool = False,
        rotate180: bool = False,
        track_body: int | None = None,
    ) -> None:
        self.model = model
        self.camera = camera
        self.track_body = track_body
        self.fast = fast
        self.rotate180 = rotate180
        self._renderers: dict[int, Any] = {}

    def _renderer(self, size: int) -> Any:
        import mujoco

        if size not in self._renderers:
            glob = self.model.vis.global_
            glob.offwidth, glob.offheight = max(glob.offwidth, size), max(glob.offheight, size)
            try:
                renderer = mujoco.Renderer(self.model, height=size, width=size)
            except Exception as exc:
                raise render_error(os.environ.get("MUJOCO_GL", ""), exc) from exc
            if self.fast:
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[size] = renderer
        return self._renderers[size]

    def render(self, data: Any, size: int) -> np.ndarray:
        """Return an (size, size, 3) uint8 frame of ``data`` from the camera."""
        renderer = self._renderer(size)
        if self.track_body is not None:
            self.camera.lookat[:] = data.subtree_com[self.track_body]
        renderer.update_scene(data, camera=self.camera)
        img = renderer.render()
        if self.rotate180:
            img = np.rot90(img, 2)
        return np.ascontiguousarray(img)

    def close(self) -> None:
        """Free every GL context (avoids EGL errors printed at interpreter exit)."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
