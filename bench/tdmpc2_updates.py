"""TD-MPC2 throughput: robotrl's world-model updates/s and MPPI ms/action next to the reference, same run.

Usage:
  REF_TDMPC2=<tdmpc2 checkout> REF_PYTHON=<python with tensordict 0.8.3, hydra-core, omegaconf, torch> \
      .venv/bin/python bench/tdmpc2_updates.py [--cases state1,state5,rgb5,plan5] [--threads 2] [--blocks 5]
      [--compile] [--ref-compile] [--bf16]

Each case builds robotrl's ``TDMPC2Agent`` here and the reference agent in a worker process (through
``/work/shared/bench/ref_tdmpc2_updates.py``, override with REF_HARNESS), then alternates timed blocks
(ours, reference, ours, ...) so both see the same machine load; prints one JSON line per case with the medians,
min/max of the blocks and the ratio ours/reference (updates/s) or reference/ours (ms per action, i.e. speed-up).
Without REF_TDMPC2 only robotrl is timed. Batches are synthetic and laid out like the reference's buffer
(obs (H+1, B, ...), state 24-d or uint8 9x64x64, action 6-d), batch 256, horizon 3; sampling cost is excluded.
Planning runs at the paper's settings (512 samples, 6 iterations, 64 elites, 24 policy trajectories, horizon 3),
batch size 1, eval mode, warm-started. ``--compile`` times robotrl with ``compile=True`` (fused LayerNorm + Mish
kernels), ``--ref-compile`` the reference with its own ``compile=True`` (torch.compile of its whole ``_update`` and
``_plan``); compilation happens in the warm-up steps, outside the timed blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import torch

CASES = {
    "state1": {"mode": "update", "obs": "state", "model_size": 1, "per_block": 5},
    "state5": {"mode": "update", "obs": "state", "model_size": 5, "per_block": 3},
    "rgb5": {"mode": "update", "obs": "rgb", "model_size": 5, "per_block": 2},
    "plan5": {"mode": "plan", "obs": "state", "model_size": 5, "per_block": 5},
}
OBS_DIM, ACTION_DIM, BATCH, HORIZON = 24, 6, 256, 3

_WORKER = r"""
import importlib.util, sys, time, types, torch
spec = importlib.util.spec_from_file_location("ref_harness", sys.argv[1])
h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h)
mode, obs, size, threads, comp = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
ref = h._ref_dir(); sys.path.insert(0, ref); torch.set_num_threads(threads); torch.manual_seed(0)
args = types.SimpleNamespace(obs=obs, model_size=size, batch=256, horizon=3, compile=comp, action_dim=6, obs_dim=24)
cfg = h.build_cfg(args, ref); agent = h.build_agent(cfg)
if mode == "update":
    buf = h.FakeBuffer(cfg); step = lambda: agent.update(buf)
else:
    o = torch.randn(24); agent.act(o, t0=True, eval_mode=True); step = lambda: agent.act(o, t0=False, eval_mode=True)
print("ready", agent.model.total_params, flush=True)
for line in sys.stdin:
    n = int(line)
    t = time.perf_counter()
    for _ in range(n):
        step()
    print(time.perf_counter() - t, flush=True)
"""


class _FakeReplay:
    def __init__(self, obs: str, n: int = 4, seed: int = 0):
        from robotrl.types import Trajectories

        g = torch.Generator().manual_seed(seed)
        self.batches = []
        for _ in range(n):
            if obs == "rgb":
                o = {"pixels": torch.randint(0, 256, (HORIZON + 1, BATCH, 9, 64, 64), generator=g, dtype=torch.uint8)}
            else:
                o = {"state": torch.randn(HORIZON + 1, BATCH, OBS_DIM, generator=g)}
            self.batches.append(Trajectories(o, torch.rand(HORIZON, BATCH, ACTION_DIM, generator=g) * 2 - 1,
                                             torch.randn(HORIZON, BATCH, 1, generator=g),
                                             torch.zeros(HORIZON, BATCH, 1)))
        self.i = 0

    def sample_trajectories(self, batch_size: int, horizon: int):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b


def build_ours(case: dict, plan_bf16: bool = False, compile: bool = False):
    from robotrl.agents.tdmpc2 import TDMPC2Agent

    if case["obs"] == "rgb":
        space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (9, 64, 64), np.uint8)})
    else:
        space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)})
    agent = TDMPC2Agent(space, gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32), "cpu",
                        model_size=case["model_size"], batch_size=BATCH, horizon=HORIZON, seed=0,
                        plan_bf16=plan_bf16, episode_length=1000, compile=compile)
    agent._num_updates = 1  # past the seed phase: no pretraining burst, act() plans
    if case["mode"] == "update":
        replay = _FakeReplay(case["obs"])
        return agent, lambda: agent.update(replay, 1)
    obs = {"state": np.random.default_rng(0).standard_normal(OBS_DIM).astype(np.float32)}
    agent.act(obs, 0, True)
    return agent, lambda: agent.act(obs, 0, True)


def _summary(times: list[float], per_block: int, mode: str) -> dict:
    vals = sorted(per_block / t if mode == "update" else 1000 * t / per_block for t in times)
    return {"median": round(statistics.median(vals), 3), "min": round(vals[0], 3), "max": round(vals[-1], 3)}


def run_case(name: str, args) -> dict:
    case = CASES[name]
    per_block = args.per_block or case["per_block"]
    agent, step = build_ours(case, compile=args.compile)
    res = {"case": name, **case, "per_block": per_block, "threads": args.threads, "params": agent.model.total_params,
           "compile": args.compile, "ref_compile": args.ref_compile}
    worker = None
    if os.environ.get("REF_TDMPC2") and not args.no_ref:
        harness = os.environ.get("REF_HARNESS", "/work/shared/bench/ref_tdmpc2_updates.py")
        py = os.environ.get("REF_PYTHON", sys.executable)
        cmd = [py, "-c", _WORKER, harness, case["mode"], case["obs"], str(case["model_size"]), str(args.threads),
               str(int(args.ref_compile))]
        worker = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        line = ["?"]
        while line and line[0] != "ready":  # the reference prints its episode length and discount first
            line = worker.stdout.readline().split()
        if not line:
            raise RuntimeError(f"reference worker failed to start (see its stderr above): {line}")
        res["ref_params"] = int(line[1])

    def ref_block(n: int) -> float:
        worker.stdin.write(f"{n}\n")
        worker.stdin.flush()
        return float(worker.stdout.readline())

    for _ in range(args.warmup):
        step()
    if worker:
        ref_block(args.warmup)
    ours, ref = [], []
    for _ in range(args.blocks):
        t = time.perf_counter()
        for _ in range(per_block):
            step()
        ours.append(time.perf_counter() - t)
        if worker:
            ref.append(ref_block(per_block))
    key = "updates_per_s" if case["mode"] == "update" else "ms_per_action"
    res[key] = _summary(ours, per_block, case["mode"])
    if worker:
        worker.stdin.close()
        worker.wait()
        res["ref_" + key] = _summary(ref, per_block, case["mode"])
        # speed-up: >1 means robotrl is faster
        if case["mode"] == "update":
            res["speedup"] = round(res[key]["median"] / res["ref_" + key]["median"], 2)
        else:
            res["speedup"] = round(res["ref_" + key]["median"] / res[key]["median"], 2)
    if case["mode"] == "plan" and args.bf16:
        res["ms_per_action_bf16"] = _time_bf16_plan(case, args, per_block)
    return res


def _time_bf16_plan(case: dict, args, per_block: int) -> dict:
    _, step16 = build_ours(case, plan_bf16=True, compile=args.compile)
    for _ in range(args.warmup):
        step16()
    ts = []
    for _ in range(args.blocks):
        t = time.perf_counter()
        for _ in range(per_block):
            step16()
        ts.append(time.perf_counter() - t)
    return _summary(ts, per_block, "plan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="state1,state5,rgb5,plan5")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--per-block", type=int, default=0, help="0: the case's default")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-ref", action="store_true")
    p.add_argument("--bf16", action="store_true", help="also time planning with plan_bf16=True (opt-in)")
    p.add_argument("--compile", action="store_true", help="robotrl with compile=True (opt-in fused kernels)")
    p.add_argument("--ref-compile", action="store_true", help="the reference with its compile=True")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.cases.split(","):
        print(json.dumps(run_case(name, args)), flush=True)


if __name__ == "__main__":
    main()
