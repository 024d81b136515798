"""KAGI's keypoint plans and where they come from (see :mod:`robotrl.rewards.kagi` for the method).

* :class:`KeypointPlan` - named keypoints plus a waypoint path whose points are anchored to keypoints (``{at:
  object, offset: [0, 0, 0.05]}``) or absolute, in ``world`` (metres, 3-D) or ``image`` (pixels, 2-D) coordinates;
  :func:`parse_plan` / :func:`load_plan` read one from a mapping, a yaml/json file or a packaged plan name.
* keypoint *sources* (``propose(frame, instruction) -> KeypointPlan``): :class:`OfflineKeypointSource` (plans
  annotated in ``rewards/kagi_plans/<task>.yaml`` (plan data shipped with this module, not reward configs) or any
  yaml/json file; the default, works offline) and
  :class:`VLMKeypointProposer` (builds the visual prompt, calls a pluggable VLM callable, parses its answer).
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

from robotrl.errors import ConfigError, RobotRLError

SPACES = ("world", "image")
DIMS = {"world": 3, "image": 2}
LOCATORS = ("auto", "info", "sim", "tracker")
PLAN_DIR = "kagi_plans"  # packaged plans: robotrl/rewards/kagi_plans/<name>.yaml, loaded by name (`reward.plan`)
PLAN_KEYS = frozenset({"task", "instruction", "space", "keypoints", "gripper", "path", "final_stage", "reach_radius",
                       "goal_radius", "static", "image_size"})
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
    ``static``: keypoints a tracker does not follow (fixed points of the scene: the start, a goal marked on the
    table), so the arm passing over them cannot drag them along. ``image_size`` = (width, height) of the frames an
    image plan's pixel coordinates were annotated on (None: not recorded), checked against the frames it rewards.
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
    static: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None

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
    static = _parse_static(raw.get("static"), names, gripper, where)
    return KeypointPlan(
        name=str(raw.get("task", where)), instruction=str(raw.get("instruction", "")), space=space,
        keypoints=names, path=path, gripper=gripper, final_stage=final, goal_scale=scale,
        reach_radius=_positive(raw, "reach_radius", 0.03 if space == "world" else 3.0, where),
        goal_radius=_positive(raw, "goal_radius", 0.05 if space == "world" else 5.0, where),
        static=static, image_size=_parse_image_size(raw.get("image_size"), space, where),
    )


def _parse_static(raw: Any, names: Mapping[str, Any], gripper: str, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str) or any(n not in names or n == gripper for n in raw):
        raise _fail(where, f"static={raw!r}, expected a list of keypoint names other than the gripper "
                           f"(known: {', '.join(names)})")
    return tuple(str(n) for n in raw)


def _parse_image_size(raw: Any, space: str, where: str) -> tuple[int, int] | None:
    if raw is None:
        return None
    ok = (isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw))
    if not ok or space != "image":
        raise _fail(where, f"image_size={raw!r}, expected [width, height] in pixels (positive ints) on an image plan")
    return int(raw[0]), int(raw[1])


def _plan_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("robotrl.rewards").joinpath(PLAN_DIR)))


def packaged_plans() -> list[str]:
    """The names of the packaged plans (Meta-World tasks), sorted."""
    return sorted(p.stem for p in _plan_dir().glob("*.yaml"))


def plan_path(name: str) -> Path:
    """A plan file: ``name`` as a path if it names a file, else the packaged ``rewards/kagi_plans/<name>.yaml``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    packaged = _plan_dir() / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(f"kagi plan {name!r} is neither a yaml/json file nor a packaged plan "
                      f"(known: {', '.join(packaged_plans())})")


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
        raw = raw["plan"]  # a reward config file with a `plan:` key (a user's own, or an old copy of a packaged one)
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
