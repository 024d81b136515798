"""KAGI's keypoint locators (where are the keypoints in this frame?) and path geometry, used by
:class:`robotrl.rewards.kagi.KAGIReward`: :class:`MetaWorldKeypoints` reads them from the simulator and
:func:`project_points` maps them into the rendered image; :class:`TemplateTracker` follows them in real frames (pure
numpy normalised cross-correlation); :func:`polyline_progress` measures a point's progress along a waypoint path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from robotrl.rewards.kagi_plan import KeypointPlan

from robotrl.errors import ConfigError, ObservationError


# -------------------------------------------------------------------------------------------------- locators
def camera_pose(model: Any, data: Any, camera: str | int) -> tuple[np.ndarray, np.ndarray, float]:
    """(position [3], rotation [3, 3] camera->world, vertical fov in degrees) of a MuJoCo camera in ``data``."""
    import mujoco

    cam_id = camera if isinstance(camera, int) else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if not 0 <= cam_id < model.ncam:
        raise ConfigError(f"camera {camera!r} is not in the model (it has {model.ncam} cameras)")
    if model.cam_sensorsize[cam_id].any():
        raise ConfigError(f"camera {camera!r} uses sensor intrinsics; only fovy cameras are supported")
    return (np.array(data.cam_xpos[cam_id]), np.array(data.cam_xmat[cam_id]).reshape(3, 3),
            float(model.cam_fovy[cam_id]))


def project_points(model: Any, data: Any, camera: str | int, width: int, height: int,
                   points: np.ndarray) -> np.ndarray:
    """World points [N, 3] -> image coordinates [N, 2] (x right, y down, in pixels; pixel (r, c) spans
    [c, c+1] x [r, r+1]) in a ``width`` x ``height`` render of ``camera``, as ``mujoco.Renderer`` draws it.

    MuJoCo cameras look along their -z axis with +y up; the vertical field of view is ``fovy`` and pixels are
    square, so the focal length is ``height / 2 / tan(fovy / 2)`` for both axes. Points behind the camera raise.
    """
    pos, rot, fovy = camera_pose(model, data, camera)
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    local = (pts - pos) @ rot  # world -> camera frame (rot's columns are the camera axes)
    depth = -local[:, 2]
    if (depth <= 1e-9).any():
        bad = pts[int(np.argmax(depth <= 1e-9))]
        raise ObservationError(f"point {bad.tolist()} is behind camera {camera!r}; it cannot be projected")
    focal = 0.5 * height / math.tan(math.radians(fovy) / 2)
    x = width / 2 + focal * local[:, 0] / depth
    y = height / 2 - focal * local[:, 1] / depth
    return np.stack([x, y], axis=1)


class MetaWorldKeypoints:
    """Keypoints of a Meta-World task read from the simulator: ``gripper`` (the TCP between the fingers),
    ``home`` (the hand's reset position, where every path starts), ``object`` and ``goal``.

    ``to_image(points, width, height)`` projects points into the reward's rendered frames (the env's fixed camera,
    with the 180-degree flip robotrl applies to upside-down cameras), so image-space plans match the pixels.
    """

    def __init__(self, env: Any):
        base = env.unwrapped
        raw = getattr(base, "raw", None)
        if raw is None or not hasattr(raw, "tcp_center"):
            raise ConfigError(f"KAGIReward.bind: {type(base).__name__} is not a Meta-World env (no .raw.tcp_center); "
                              "simulator keypoints are implemented for Meta-World only")
        self.raw, self.camera = raw, base.camera
        self.rotate180 = bool(base.rotated_views[0])  # the env's first view is the one the reward is shown

    def world(self) -> dict[str, np.ndarray]:
        raw = self.raw
        return {"gripper": np.array(raw.tcp_center, np.float64), "home": np.array(raw.hand_init_pos, np.float64),
                "object": np.array(raw._get_pos_objects()[:3], np.float64),
                "goal": np.array(raw._target_pos, np.float64)}

    def to_image(self, points: np.ndarray, width: int, height: int) -> np.ndarray:
        uv = project_points(self.raw.model, self.raw.data, self.camera, width, height, points)
        if self.rotate180:
            uv = np.array([width, height], np.float64) - uv
        return uv

    def pixels_per_metre(self, point: np.ndarray, height: int) -> float:
        """Image pixels per metre of world distance across the view at ``point`` (focal length / depth)."""
        pos, rot, fovy = camera_pose(self.raw.model, self.raw.data, self.camera)
        depth = -float(((np.asarray(point, np.float64) - pos) @ rot)[2])
        return 0.5 * height / math.tan(math.radians(fovy) / 2) / depth


def image_plan(plan: KeypointPlan, locator: MetaWorldKeypoints, width: int, height: int) -> dict[str, Any]:
    """A world-space plan as an image-space plan (a mapping for :func:`parse_plan`, or a yaml file) on a ``width`` x
    ``height`` frame of ``locator``'s camera, for the scene as it is now.

    This is what a person (or KAGI's VLM) marks on an episode's first frame; a simulated arm (``robot=sim``) can
    project it from its simulator instead. Keypoints and absolute waypoints are projected; an anchored waypoint's world
    offset becomes the pixel offset it has in this frame; ``reach_radius``, ``goal_radius`` and the goal scale become
    pixels at the points they apply to. Every keypoint but the gripper and the final stage's object is ``static``
    (the tracker follows only what moves).
    """
    if plan.space != "world":
        raise ConfigError(f"kagi plan {plan.name!r} is already in {plan.space} space; only world plans are projected")
    world = locator.world()
    missing = sorted(plan.required() - set(world))
    if missing:
        raise ConfigError(f"kagi plan {plan.name!r} uses keypoints {missing} the simulator does not provide "
                          f"(it has {sorted(world)})")

    def px(point: np.ndarray) -> np.ndarray:
        return locator.to_image(np.asarray(point, np.float64)[None], width, height)[0]

    points = {k: px(world[k]) for k in sorted(plan.required())}
    path: list[dict[str, Any]] = []
    for w in plan.path:
        target = px(w.resolve(world))
        path.append({"at": _rounded(target)} if w.anchor is None else
                    {"at": w.anchor, "offset": _rounded(target - points[w.anchor])})
    end = plan.waypoints(world)[-1]
    raw: dict[str, Any] = {
        "task": plan.name, "instruction": plan.instruction, "space": "image", "gripper": plan.gripper,
        "keypoints": {k: _rounded(v) for k, v in points.items()}, "path": path, "image_size": [width, height],
        "reach_radius": round(plan.reach_radius * locator.pixels_per_metre(end, height), 3)}
    moving = {plan.gripper}
    if plan.final_stage is not None:
        obj, goal = plan.final_stage
        scale = locator.pixels_per_metre(world[goal], height)
        moving.add(obj)
        raw["final_stage"] = {"object": obj, "goal": goal, "scale": round(plan.goal_scale * scale, 3)}
        raw["goal_radius"] = round(plan.goal_radius * scale, 3)
    raw["static"] = sorted(set(points) - moving)
    return raw


def _rounded(v: np.ndarray) -> list[float]:
    return [round(float(x), 3) for x in v]


class TemplateTracker:
    """Follows image keypoints from frame to frame by normalised cross-correlation of a small template patch.

    Pure numpy (OpenCV is not installed here). Each point keeps the patch around it from the first frame and is
    searched for within ``search`` pixels of its last position, which is enough for the few-pixel motions between
    control steps; the score peak is refined to sub-pixel precision with a parabola. Points are clamped to the
    image.
    """

    def __init__(self, patch: int = 7, search: int = 6):
        if patch < 1 or search < 1:
            raise ConfigError(f"TemplateTracker patch={patch!r}, search={search!r}: expected positive ints")
        self.half, self.search = int(patch), int(search)
        self.points: dict[str, np.ndarray] = {}
        self.templates: dict[str, np.ndarray] = {}
        self.subpixel: dict[str, np.ndarray] = {}
        self.anchor: dict[str, np.ndarray] = {}
        self.shape: tuple[int, int] = (0, 0)

    @staticmethod
    def _gray(frame: np.ndarray) -> np.ndarray:
        return np.asarray(frame, np.float64).mean(axis=-1)

    def _patch(self, img: np.ndarray, cx: int, cy: int, half: int) -> np.ndarray:
        padded = np.pad(img, half + self.search, mode="edge")
        o = half + self.search
        return padded[cy + o - half: cy + o + half + 1, cx + o - half: cx + o + half + 1]

    def init(self, frame: np.ndarray, points: Mapping[str, Sequence[float]]) -> None:
        """Start tracking ``points`` (name -> (x, y) pixels) in ``frame`` uint8 [H, W, 3]."""
        img = self._gray(frame)
        h, w = img.shape
        self.shape = (h, w)
        self.points, self.templates, self.subpixel, self.anchor = {}, {}, {}, {}
        for name, (x, y) in points.items():
            cx, cy = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
            self.points[name] = np.array([cx, cy])
            self.templates[name] = self._patch(img, cx, cy, self.half)
            self.anchor[name] = np.array([x - cx - 0.5, y - cy - 0.5])  # the point within the template's centre pixel

    def update(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """The tracked points in the next frame, name -> (x, y) pixel centres (float64)."""
        if not self.points:
            raise ObservationError("TemplateTracker.update before init(frame, points)")
        from numpy.lib.stride_tricks import sliding_window_view

        img = self._gray(frame)
        h, w = img.shape
        if (h, w) != self.shape:
            raise ObservationError(f"tracker frame is {h}x{w}, expected {self.shape[0]}x{self.shape[1]} as at init")
        size = 2 * self.half + 1
        for name, (cx, cy) in self.points.items():
            region = self._patch(img, cx, cy, self.half + self.search)
            windows = sliding_window_view(region, (size, size))  # [2s+1, 2s+1, size, size]
            score = _ncc(windows, self.templates[name])
            dy, dx = np.unravel_index(int(np.argmax(score)), score.shape)
            new = np.array([cx + dx - self.search, cy + dy - self.search])
            self.points[name] = np.clip(new, 0, [w - 1, h - 1])
            self.subpixel[name] = np.array([_peak_offset(score[dy, :], dx), _peak_offset(score[:, dx], dy)])
        return {name: p + 0.5 + self.subpixel[name] + self.anchor[name] for name, p in self.points.items()}


def _peak_offset(scores: np.ndarray, i: int) -> float:
    """Sub-pixel offset of a 1-D score peak at ``i`` from the parabola through its neighbours (0 at the border)."""
    if i == 0 or i == len(scores) - 1:
        return 0.0
    left, mid, right = scores[i - 1], scores[i], scores[i + 1]
    curvature = left - 2 * mid + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def _ncc(windows: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of every window [..., h, w] with the template [h, w]."""
    t = template - template.mean()
    wc = windows - windows.mean(axis=(-2, -1), keepdims=True)
    num = (wc * t).sum(axis=(-2, -1))
    den = np.sqrt((wc ** 2).sum(axis=(-2, -1)) * (t ** 2).sum()) + 1e-9
    return num / den


# ---------------------------------------------------------------------------------------------------- reward
def polyline_progress(point: np.ndarray, waypoints: np.ndarray) -> tuple[float, float, float]:
    """(arc length to the point's projection on the path, distance to the path, total path length).

    The nearest segment wins (the later one on ties), so a gripper that has passed a waypoint is credited for the
    next segment; the projection is clamped to each segment's ends.
    """
    a, b = waypoints[:-1], waypoints[1:]
    seg = b - a
    lengths = np.linalg.norm(seg, axis=1)
    t = np.clip(((point - a) * seg).sum(axis=1) / np.maximum(lengths ** 2, 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(a + t[:, None] * seg - point, axis=1)
    k = len(dist) - 1 - int(np.argmin(dist[::-1]))
    return float(lengths[:k].sum() + t[k] * lengths[k]), float(dist[k]), float(lengths.sum())
