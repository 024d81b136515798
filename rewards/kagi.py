"""KAGI: a keypoint/affordance-guided dense reward (Lee, Xie, Fang, Pertsch, Finn 2024, "Affordance-Guided
Reinforcement Learning via Visual Prompting").

In KAGI a VLM looks at the first image of an episode (with numbered candidate points drawn on it), names the task's
keypoints (where to grasp/touch, where the object should go) and an ordered waypoint path for the gripper; every
frame is then rewarded by how far the gripper has progressed along that path, and a success signal takes over at
the end. The four parts sit behind small interfaces so the simulated and the real-robot set-ups share the reward itself
(plans and their sources are in :mod:`robotrl.rewards.kagi_plan`, locators in :mod:`robotrl.rewards.kagi_locate`,
the reward here):

* :class:`KeypointPlan` - named keypoints plus a waypoint path whose points are anchored to keypoints (``{at:
  object, offset: [0, 0, 0.05]}``) or absolute, in ``world`` (metres, 3-D) or ``image`` (pixels, 2-D) coordinates.
* keypoint *sources* (``propose(frame, instruction) -> KeypointPlan``): :class:`OfflineKeypointSource` (plans
  annotated in ``rewards/kagi_plans/<task>.yaml`` or any yaml/json file; the default, works offline) and
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from robotrl.rewards.base import check_frames
from robotrl.rewards.capabilities import RewardCapabilities
from robotrl.rewards.kagi_locate import (  # noqa: F401 (re-exported: the locators' public home stays kagi)
    MetaWorldKeypoints,
    TemplateTracker,
    camera_pose,
    image_plan,
    polyline_progress,
    project_points,
)
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
from robotrl.params import require


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

    capabilities = RewardCapabilities(predicts_success=True, binds_env=True, resets_per_episode=True)

    def __init__(self, plan: str | Mapping[str, Any] | None = None, source: str = "offline",
                 instruction: str | None = None, vlm: str | VLMCallable | None = None, locator: str = "auto",
                 space: str | None = None, deviation_weight: float = 1.0, final_weight: float = 0.5,
                 grid_step: int = 16, tracker_patch: int = 7, tracker_search: int = 6, batch_size: int = 64):
        if locator not in LOCATORS:
            raise ConfigError(f"reward.locator={locator!r}, expected one of {', '.join(LOCATORS)}")
        if space not in (None, *SPACES) or (source == "vlm" and space == "world"):
            raise ConfigError(f"reward.space={space!r}, expected null (the plan's space), world or image "
                              "(image only with source=vlm: its plans are in pixels)")
        require("reward", probability={"final_weight": final_weight}, nonneg={"deviation_weight": deviation_weight},
                positive_int={"grid_step": grid_step, "tracker_patch": tracker_patch, "tracker_search": tracker_search,
                              "batch_size": batch_size})
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
