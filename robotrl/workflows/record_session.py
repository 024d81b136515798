"""The on-disk side of ``robotrl record``: one episode's buffer, and a session directory in the robotrl demo format.

A session directory is a demo directory (``robotrl/demos.py``: ``meta.json`` + ``episode_NNNNNN.npz``) that agents,
``reward=success_classifier`` and ``export_lerobot`` read as they are. Each recorded episode holds, besides the
demo format's keys (``action`` = what the safety layer let reach the driver, in policy units; ``success`` = the
person's label: True at the last step of an episode labelled a success, else False):

- ``commanded_action`` (T, 4) float32: the device's command in policy units before any clipping (may leave [-1, 1]);
- ``intervention`` (T,) bool: steps a person drove (every step, when no policy runs);
- ``safety_events`` (T,) int16: safety-layer interventions (clips, holds) during the step;
- ``env_success`` (T,) bool, only on a simulated arm: the simulator's own success (``robot=sim``'s ground truth);
- ``frame_time`` (T+1, cameras) float64: when each frame reached the host (``time.monotonic`` s of the recording
  process when the camera's grab returned it, after the device's own latency: compare within an episode) and
  ``frame_new`` (T+1, cameras) bool: False where the camera had no new frame since the previous observation (a
  camera slower than the agent step); an episode a camera stop ended is cut after its last new frame
  (``robotrl.workflows.record_frames``), so a frozen stream is never written as new frames.

``meta.json`` adds per episode ``episode_labels`` ("success" / "failure" / null: the episode ended by time or a
safety stop without a label), ``episode_seeds``, ``episode_stops`` (the safety layer's reason, or null) and the
settings replay needs (``env``, ``robot``, ``hz``). Crash safety: every file is written atomically (temp file,
fsync, rename, :mod:`robotrl.atomic`), an episode's npz before ``meta.json``, and ``num_episodes`` in meta is
authoritative: an episode whose meta update never happened does not exist, and :meth:`Session.open` removes it and
any temp file a killed process left. A discarded or re-recorded episode is never written at all.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.demos import FORMAT_VERSION, META, episode_file, load_demos
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.readers import read_json
from robotrl.run_lock import check_free, hold
from robotrl.workflows.record_frames import frame_stamps, is_new

RECORD_FORMAT = "robotrl record session (robotrl demo format v1 + commanded_action, intervention, labels)"
PROPRIO_NAMES = ["ee.x", "ee.y", "ee.z", "gripper.opening"]
STATE_NAMES = PROPRIO_NAMES + [f"prev.{n}" for n in PROPRIO_NAMES]
LABELS = ("success", "failure")
# settings a resumed session must share with the recorded one (meta key -> what it is)
RESUME_KEYS = {"name": "env", "robot": "robot", "image_size": "env.image_size", "cameras": "cameras",
               "action_repeat": "env.action_repeat", "frame_stack": "env.frame_stack", "task": "task",
               "hz": "robot.limits.control_hz"}
_EPISODE = re.compile(r"episode_(\d{6})\.npz$")


def check_out(out: Path, resume: bool) -> None:
    """``out`` must be a session to resume (resume=true) or a new or empty directory: ``robotrl record`` checks this
    before any device or arm is touched (a file there failed after the arm had connected; a training run's directory
    got episodes mixed into it; resume=true on nothing started a new session without a word), and
    :meth:`Session.open` again once it holds the directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={str(out)!r} is a file; expected the session's directory (made if missing)")
    has_meta = (out / META).is_file()
    if has_meta and not resume:
        raise ConfigError(f"out={str(out)!r} already holds a recording ({out / META}); resume=true continues it, "
                          f"or choose another out=")
    if resume and not has_meta:
        raise ConfigError(f"resume=true but out={str(out)!r} holds no record session (no {META}); without "
                          f"resume=true a new session is recorded there")
    others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    if not has_meta and any(_EPISODE.match(name) for name in others):
        raise ConfigError(f"out={str(out)!r} holds episode files but no {META}; not a robotrl record session")
    if not has_meta and others:
        raise ConfigError(f"out={str(out)!r} holds other files ({', '.join(others[:3])}...): record a session into "
                          f"a new or empty directory")


@dataclass
class EpisodeBuffer:
    """One episode as it is recorded: T+1 observations, T steps."""

    pixels: list[np.ndarray] = field(default_factory=list)
    state: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    commanded: list[np.ndarray] = field(default_factory=list)
    intervention: list[bool] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    safety_events: list[int] = field(default_factory=list)
    env_success: list[bool] = field(default_factory=list)
    frame_time: list[np.ndarray] = field(default_factory=list)
    frame_new: list[np.ndarray] = field(default_factory=list)
    _stamps: tuple[np.ndarray, np.ndarray] | None = None

    def observe(self, obs: dict[str, np.ndarray], views: int, observation: Any = None,
                cameras: tuple[str, ...] = ()) -> None:
        """Keep an observation: the newest frame of the stack (the demo format stores single frames), the 8-d
        proprioception, and (given the :class:`Observation` behind it) its frames' capture times and newness."""
        self.pixels.append(np.asarray(obs["pixels"][-3 * views:], np.uint8).copy())
        self.state.append(np.asarray(obs["state"], np.float32).copy())
        if observation is not None:
            times, seqs = frame_stamps(observation, cameras)
            self.frame_new.append(is_new(times, seqs, self._stamps))
            self.frame_time.append(times)
            self._stamps = times, seqs

    def drop_tail(self, steps: int) -> None:
        """Forget the last ``steps`` steps and the observations they ended on."""
        if steps <= 0:
            return
        for name in ("pixels", "state", "frame_time", "frame_new"):
            del getattr(self, name)[-steps:]
        for name in ("action", "commanded", "intervention", "reward", "safety_events", "env_success"):
            del getattr(self, name)[len(getattr(self, name)) - steps:]

    def __len__(self) -> int:
        return len(self.action)

    def arrays(self, label: str | None) -> dict[str, np.ndarray]:
        t = len(self.action)
        success = np.zeros(t, bool)
        if label == "success":
            success[-1] = True  # the state the person judged: the episode's last frame (frame t + 1 of step t)
        out = {
            "pixels": np.stack(self.pixels).astype(np.uint8), "state": np.stack(self.state).astype(np.float32),
            "action": np.stack(self.action).astype(np.float32), "reward": np.asarray(self.reward, np.float32),
            "terminated": np.zeros(t, bool), "success": success,
            "commanded_action": np.stack(self.commanded).astype(np.float32),
            "intervention": np.asarray(self.intervention, bool),
            "safety_events": np.asarray(self.safety_events, np.int16),
        }
        if self.env_success:
            out["env_success"] = np.asarray(self.env_success, bool)
        if self.frame_time:
            out["frame_time"] = np.stack(self.frame_time).astype(np.float64)
            out["frame_new"] = np.stack(self.frame_new).astype(bool)
        return out


class Session:
    """A session directory being recorded (see the module doc). ``count`` episodes are on disk."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta = out, meta

    @property
    def count(self) -> int:
        return int(self.meta["num_episodes"])

    @classmethod
    def open(cls, out: str | Path, base_meta: dict[str, Any], resume: bool) -> Session:
        """A new session at ``out`` (which must hold no episodes), or with ``resume`` the one there, checked to
        have been recorded with the same settings and cleaned of what an interrupted process left."""
        out = Path(out)
        check_free(out, "record session")  # another `robotrl record` writing it: refused before anything changes
        check_out(out, resume)
        meta_path = out / META
        if not meta_path.is_file():
            hold(out, "record session")  # until this process ends
            _clean(out, 0)
            meta = {**base_meta, "num_episodes": 0, "episode_lengths": [], "episode_labels": [],
                    "episode_seeds": [], "episode_stops": [], "episode_interventions": []}
            return cls(out, meta)
        meta = read_json(meta_path, DemoFormatError, "record session meta.json")
        for key, what in RESUME_KEYS.items():
            if meta.get(key) != base_meta.get(key):
                raise ConfigError(f"resume=true: {out} was recorded with {what}={meta.get(key)!r}, this session has "
                                  f"{base_meta.get(key)!r}; record with the same settings or choose another out=")
        if meta.get("num_episodes"):
            load_demos(out)  # every kept episode still loads: a resumed session never builds on a broken one
        hold(out, "record session")
        _clean(out, int(meta.get("num_episodes", 0)))
        meta.update({k: v for k, v in base_meta.items() if k not in meta})
        return cls(out, meta)

    def write(self, episode: EpisodeBuffer, label: str | None, seed: int, stop: str | None) -> Path:
        """Write ``episode`` as the next one: its npz, then meta.json (both atomic)."""
        if label not in (*LABELS, None):
            raise ValueError(f"label={label!r}, expected one of {LABELS} or None")
        path = self.out / episode_file(self.count)
        arrays = episode.arrays(label)
        with atomic_write(path) as f:
            np.savez_compressed(f, **arrays)
        m = self.meta
        m["episode_lengths"].append(len(episode))
        m["episode_labels"].append(label)
        m["episode_seeds"].append(int(seed))
        m["episode_stops"].append(stop)
        m["episode_interventions"].append(int(arrays["intervention"].sum()))
        m["num_episodes"] = self.count + 1
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.out / META, json.dumps(m, indent=2))
        return path


def _clean(out: Path, keep: int) -> None:
    """Remove temp files a killed writer left, and episode files past ``keep`` (never counted in meta.json)."""
    for path in out.iterdir():
        match = _EPISODE.match(path.name)
        stray_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
        if stray_tmp or (match and int(match.group(1)) >= keep):
            path.unlink()


def base_meta(env_cfg: dict[str, Any], spec: Any, robot: Any, instruction: str, teleop: str, hz: float,
              seed: int, home_noise_m: float) -> dict[str, Any]:
    """The session's meta.json fields that do not change per episode."""
    cameras = list(robot.camera_names)
    return {
        "format_version": FORMAT_VERSION, "format": RECORD_FORMAT, "name": spec.name, "suite": "robot",
        "task": instruction, "scene_task": spec.task, "robot": robot.inner.name, "teleop": teleop,
        "image_size": spec.image_size, "frame_stack": spec.frame_stack, "action_repeat": spec.action_repeat,
        "camera": cameras[0], "cameras": cameras, "state_dim": len(STATE_NAMES), "state_names": STATE_NAMES,
        "proprio_index": list(range(len(STATE_NAMES))), "action_dim": 4,
        "action_units": "[-1, 1]: dx dy dz x 0.01 m in the policy frame (robot.frame_map), gripper (+1 closed)",
        "reward": "the simulator's on robot=sim, else 0 (a robot has no reward signal)",
        "labels": "success[t] is True at the last step of an episode labelled a success (episode_labels)",
        "hz": hz, "seed": seed, "home_noise_m": home_noise_m, "env": env_cfg,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
