"""KAGI: a keypoint/affordance-guided dense reward (Lee, Xie, Fang, Pertsch, Finn 2024, "Affordance-Guided
Reinforcement Learning via Visual Prompting").

In KAGI a VLM looks at the first image of an episode (with numbered candidate points drawn on it), names the task's
keypoints (where to grasp/touch, where the object should go) and an ordered waypoint path for the gripper; every
frame is then rewarded by how far the gripper has progressed along that path, and a success signal takes over at
the end. This module holds the four parts, each behind a small interface so the simulated and the real-robot set-ups
share the reward itself:

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

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from robotrl.rewards.base import check_frames

from robotrl.errors import ConfigError, ObservationError, RobotRLError

SPACES = ("world", "image")
DIMS = {"world": 3, "image": 2}
LOCATORS = ("auto", "info", "sim", "tracker")
PLAN_DIR = ("reward", "kagi")  # packaged plans: robotrl.configs/reward/kagi/<name>.yaml (reward configs with `plan`)
PLAN_KEYS = frozenset({"task", "instruction", "space", "keypoints", "gripper", "path", "final_stage", "reach_radius",
                       "goal_radius"})
VLMCallable = Callable[[np.ndarray, str], str]


class KeypointProposalError(RobotRLError, ValueError):
    """A VLM's answer could not be turned into a keypoint plan (malformed JSON, unknown candidate number...)."""


# ------------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Waypoint:
    """One path point: ``anchor`` keypoint position (or the origin when None) plus ``offset``."""

    anchor: str | None
    offset: tuple[float, ...]

    def resolve(self, keypoints: Mapping[str, np.ndarray]) -> np.ndarray:
        base = np.zeros(len(self.offset)) if self.anchor is None else np.asarray(keypoints[self.anchor], np.float64)
        return base + np.asarray(self.offset, np.float64)


@dataclass(frozen=True)
class KeypointPlan:
    """Named keypoints and the gripper's waypoint path, in ``space`` coordinates (world metres or image pixels).

    ``keypoints`` maps each name to fixed coordinates (e.g. proposed on an image, used to start a tracker) or None
    (located at run time, e.g. from the simulator). ``final_stage`` = (object, goal) keypoint names: after the path,
    the object should reach the goal; ``goal_scale`` is the object-goal distance that counts as no progress.
    """

    name: str
    instruction: str
    space: str
    keypoints: dict[str, tuple[float, ...] | None]
    path: tuple[Waypoint, ...]
    gripper: str = "gripper"
    final_stage: tuple[str, str] | None = None
    goal_scale: float = 1.0
    reach_radius: float = 0.03
    goal_radius: float = 0.05

    @property
    def dim(self) -> int:
        return DIMS[self.space]

    def waypoints(self, keypoints: Mapping[str, np.ndarray]) -> np.ndarray:
        """The path resolved against this frame's keypoints, float64 [N, dim]."""
        return np.stack([w.resolve(keypoints) for w in self.path])

    def required(self) -> set[str]:
        """Keypoint names a locator must provide for this plan."""
        names = {self.gripper} | {w.anchor for w in self.path if w.anchor is not None}
        return names | set(self.final_stage or ())


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"kagi plan {where}: {msg}")


def _coords(value: Any, dim: int, where: str, what: str) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != dim:
        raise _fail(where, f"{what}={value!r}, expected a list of {dim} numbers")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise _fail(where, f"{what}={value!r}, expected a list of {dim} numbers") from e
    if not all(math.isfinite(v) for v in out):
        raise _fail(where, f"{what}={value!r}, expected finite numbers")
    return out


def _positive(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _fail(where, f"{key}={value!r}, expected a positive number")
    return float(value)


def _parse_keypoints(raw: Any, dim: int, where: str) -> dict[str, tuple[float, ...] | None]:
    given = raw
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        raw = dict.fromkeys(raw)
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(where, f"keypoints={given!r}, expected a non-empty list of names or a mapping name -> coordinates")
    return {str(k): None if v is None else _coords(v, dim, where, f"keypoints.{k}") for k, v in raw.items()}


def _parse_waypoint(raw: Any, i: int, names: Mapping[str, Any], dim: int, where: str) -> Waypoint:
    if not isinstance(raw, Mapping) or "at" not in raw:
        raise _fail(where, f"path[{i}]={raw!r}, expected a mapping with 'at' (a keypoint name or coordinates)")
    at, offset = raw["at"], raw.get("offset")
    if isinstance(at, str):
        if at not in names:
            raise _fail(where, f"path[{i}].at={at!r} is not a keypoint (known: {', '.join(names)})")
        off = (0.0,) * dim if offset is None else _coords(offset, dim, where, f"path[{i}].offset")
        return Waypoint(at, off)
    if offset is not None:
        raise _fail(where, f"path[{i}] has absolute 'at' and an offset {offset!r}; give one or the other")
    return Waypoint(None, _coords(at, dim, where, f"path[{i}].at"))


def _parse_final_stage(raw: Any, names: Mapping[str, Any], where: str) -> tuple[tuple[str, str] | None, float]:
    if raw is None:
        return None, 1.0
    if not isinstance(raw, Mapping) or not {"object", "goal"} <= set(raw):
        raise _fail(where, f"final_stage={raw!r}, expected a mapping with 'object', 'goal' (and 'scale')")
    for key in ("object", "goal"):
        if raw[key] not in names:
            raise _fail(where, f"final_stage.{key}={raw[key]!r} is not a keypoint (known: {', '.join(names)})")
    return (str(raw["object"]), str(raw["goal"])), _positive(raw, "scale", 1.0, where)


def parse_plan(raw: Any, where: str = "<inline>") -> KeypointPlan:
    """Validate a plan mapping (a yaml/json file's content) into a :class:`KeypointPlan`.

    Every error is one ConfigError line naming the file, the bad key and value, and what was expected, so a typo in
    a hand-annotated plan fails at start-up instead of giving a silently wrong reward.
    """
    if not isinstance(raw, Mapping):
        raise _fail(where, f"expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - PLAN_KEYS)
    if unknown:
        raise _fail(where, f"unknown keys {unknown}, expected some of {sorted(PLAN_KEYS)}")
    space = raw.get("space", "world")
    if space not in SPACES:
        raise _fail(where, f"space={space!r}, expected one of {', '.join(SPACES)}")
    dim = DIMS[space]
    names = _parse_keypoints(raw.get("keypoints"), dim, where)
    gripper = str(raw.get("gripper", "gripper"))
    if gripper not in names:
        raise _fail(where, f"gripper={gripper!r} is not a keypoint (known: {', '.join(names)})")
    path_raw = raw.get("path")
    if not isinstance(path_raw, Sequence) or isinstance(path_raw, str) or len(path_raw) < 2:
        n = len(path_raw) if isinstance(path_raw, Sequence) and not isinstance(path_raw, str) else path_raw
        raise _fail(where, f"path has {n!r} waypoints (empty or too short), expected a list of at least 2")
    path = tuple(_parse_waypoint(p, i, names, dim, where) for i, p in enumerate(path_raw))
    if all(w.anchor is None for w in path) and all(w.offset == path[0].offset for w in path):
        raise _fail(where, f"path has zero length (every waypoint at {list(path[0].offset)}), expected distinct points")
    final, scale = _parse_final_stage(raw.get("final_stage"), names, where)
    return KeypointPlan(
        name=str(raw.get("task", where)), instruction=str(raw.get("instruction", "")), space=space,
        keypoints=names, path=path, gripper=gripper, final_stage=final, goal_scale=scale,
        reach_radius=_positive(raw, "reach_radius", 0.03 if space == "world" else 3.0, where),
        goal_radius=_positive(raw, "goal_radius", 0.05 if space == "world" else 5.0, where),
    )


def plan_path(name: str) -> Path:
    """A plan file: ``name`` as a path if it names a file, else the packaged ``configs/reward/kagi/<name>.yaml``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    from importlib.resources import files

    packaged = Path(str(files("robotrl.configs").joinpath(*PLAN_DIR, f"{name}.yaml")))
    if packaged.is_file():
        return packaged
    known = sorted(p.stem for p in packaged.parent.glob("*.yaml"))
    raise ConfigError(f"kagi plan {name!r} is neither a yaml/json file nor a packaged plan (known: {', '.join(known)})")


def load_plan(source: str | Path | Mapping[str, Any]) -> KeypointPlan:
    """A plan from a mapping, a yaml/json file (a bare plan or a reward config with a ``plan`` key), or the name of
    a packaged plan (a Meta-World task)."""
    if isinstance(source, Mapping):
        return parse_plan(source)
    path = plan_path(str(source))
    text = path.read_text()
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: report the file in one line
        raise _fail(str(path), f"unreadable ({' '.join(str(e).split())[:200]})") from e
    if isinstance(raw, Mapping) and isinstance(raw.get("plan"), Mapping):
        raw = raw["plan"]  # a reward config (configs/reward/kagi/<task>.yaml) holding the plan
    return parse_plan(raw, str(path))


# --------------------------------------------------------------------------------------------------- sources
class OfflineKeypointSource:
    """The default source: a plan annotated by hand (a packaged task plan, a yaml/json file or a mapping).

    ``propose`` ignores the frame: the annotation already fixes which keypoints and waypoints the task uses, and the
    locator finds them in each frame.
    """

    def __init__(self, plan: str | Path | Mapping[str, Any]):
        self.plan = load_plan(plan)

    def propose(self, frame: np.ndarray | None = None, instruction: str | None = None) -> KeypointPlan:
        return self.plan


def grid_candidates(width: int, height: int, step: int) -> np.ndarray:
    """Candidate points on a regular grid (pixel centres), float64 [N, 2] as (x, y), numbered row by row."""
    if step < 1:
        raise ConfigError(f"candidate grid step={step!r}, expected a positive number of pixels")
    xs = np.arange(step / 2, width, step)
    ys = np.arange(step / 2, height, step)
    return np.array([(x, y) for y in ys for x in xs], np.float64)


def draw_candidates(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The frame with each candidate point marked and numbered (1-based), as the VLM sees it."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img)
    for i, (x, y) in enumerate(points, start=1):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), outline=(255, 0, 0), fill=(255, 255, 255))
        draw.text((x + 3, y - 5), str(i), fill=(255, 255, 0))
    return np.asarray(img, np.uint8)


_PROMPT = """You are guiding a robot arm. Task: {instruction}
The image shows {n} numbered candidate points (1 to {n}).
Pick the candidate nearest to each keypoint: {names}.
Then give the path the gripper should follow to do the task, as an ordered list of candidate numbers
(from the gripper towards the final position, at least one point).
Answer with one JSON object only, for example:
{example}"""


class VLMKeypointProposer:
    """KAGI's visual prompt: numbered candidate points on the image, a VLM names keypoints and a waypoint path.

    ``vlm`` is any callable ``(image uint8 [H, W, 3], prompt str) -> answer str`` (an API client, a local model);
    none ships with robotrl because no VLM weights or API can be reached offline. The answer is parsed into an
    image-space :class:`KeypointPlan` whose path starts at the gripper's proposed position.
    """

    def __init__(self, vlm: VLMCallable | None = None, names: Sequence[str] = ("gripper", "object", "goal"),
                 grid_step: int = 16, gripper: str = "gripper", final_stage: tuple[str, str] | None = None,
                 goal_scale: float = 50.0):
        if gripper not in names:
            raise ConfigError(f"VLMKeypointProposer gripper={gripper!r} is not one of names={list(names)}")
        self.vlm, self.names, self.grid_step, self.gripper = vlm, tuple(names), int(grid_step), gripper
        self.final_stage, self.goal_scale = final_stage, float(goal_scale)

    def build_prompt(self, frame: np.ndarray, instruction: str) -> tuple[np.ndarray, str, np.ndarray]:
        """(annotated image, prompt text, candidate points [N, 2]) for one uint8 [H, W, 3] frame."""
        h, w = frame.shape[:2]
        points = grid_candidates(w, h, self.grid_step)
        example = json.dumps({**{n: i + 1 for i, n in enumerate(self.names)}, "path": [2, 3]})
        text = _PROMPT.format(instruction=instruction, n=len(points), names=", ".join(self.names), example=example)
        return draw_candidates(frame, points), text, points

    def parse_answer(self, answer: str, points: np.ndarray, instruction: str = "") -> KeypointPlan:
        """Turn the VLM's answer text into a plan; KeypointProposalError (one line) names what is wrong with it."""
        data = _answer_json(answer)
        chosen = {n: _candidate(data.get(n), len(points), n) for n in self.names}
        path = data.get("path")
        if not isinstance(path, list) or not path:
            raise KeypointProposalError(f"VLM answer path={path!r}, expected a non-empty list of candidate numbers")
        steps = [_candidate(p, len(points), f"path[{i}]") for i, p in enumerate(path)]
        if all(i == chosen[self.gripper] for i in steps):
            raise KeypointProposalError(f"VLM answer path={path!r} never leaves the gripper's candidate "
                                        f"{chosen[self.gripper] + 1}, expected a path that moves")
        raw = {
            "task": "vlm", "instruction": instruction, "space": "image", "gripper": self.gripper,
            "keypoints": {n: points[i].tolist() for n, i in chosen.items()},
            "path": [{"at": points[chosen[self.gripper]].tolist()}] + [{"at": points[i].tolist()} for i in steps],
        }
        if self.final_stage is not None:
            raw["final_stage"] = {"object": self.final_stage[0], "goal": self.final_stage[1], "scale": self.goal_scale}
        return parse_plan(raw, "<vlm answer>")

    def propose(self, frame: np.ndarray, instruction: str) -> KeypointPlan:
        if self.vlm is None:
            raise ConfigError("kagi source=vlm but no VLM is configured: set reward.vlm to the import path "
                              "'module:function' of a callable (image uint8 [H,W,3], prompt str) -> answer str, "
                              "or use source=offline with an annotated plan")
        frame = np.asarray(frame)
        image, prompt, points = self.build_prompt(frame, instruction)
        return self.parse_answer(str(self.vlm(image, prompt)), points, instruction)


def _answer_json(answer: str) -> dict[str, Any]:
    """The first JSON object in the answer (VLMs wrap it in prose or ```json fences, sometimes with braces in the
    prose after it, so each ``{`` is tried in turn rather than matching the outermost braces)."""
    decoder, first_error = json.JSONDecoder(), None
    for match in re.finditer(r"\{", answer):
        try:
            data, _ = decoder.raw_decode(answer, match.start())
        except ValueError as e:
            first_error = first_error or e
            continue
        if isinstance(data, dict):
            return data
    text = " ".join(answer.split())[:120]
    if first_error is None:
        raise KeypointProposalError(f"VLM answer has no JSON object: {text!r}")
    raise KeypointProposalError(f"VLM answer JSON is malformed ({first_error}): {text!r}")


def _candidate(value: Any, n: int, what: str) -> int:
    """0-based index of a 1-based candidate number given by the VLM."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise KeypointProposalError(f"VLM answer {what}={value!r}, expected a candidate number 1..{n}")
    k = int(value)
    if not 1 <= k <= n:
        raise KeypointProposalError(f"VLM answer {what}={k}, expected a candidate number 1..{n}")
    return k - 1


def import_callable(spec: str) -> Callable[..., Any]:
    """``'package.module:function'`` -> the callable (how a config names a VLM client)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"reward.vlm={spec!r}, expected an import path 'package.module:function'")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward.vlm={spec!r} cannot be imported ({e})") from e
    if not callable(obj):
        raise ConfigError(f"reward.vlm={spec!r} is a {type(obj).__name__}, expected a callable")
    return obj


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
        ``env.step``, so the simulator state is the one the frame shows)."""
        self.sim = MetaWorldKeypoints(env)
        return self

    def reset(self, frame: np.ndarray | None = None) -> None:
        """Start a new episode: a VLM source proposes a new plan from ``frame``; the tracker restarts on it."""
        if isinstance(self.source, VLMKeypointProposer):
            self.plan = None
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
            fixed = {k: v for k, v in self.plan.keypoints.items() if v is not None}
            if self.plan.space != "image" or not fixed:
                raise ConfigError("kagi locator=tracker needs an image-space plan with keypoint coordinates")
            self.tracker.init(first, fixed)

    def _mode(self) -> str:
        if self.locator != "auto":
            return self.locator
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
