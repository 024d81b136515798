"""What ``robotrl deploy record=DIR`` writes: its episodes in the robotrl demo format (``robotrl.demos``, so MoDem
can train from them) with one extra per-step array ``intervention`` (T,) bool marking the operator's segments."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write, atomic_write_text

RECORD_FORMAT = "robotrl deploy recording (robotrl demo format v1 + intervention)"


@dataclass
class EpisodeRecord:
    """One episode's arrays in the demo format, plus the operator flag."""

    pixels: list[np.ndarray] = field(default_factory=list)
    state: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    intervention: list[bool] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        t = len(self.action)
        return {
            "pixels": np.stack(self.pixels).astype(np.uint8),
            "state": np.stack(self.state).astype(np.float32),
            "action": np.stack(self.action).astype(np.float32),
            "reward": np.zeros(t, np.float32),  # a robot has no reward signal; documented in meta.json
            "terminated": np.zeros(t, bool),
            "success": np.zeros(t, bool),
            "intervention": np.asarray(self.intervention, bool),
        }


def write_recording(out: Path, spec: Any, episodes: list[EpisodeRecord], robot: Any,
                    extra: dict[str, Any]) -> Path:
    """Write ``episodes`` as a demo directory (episode npz files, then meta.json last, all atomic)."""
    from robotrl.demos import FORMAT_VERSION, episode_file

    out.mkdir(parents=True, exist_ok=True)
    lengths = []
    for i, ep in enumerate(episodes):
        with atomic_write(out / episode_file(i)) as f:
            np.savez_compressed(f, **ep.arrays())
        lengths.append(len(ep.action))
    proprio_names = ["ee.x", "ee.y", "ee.z", "gripper.opening"]
    state_names = proprio_names + [f"prev.{n}" for n in proprio_names] + [f"{j}.pos" for j in robot.joint_names]
    meta = {
        "format_version": FORMAT_VERSION, "format": RECORD_FORMAT, "name": spec.env_name, "suite": spec.suite,
        "task": spec.task, "image_size": spec.image_size, "frame_stack": spec.frame_stack,
        "action_repeat": spec.action_repeat, "camera": spec.cameras[0], "cameras": list(spec.cameras),
        "state_dim": len(state_names), "state_names": state_names, "proprio_index": list(range(8)),
        "action_dim": spec.action_dim,
        "action_units": f"[-1, 1]: dx dy dz x {spec.metres_per_unit} m, gripper (+1 closed)",
        "reward": "none: robots have no reward signal, stored as 0", "robot": robot.inner.name,
        "num_episodes": len(episodes), "episode_lengths": lengths,
        "episode_interventions": [int(np.sum(ep.intervention)) for ep in episodes], **extra,
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return out


def record_obs(rec: EpisodeRecord, env: Any) -> None:
    """The frame and measured state a recording keeps for the env's last observation: the newest frame of the
    policy's cameras, Meta-World's 8-d proprioception (this env step, previous env step; ``proprio_index`` 0..7 in
    meta.json, so ``*_proprio`` agents load it), then the joint positions (rad)."""
    observation = env.last_observation
    rec.pixels.append(env.pipeline.frame(observation))
    joints = np.asarray(observation.state.joint_pos, np.float32)
    rec.state.append(np.concatenate([env.pipeline.proprio, joints]).astype(np.float32))
