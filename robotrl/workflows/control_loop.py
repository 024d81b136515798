"""The control loop on an arm, one copy: a :class:`~robotrl.hardware.robot_env.RobotEnv` (observation pipeline,
control rate, safety stops, operator take-overs, live view, dry run), a source of actions (a policy, a teleop
device, a recorded episode) and whatever keeps the steps (a recorder, a log).

``robotrl deploy`` (a policy), ``robotrl record`` (a teleop device), ``robotrl replay`` (a recording's actions) and
training on an arm (the trainer's own loop over the same ``RobotEnv``, :func:`robotrl.workflows.run_env.make_run_env`)
all act through it, so a behaviour of the loop (the frame map, ``reset_scene``, a safety hold, the rate) is the same
in each. Not :func:`robotrl.episodes.record_episode`: it starts from the caller's reset observation (a person sets
the scene up between reset and the first step), its source may end the episode (None) and it caps the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Obs = dict[str, np.ndarray]
# (agent step, observation) -> the action for this step, or None to end the episode before it
Source = Callable[[int, Obs], "np.ndarray | None"]


@dataclass
class Step:
    """One agent step as the loop ran it: the source's action and what ``env.step`` returned for it."""

    index: int
    action: np.ndarray
    obs: Obs
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


def run_episode(env: Any, source: Source, on_step: Callable[[Step], None] | None, obs: Obs,
                max_steps: int | None = None) -> int:
    """Step ``env`` from the reset observation ``obs`` with ``source``'s actions until the episode ends (the env's
    time limit, a safety stop, ``max_steps``) or the source returns None; each step goes to ``on_step``. Returns
    the number of steps taken. A safety stop ends the episode (``info["safety_stop"]``, ``env.stop_error``):
    whether it ends the run too is the caller's choice."""
    limit = env.max_agent_steps if max_steps is None else max_steps
    for index in range(limit):
        action = source(index, obs)
        if action is None:
            return index
        obs, reward, terminated, truncated, info = env.step(action)
        if on_step is not None:
            on_step(Step(index, np.asarray(action), obs, float(reward), bool(terminated), bool(truncated), info))
        if terminated or truncated:
            return index + 1
    return limit
