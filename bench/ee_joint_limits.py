"""The cost of end-effector steps' joint limits on an FR3 (the IK rest-point stage of ``hardware/limit_check.py``):
``SafetyLayer.send_action`` per command with the stage and without it (no pose model), in the same run.

An in-memory FR3 that reaches each hand target at once (``hardware/mock.py``'s ``Fr3HandMock``: its joints solved by
the same inverse kinematics) stands in for the arm, so only the layer's own work is timed. Two cases: ``free`` (1 mm
steps that stay far from every limit: one IK solve per command) and ``at_limit`` (steps that straighten the elbow
against a limit set just above it: every command is shortened by bisection, ~11 solves; the layer without the stage
keeps FR3's default limits, which it would otherwise hold at). Blocks alternate (with, without, with, ...) so load
hits both alike; per-command medians over the blocks are printed, with the difference and the ratio.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/ee_joint_limits.py [--blocks 5] [--commands 200]``; one JSON line
per case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
from robotrl.hardware.limits import parse_limits
from robotrl.hardware.mock import Fr3HandMock
from robotrl.hardware.robot import Action
from robotrl.hardware.safety import SafetyLayer


def layer_for(case: str, with_pose: bool) -> SafetyLayer:
    from robotrl.workflows.run_env import load_robot_config

    limits = {**load_robot_config("franka", {})["limits"], "driver_timeout_ms": 30_000, "watchdog_ms": 10_000,
              "max_consecutive_overruns": 10**9}
    if case == "at_limit" and with_pose:  # fr3_joint4 0.011 rad above the start: every step is cut short (the
        # layer without the stage would hold at that limit once measured past it, so it keeps the default limits)
        limits["joint_upper"] = [2.6, 1.6, 2.8, -1.559, 2.7, 4.4, 2.9]
    return SafetyLayer(Fr3HandMock(pose_model=with_pose), parse_limits(limits, Fr3HandMock.vendor_limits))


def time_block(layer: SafetyLayer, case: str, commands: int) -> list[float]:
    """Seconds per ``send_action`` over ``commands`` commands (the arm re-homed first)."""
    layer.reset_to_home()
    step = [0.001, 0.0, 0.001] if case == "at_limit" else [0.001, 0.0, 0.0]
    times = []
    for k in range(commands):
        sign = 1.0 if case == "at_limit" or k % 2 == 0 else -1.0  # free: back and forth, never near a limit
        action = Action.ee(np.array(step) * sign, gripper=0.5)
        t0 = time.perf_counter()
        layer.send_action(action)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--commands", type=int, default=200)
    args = parser.parse_args()
    for case in ("free", "at_limit"):
        layers = {True: layer_for(case, True), False: layer_for(case, False)}
        medians: dict[bool, list[float]] = {True: [], False: []}
        clipped: dict[bool, int] = {}
        for layer in layers.values():
            layer.connect()
        try:
            for _ in range(args.blocks):
                for with_pose in (True, False):
                    before = len(layers[with_pose].events)
                    medians[with_pose].append(statistics.median(time_block(layers[with_pose], case, args.commands)))
                    clipped[with_pose] = sum(e["kind"] == "joint_limit" for e in layers[with_pose].events[before:])
        finally:
            for layer in layers.values():
                layer.disconnect()
        with_ms, without_ms = (statistics.median(medians[w]) * 1e3 for w in (True, False))
        result: dict[str, Any] = {
            "case": case, "commands_per_block": args.commands, "blocks": args.blocks,
            "with_ik_ms": round(with_ms, 3), "without_ik_ms": round(without_ms, 3),
            "ik_cost_ms": round(with_ms - without_ms, 3), "ratio": round(with_ms / without_ms, 2),
            "joint_limit_events_last_block": clipped[True]}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
