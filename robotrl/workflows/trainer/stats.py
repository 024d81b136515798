"""What one training episode accumulates, and its ``train.csv`` row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robotrl.errors import DivergenceError

REWARD_INFO_KEYS = ("model_reward", "gt_reward", "reward_invalid")  # from RewardWrapper; flagged steps are counted
ROBOT_INFO_KEYS = ("interventions",)  # from RobotEnv: safety-layer interventions per step, summed per episode
ROBOT_RATE_KEYS = ("achieved_hz", "period_ms_p99")  # from RobotEnv at an episode's last step: the achieved rate
ROBOT_COLUMNS = {"interventions": 0.0, "overruns": 0.0, "safety_stop": 0.0, "operator_steps": 0.0,
                 **dict.fromkeys(ROBOT_RATE_KEYS, float("nan"))}


@dataclass
class EpisodeStats:
    """What one training episode accumulates for its train.csv row."""

    ret: float = 0.0
    length: int = 0
    success: bool | None = None  # None: the task defines no success
    updates: list[dict[str, float]] = field(default_factory=list)  # the agent's update metrics
    rewards: dict[str, float] = field(default_factory=dict)  # reward=<model>: model vs ground truth, summed
    robot: dict[str, float] = field(default_factory=dict)  # robot=<arm>: interventions, overruns, safety stop
    steps: list[int] = field(default_factory=list)  # agent steps whose updates run at the episode end

    def add_step(self, reward: float, info: dict[str, Any]) -> None:
        self.ret += float(reward)
        self.length += 1
        if "success" in info:
            self.success = bool(self.success) or bool(info["success"])
        for key in REWARD_INFO_KEYS:
            if key in info:
                self.rewards[key] = self.rewards.get(key, 0.0) + float(info[key])
        for key in ROBOT_INFO_KEYS:
            if key in info:
                self.robot[key] = self.robot.get(key, 0.0) + float(info[key])
        if info.get("intervention"):
            self.robot["operator_steps"] = self.robot.get("operator_steps", 0.0) + 1.0
        if "overrun_ms" in info:
            self.robot["overruns"] = self.robot.get("overruns", 0.0) + 1.0
        if "safety_stop" in info:
            self.robot["safety_stop"] = 1.0
        for key in ROBOT_RATE_KEYS:
            if key in info:
                self.robot[key] = float(info[key])


def train_row(stats: EpisodeStats, base: dict[str, Any], discards: dict[str, float] | None,
              robot: bool, where: str) -> dict[str, Any]:
    """The train.csv row: ``base`` (step, episode, fps, ...), success, reward-model sums, the collector's discard
    counts, the robot's counts, then the mean of each update metric. A non-finite metric stops the run
    (``where``: the episode, frame and intact checkpoints, for its message)."""
    row = dict(base)
    if stats.success is not None:
        row["success"] = float(stats.success)
    row.update(stats.rewards)  # model_reward / gt_reward sums (episode_return is what the agent was given)
    if discards is not None:  # restarted workers/actors: cumulative counts beside the frames
        row.update(discards)
    if robot:
        row.update({**ROBOT_COLUMNS, **stats.robot})
    # first-seen order (a set's order changes per process); agents may return {} on steps they skip
    for key in dict.fromkeys(k for m in stats.updates for k in m):
        row[key] = float(np.mean([m[key] for m in stats.updates if key in m]))
        if not np.isfinite(row[key]):
            raise DivergenceError(f"{key} became {row[key]} during {where}")
    return row
