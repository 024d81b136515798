"""KAGI: a keypoint/affordance-guided dense reward (Lee, Xie, Fang, Pertsch, Finn 2024, "Affordance-Guided
Reinforcement Learning via Visual Prompting").

In KAGI a VLM looks at the first image of an episode (with numbered candidate points drawn on it), names the task's
keypoints (where to grasp/touch, where the object should go) and an ordered waypoint path for the gripper; every
frame is then rewarded by how far the gripper has progressed along that path, and a success signal takes over at
the end. The four parts sit behind small interfaces so the simulated and the real-robot set-ups share the reward itself
(plans and their sources are in :mod:`robotrl.rewards.kagi_plan`, locators and the reward here):

* :class:`KeypointPlan` - named keypoints plus a waypoint path whose points are anchored to keypoints (``{at:
  object, offset: [0, 0, 0.05]}``) or absolute, in ``world`` (metres, 3-D) or ``image`` (pixels, 2-D) coordinates.
* keypoint *sources* (``propose(frame, instruction) -> KeypointPlan``): :class:`OfflineKeypointSource` (plans
  annotated in ``configs/reward/kagi/<task>.yaml`` or any yaml/json file; the default, works offline) and
  :class:`VLMKeypointProposer` (builds the visual prompt, calls a pluggable VLM callable, parses its answer).
* keypoint *locators* (where are the keypoints in this frame?): :class:`MetaWorldKeypoints` reads them from the
  simulator (``tcp_center``, ``_get_pos_objects()``, ``_target_pos``) and :func:`project_points` maps them into the
  rendered image; :class:`TemplateTracker` follows them in real frames (pure numpy normalised cross-correlation).
* :class:`KAGIReward` - the reward model (``robotrl.rewards.base`` protocol): path progress minus deviation from the
  path, plus an object-to-goal stage, in [0, 1]; ``predict_success`` when the last waypoint (and the goal) is reached.

The reward is stateless given the keypoints of a frame (waypoints are re-anchored to the keypoints every frame and
the path starts at a fixed ``home`` keypoint), so stored frames can be relabelled from ``info["keypoints"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from robotrl.rewards.base import check_frames
from robotrl.rewards.kagi_plan import (
    LOCATORS,
    SPACES,
    KeypointPlan,
    OfflineKeypointSource,
    VLMCallable,
    VLMKeypointProposer,
    import_callable,
    parse_plan,
)

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


@dataclass
class _Frame:
    """One frame: the gripper and the resolved path in the space the dense reward is measured in, and the
    keypoints in the plan's own coordinates (for the object-to-goal stage and success)."""

    gripper: np.ndarray
    path: np.ndarray
    native: dict[str, np.ndarray]

    @classmethod
    def of(cls, native: dict[str, np.ndarray], plan: KeypointPlan) -> _Frame:
        return cls(native[plan.gripper], plan.waypoints(native), native)


class KAGIReward:
    """KAGI's dense keypoint reward, in [0, 1]:

    ``r = (1 - final_weight) * along + final_weight * stage2``, ``along = (1 + clip((s - deviation_weight * d) / L,
    -1, 1)) / 2``

    with ``s`` the arc length of the gripper's projection on the waypoint path, ``d`` its distance to the path and
    ``L`` the path length (so the shaping is unit-free): 0.5 at the start of the path, 1 at its end, falling to 0 a
    path length or two away from it (so a wandering gripper still gets a gradient back to the path instead of a flat
    0), and ``stage2 = clip(1 - |object - goal| / goal_scale, 0, 1)`` for plans with a ``final_stage``
    (``final_weight`` is 0 without one). ``predict_success``: the gripper is within
    ``reach_radius`` of the last waypoint and the object within ``goal_radius`` of the goal (the paper's sparse
    success signal, from geometry here instead of a learned classifier).

    Keypoints per frame come from ``info[i]["keypoints"]`` (name -> coordinates in the plan's space; works for
    replay relabelling), else from the simulator of the env given to :meth:`bind` (the current state, so B = 1),
    else from a :class:`TemplateTracker` over the frames (``locator="tracker"``, image plans, e.g. VLM-proposed).
    ``space="image"`` projects a world plan's gripper and waypoints into the frame (the paper's 2-D setting).
    """

    predicts_success = True

    def __init__(self, plan: str | Mapping[str, Any] | None = None, source: str = "offline",
                 instruction: str | None = None, vlm: str | VLMCallable | None = None, locator: str = "auto",
                 space: str | None = None, deviation_weight: float = 1.0, final_weight: float = 0.5,
                 grid_step: int = 16, tracker_patch: int = 7, tracker_search: int = 6, batch_size: int = 64):
        if locator not in LOCATORS:
            raise ConfigError(f"reward.locator={locator!r}, expected one of {', '.join(LOCATORS)}")
        if space not in (None, *SPACES) or (source == "vlm" and space == "world"):
            raise ConfigError(f"reward.space={space!r}, expected null (the plan's space), world or image "
                              "(image only with source=vlm: its plans are in pixels)")
        if not 0.0 <= float(final_weight) <= 1.0 or float(deviation_weight) < 0.0:
            raise ConfigError(f"reward final_weight={final_weight!r} (expected in [0, 1]), "
                              f"deviation_weight={deviation_weight!r} (expected >= 0)")
        self.source = self._make_source(source, plan, vlm, grid_step)
        self.plan: KeypointPlan | None = self.source.plan if isinstance(self.source, OfflineKeypointSource) else None
        self.instruction = instruction or (self.plan.instruction if self.plan else None)
        self.locator, self.space = locator, space
        self.deviation_weight, self.final_weight = float(deviation_weight), float(final_weight)
        self.batch_size = int(batch_size)
        self.tracker = TemplateTracker(tracker_patch, tracker_search)
        self.sim: MetaWorldKeypoints | None = None
        # A world plan on an arm's frames is projected into image space at every episode start (image_plan).
        self.world_plan = self.plan if self.plan is not None and self.plan.space == "world" else None
        self.on_arm = False  # bound to a RobotEnv: keypoints come from its camera frames
        self._tracked: tuple[np.ndarray, list[_Frame]] | None = None
        if self.plan is not None:
            self._check_space(self.plan)

    @staticmethod
    def _make_source(source: str, plan: Any, vlm: Any, grid_step: int) -> Any:
        if source == "offline":
            if plan is None:
                raise ConfigError("kagi source=offline needs reward.plan (a packaged task name, a yaml/json path "
                                  "or a mapping)")
            return OfflineKeypointSource(plan)
        if source == "vlm":
            fn = import_callable(vlm) if isinstance(vlm, str) else vlm
            return VLMKeypointProposer(fn, grid_step=grid_step)
        raise ConfigError(f"reward.source={source!r}, expected offline or vlm")

    def _check_space(self, plan: KeypointPlan) -> None:
        space = self.space or plan.space
        if space not in SPACES or (plan.space == "image" and space == "world"):
            raise ConfigError(f"reward.space={self.space!r} for a {plan.space}-space plan, expected "
                              f"{'image' if plan.space == 'image' else 'world or image'}")

    # ----------------------------------------------------------------------------------------- set-up
    def bind(self, env: Any) -> KAGIReward:
        """Read keypoints from ``env``'s simulator at every call (``RewardWrapper`` calls the model right after
        ``env.step``, so the simulator state is the one the frame shows).

        On an arm (``RobotEnv``, which has a ``scene``: the simulator of a simulated arm, None on a real one) the
        default locator is the template tracker on its camera frames; a world plan is then projected into the first
        frame of each episode from ``robot=sim``'s simulator (:func:`image_plan`), and a real arm needs an
        image-space plan (a file annotated on its camera, or ``source=vlm``).
        """
        base = env.unwrapped
        if not hasattr(base, "scene"):
            self.sim = MetaWorldKeypoints(env)
            return self
        self.on_arm = True
        self.sim = None if base.scene is None else MetaWorldKeypoints(base.scene)
        if self.sim is None and (self._mode() == "sim" or (self._mode() == "tracker" and self.world_plan)):
            name = getattr(base, "robotrl_info", {}).get("robot", "?")
            raise ConfigError(f"kagi on robot {name!r}: no simulator gives keypoints; use an image-space plan "
                              f"annotated on its camera (reward.plan=FILE, reward.locator=tracker) or "
                              f"reward.source=vlm")
        return self

    def reset(self, frame: np.ndarray | None = None) -> None:
        """Start a new episode: a VLM source proposes a new plan from ``frame``; the tracker restarts on it."""
        if isinstance(self.source, VLMKeypointProposer):
            self.plan = None
        elif self.world_plan is not None:
            self.plan = self.world_plan  # projected again on this episode's first frame (image_plan)
        if frame is not None:
            frames = frame[None] if frame.ndim == 3 else frame
            check_frames(frames)
            self._start(frames)
        else:
            self.tracker.points = {}
        self._tracked = None

    def _start(self, frames: np.ndarray) -> None:
        first = frames[0].cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames[0])
        if self.plan is None:
            if not self.instruction:
                raise ConfigError("kagi source=vlm needs reward.instruction (the task in words)")
            self.plan = self.source.propose(first, self.instruction)
            self._check_space(self.plan)
        if self._mode() == "tracker":
            h, w = first.shape[:2]
            if self.plan.space == "world" and self.sim is not None:
                # (a frame of several views is side by side: the plan is on the first, square one)
                raw = {**image_plan(self.plan, self.sim, h, h), "image_size": [w, h]}
                self.plan = parse_plan(raw, f"{self.plan.name} (first frame)")
            if self.plan.image_size is not None and self.plan.image_size != (w, h):
                raise ConfigError(f"kagi plan {self.plan.name!r} is annotated on {self.plan.image_size[0]}x"
                                  f"{self.plan.image_size[1]} frames; the reward's frames are {w}x{h} (record or "
                                  f"annotate at the frames' size)")
            if self.plan.space == "world":
                raise ConfigError(f"kagi locator=tracker with the world-space plan {self.plan.name!r} and no "
                                  f"simulator: give an image-space plan annotated on the camera's first frame "
                                  f"(reward.plan=FILE; robotrl.rewards.kagi.image_plan projects one on robot=sim) "
                                  f"or reward.source=vlm")
            fixed = {k: v for k, v in self.plan.keypoints.items() if v is not None and k not in self.plan.static}
            if self.plan.space != "image" or not fixed:
                raise ConfigError("kagi locator=tracker needs an image-space plan with keypoint coordinates")
            self.tracker.init(first, fixed)

    def _mode(self) -> str:
        if self.locator != "auto":
            return self.locator
        if self.on_arm:
            return "tracker"
        return "sim" if self.sim is not None else "info"

    # ------------------------------------------------------------------------------------- keypoints
    def _keypoints(self, frames: np.ndarray, info: Sequence[dict[str, Any]] | None,
                   h: int, w: int) -> list[_Frame]:
        plan = self.plan
        assert plan is not None
        has = [] if info is None else ["keypoints" in i for i in info]
        if has and all(has):
            return [self._from_info(i["keypoints"], plan) for i in info]  # type: ignore[union-attr]
        if any(has):
            raise ObservationError(f"info['keypoints'] is in {sum(has)} of {len(has)} entries, expected all or none")
        mode = self._mode()
        if mode == "sim" and self.sim is not None:
            if len(frames) != 1:
                raise ObservationError(f"kagi reward got {len(frames)} frames without info['keypoints']: simulator "
                                       "keypoints describe only the current state (B=1); store keypoints to relabel")
            return [self._from_sim(plan, h, w)]
        if mode == "tracker":
            if not self.tracker.points:
                self._start(frames)
            return [self._from_tracker(f, plan) for f in frames]
        raise ConfigError("kagi reward has no keypoints: call reward.bind(env) (simulator), give info['keypoints'], "
                          "or use locator=tracker with an image-space plan")

    def _from_info(self, raw: Mapping[str, Any], plan: KeypointPlan) -> _Frame:
        missing = sorted(plan.required() - set(raw))
        if missing:
            raise ObservationError(f"info['keypoints'] lacks {missing}, expected names {sorted(plan.required())}")
        try:
            pts = {k: np.asarray(v, np.float64).reshape(plan.dim) for k, v in raw.items() if k in plan.required()}
        except ValueError as e:
            raise ObservationError(f"info['keypoints'] has coordinates that are not {plan.dim}-D "
                                   f"({plan.space} space): {dict(raw)!r}"[:300]) from e
        return _Frame.of(pts, plan)

    def _from_sim(self, plan: KeypointPlan, h: int, w: int) -> _Frame:
        """World plans: measured in 3-D, or with ``space=image`` the gripper and the path resolved in 3-D are
        projected into the frame. Image plans (e.g. VLM-proposed): the simulator's keypoints are projected."""
        assert self.sim is not None
        world = self.sim.world()
        missing = sorted(plan.required() - set(world))
        if missing:
            raise ConfigError(f"kagi plan {plan.name!r} uses keypoints {missing} the simulator does not provide "
                              f"(it has {sorted(world)})")
        if plan.space == "image":
            names = sorted(world)
            pixels = self.sim.to_image(np.stack([world[k] for k in names]), w, h)
            return _Frame.of(dict(zip(names, pixels, strict=True)), plan)
        if (self.space or plan.space) == "world":
            return _Frame.of(world, plan)
        gripper = self.sim.to_image(world[plan.gripper][None], w, h)[0]
        return _Frame(gripper, self.sim.to_image(plan.waypoints(world), w, h), world)

    def _from_tracker(self, frame: Any, plan: KeypointPlan) -> _Frame:
        frame = frame.cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
        pts = {k: np.asarray(v, np.float64) for k, v in plan.keypoints.items() if v is not None}
        pts.update(self.tracker.update(frame))
        return _Frame.of(pts, plan)

    # ---------------------------------------------------------------------------------------- reward
    def _dense(self, kp: _Frame, plan: KeypointPlan) -> float:
        s, d, length = polyline_progress(kp.gripper, kp.path)
        if length <= 1e-9:
            raise ObservationError(f"kagi plan {plan.name!r}: the waypoint path has zero length in this frame")
        along = 0.5 + 0.5 * float(np.clip((s - self.deviation_weight * d) / length, -1.0, 1.0))
        if plan.final_stage is None:
            return along
        return (1.0 - self.final_weight) * along + self.final_weight * self._stage2(kp.native, plan)

    @staticmethod
    def _stage2(native: Mapping[str, np.ndarray], plan: KeypointPlan) -> float:
        obj, goal = plan.final_stage  # type: ignore[misc]
        dist = float(np.linalg.norm(native[obj] - native[goal]))
        return float(np.clip(1.0 - dist / plan.goal_scale, 0.0, 1.0))

    def _success(self, kp: _Frame, plan: KeypointPlan) -> bool:
        native = kp.native
        reached = np.linalg.norm(native[plan.gripper] - plan.waypoints(native)[-1]) <= plan.reach_radius
        if plan.final_stage is None:
            return bool(reached)
        obj, goal = plan.final_stage
        return bool(reached and np.linalg.norm(native[obj] - native[goal]) <= plan.goal_radius)

    def _prepare(self, frames: Any, info: Sequence[dict[str, Any]] | None) -> tuple[KeypointPlan, list[_Frame]]:
        _, h, w = check_frames(frames, info)
        if self.plan is None or (self._mode() == "tracker" and not self.tracker.points):
            self._start(frames)
        assert self.plan is not None
        if self._mode() != "tracker":
            return self.plan, self._keypoints(frames, info, h, w)
        # The wrapper asks for the reward and then the success of the same frame: track it only once.
        array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if self._tracked is None or not np.array_equal(self._tracked[0], array):
            self._tracked = (array.copy(), self._keypoints(frames, info, h, w))
        return self.plan, self._tracked[1]

    def __call__(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """uint8 [B, H, W, 3] frames (+ per-frame info) -> float32 [B] rewards in [0, 1]."""
        plan, kps = self._prepare(frames, info)
        return np.array([self._dense(kp, plan) for kp in kps], np.float32)

    def predict_success(self, frames: np.ndarray | torch.Tensor,
                        info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """bool [B]: the last waypoint reached within ``reach_radius`` (and the object within ``goal_radius``).

        With a tracker, the frames just rewarded are not tracked a second time (their keypoints are reused).
        """
        plan, kps = self._prepare(frames, info)
        return np.array([self._success(kp, plan) for kp in kps], bool)
