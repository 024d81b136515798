"""Control-loop timing on CPU: period jitter of a policy driving ``robot=sim`` through the SafetyLayer at 10/20/50 Hz,
and the safety layer's cost per command as a ratio against the bare robot, measured in the same run.

Policies are trained-size networks with random weights (timing does not depend on the weights): DrQ-v2 with
drqv2.yaml's sizes (feature 50, hidden 1024, 84x84 pixels, 3 stacked frames) and TD-MPC2 with tdmpc2.yaml's
model_size 5 planning with MPPI (512 samples, 6 iterations, horizon 3) from the same pixels. Each step: observe
(MuJoCo render of Meta-World's corner2 camera), frame-stack, ``agent.act(eval_mode=True)``, send the action as an
end-effector delta (Meta-World's 0.01 m per unit; the xyz part scaled by 0.1 and its sign alternated every step so
that a random-weight policy, whose output barely varies, does not walk the arm into a joint limit and hold it).
The loop sleeps to an absolute schedule and re-anchors after an
overrun (a late step starts at once, the next deadline is one period later); ``period`` is the time between step
starts, ``lateness`` how far a start was behind its deadline. The rate monitor's hold-after-overruns is disabled
here so that an infeasible rate is measured rather than stopped (it is reported as the overrun count).

Safety cost: blocks of ``send_action`` alternate between the SafetyLayer (its DriverThread hand-off), the same layer
with the one-worker ThreadPoolExecutor hand-off it used before, and a bare SimRobot (safe, old, bare, safe, ...) so
load hits all alike; per-command medians, the overhead over bare, the ratio and the overhead as a percentage of each
control period are printed.

Run: ``MUJOCO_GL=egl OMP_NUM_THREADS=1 .venv/bin/python bench/control_loop.py [--seconds 4] [--rates 10,20,50]
[--policies drqv2,tdmpc2] [--blocks 5] [--threads 1] [--max-steps N] [--no-cost]``; one JSON line per case.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import statistics
import time
from collections import deque
from typing import Any

import numpy as np
import torch

ACTION_SHRINK = 0.1
ENV_CFG = {"name": "metaworld/reach", "image_size": 84, "frame_stack": 3, "obs_type": "pixels", "action_repeat": 2}


def sim_cfg(hz: float) -> dict[str, Any]:
    from robotrl.workflows.run_env import load_robot_config

    cfg = load_robot_config("sim", {})
    # generous watchdog: on the shared machine a step can stall for a few hundred ms, and a hold would end the run
    cfg["limits"].update(control_hz=hz, max_consecutive_overruns=10**9, watchdog_ms=2000.0)
    return cfg


def make_policy(name: str) -> tuple[Any, Any]:
    """A trained-size agent with random weights, and the env whose observation space it takes."""
    from robotrl.agents import make_agent
    from robotrl.envs import make_env

    env = make_env(ENV_CFG, 0)
    from omegaconf import OmegaConf

    from robotrl.overrides import compose_config

    # the agent yaml as hydra composes it (its defaults list included), interpolations left for the line below
    cfg = OmegaConf.to_container(compose_config([f"agent={name}"]).agent, resolve=False)
    if "stddev_schedule" in cfg:
        cfg["stddev_schedule"] = "linear(1.0,0.1,500000)"  # the reach task's (an interpolation in the yaml)
    torch.manual_seed(0)
    agent = make_agent(cfg, env.observation_space, env.action_space, "cpu", env_name=ENV_CFG["name"])
    return agent, env


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def run_loop(name: str, agent: Any, hz: float, seconds: float, max_steps: int) -> dict[str, Any]:
    from robotrl.hardware import make_robot
    from robotrl.hardware.robot import ee_action_from_policy
    from robotrl.hardware.sim import METAWORLD_ACTION_SCALE_M

    robot = make_robot(sim_cfg(hz))
    period, n = 1.0 / hz, min(int(seconds * hz), max_steps)
    starts, late, obs_s, act_s, send_s = [], [], [], [], []
    with robot:
        cam = robot.camera_names[0]
        frames: deque[np.ndarray] = deque(maxlen=3)
        for _ in range(3):  # warm-up (not timed): fills the frame stack, first torch calls
            frames.append(robot.get_observation().frames[cam].image.transpose(2, 0, 1))
        while len(frames) < 3:
            frames.append(frames[-1])
        with torch.no_grad():
            agent.act({"pixels": np.concatenate(frames)}, 10**6, eval_mode=True)
        deadline = time.perf_counter()
        for step in range(n):
            now = time.perf_counter()
            if now < deadline:
                time.sleep(deadline - now)
                now = time.perf_counter()
            starts.append(now)
            late.append(max(0.0, now - deadline))
            deadline = max(deadline + period, now)  # re-anchor after an overrun
            t0 = time.perf_counter()
            obs = robot.get_observation()
            obs_s.append(time.perf_counter() - t0)
            frames.append(obs.frames[cam].image.transpose(2, 0, 1))
            t0 = time.perf_counter()
            with torch.no_grad():
                action = agent.act({"pixels": np.concatenate(frames)}, 10**6 + step, eval_mode=True)
            act_s.append(time.perf_counter() - t0)
            # A random-weight policy outputs a near-constant direction, which would walk the arm into a joint limit
            # (HOLD): alternate its sign so the arm stays near its start; the policy still computes every action.
            action[:3] *= ACTION_SHRINK * (1 if step % 2 == 0 else -1)
            t0 = time.perf_counter()
            robot.send_action(ee_action_from_policy(action, METAWORLD_ACTION_SCALE_M))
            send_s.append(time.perf_counter() - t0)
        overruns = robot.counts["overrun"]
    periods = np.diff(starts).tolist()
    return {"case": "loop", "policy": name, "hz": hz, "steps": n, "period_ms": round(period * 1e3, 2),
            "period_p50_ms": round(pct(periods, 50), 2), "period_p99_ms": round(pct(periods, 99), 2),
            "lateness_p50_ms": round(pct(late, 50), 2), "lateness_p99_ms": round(pct(late, 99), 2),
            "observe_p50_ms": round(pct(obs_s, 50), 2), "act_p50_ms": round(pct(act_s, 50), 2),
            "act_p99_ms": round(pct(act_s, 99), 2), "send_p50_ms": round(pct(send_s, 50), 2), "overruns": overruns}


class ExecutorHandoff:
    """The hand-off SafetyLayer used before DriverThread (one-worker ThreadPoolExecutor, a Future per call), as a
    drop-in for the before/after comparison in the same run."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="robot-driver")

    def call(self, fn: Any, args: tuple[Any, ...], timeout: float, **_interrupt: Any) -> Any:
        """(the Ctrl-C hand-off of DriverThread.call, ``on_interrupt``/``grace_s``, is not part of the comparison)"""
        from robotrl.hardware.safety import DriverCallTimeout

        try:
            return self.pool.submit(fn, *args).result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise DriverCallTimeout from None

    def close(self, wait: bool) -> None:
        self.pool.shutdown(wait=wait)


def safety_cost(blocks: int, per_block: int, rates: list[float]) -> dict[str, Any]:
    """Per-command time of SafetyLayer.send_action (with DriverThread, and with the old executor hand-off) vs the
    bare SimRobot's; interleaved blocks, same actions."""
    from robotrl.hardware import make_robot
    from robotrl.hardware.robot import Action

    cfg = sim_cfg(20.0)
    robots: dict[str, Any] = {}
    for name in ("safe", "safe_executor"):
        ticks = itertools.count()
        # A clock that advances one 20 Hz period per reading, as if commands came at 20 Hz: the checks then see what
        # a real loop gives them (no velocity clip, no overrun), not the sub-ms spacing of back-to-back sends.
        robots[name] = make_robot(cfg, clock=lambda ticks=ticks: next(ticks) * 0.05)
    robots["safe_executor"]._executor = ExecutorHandoff()
    robots["bare"] = make_robot(cfg).inner  # the same driver, built as make_robot builds it, without the layer
    rng = np.random.default_rng(0)
    there = [Action.ee(rng.uniform(-0.004, 0.004, 3), float(rng.uniform())) for _ in range(per_block // 2)]  # no clip
    # ... and back, so the arms stay near their start
    actions = there + [Action.ee(-a.delta, a.gripper) for a in reversed(there)]

    def block(robot: Any) -> float:
        t0 = time.perf_counter()
        for a in actions:
            robot.send_action(a)
        return (time.perf_counter() - t0) / len(actions)

    times: dict[str, list[float]] = {name: [] for name in robots}
    for robot in robots.values():
        robot.connect()
    try:
        for robot in robots.values():
            block(robot)  # warm-up
        for _ in range(blocks):
            for name, robot in robots.items():
                times[name].append(block(robot))
    finally:
        for robot in robots.values():
            robot.disconnect()
    med = {name: statistics.median(t) for name, t in times.items()}
    out: dict[str, Any] = {"case": "safety_cost", "blocks": blocks, "per_block": len(actions)}
    for name in ("safe", "safe_executor"):
        over = med[name] - med["bare"]
        out[name] = {"ms": round(med[name] * 1e3, 3), "overhead_ms": round(over * 1e3, 3),
                     "ratio_over_bare": round(med[name] / med["bare"], 3),
                     **{f"overhead_pct_of_{int(hz)}hz_period": round(over * hz * 100, 2) for hz in rates}}
    out["bare_ms"] = round(med["bare"] * 1e3, 3)
    out["block_ms"] = {name: [round(t * 1e3, 3) for t in ts] for name, ts in times.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per (policy, rate)")
    parser.add_argument("--rates", default="10,20,50")
    parser.add_argument("--policies", default="drqv2,tdmpc2")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=10**6, help="cap on steps per case (slow policies)")
    parser.add_argument("--no-cost", action="store_true", help="skip the safety-cost case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rates = [float(r) for r in args.rates.split(",")]
    if not args.no_cost:
        print(json.dumps(safety_cost(args.blocks, args.per_block, rates)), flush=True)
    for name in [p for p in args.policies.split(",") if p]:
        agent, _env = make_policy(name)
        for hz in rates:
            print(json.dumps(run_loop(name, agent, hz, args.seconds, args.max_steps)), flush=True)


if __name__ == "__main__":
    main()
