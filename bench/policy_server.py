"""Policy-server round trip on loopback vs in-process inference, same agent, same observations, same run.

Remote: ``PolicyClient.actions(obs, step)``, the blocking call `robotrl deploy server=...` makes when its action
queue is empty: encode the observation, gRPC over 127.0.0.1 with the token, decode and shape-check it on the
server, ``agent.act`` (eval mode, behind the server's lock), encode the (1, A) chunk, decode it on the client.
Local: ``agent.act`` on the same observation object, as deploy's local policy calls it. The server runs in this
process (its gRPC worker threads; the client thread waits on the future, holding no GIL), on the same CPU threads,
so the difference is the transport and (de)serialization, not a second machine.

Policies are trained-size networks with random weights (timing does not depend on the weights; the remote
action is checked equal to the local one): DrQ-v2 with drqv2.yaml's sizes (84x84 pixels, 3 stacked frames: a 64 KB
observation) and TD-MPC2 with tdmpc2.yaml's (model_size 5, MPPI planning; ~1 s per action on the 2-core machine, so
few requests), plus ``null``, a policy that returns zeros at once: the transport alone. Observations are
``--obs`` frame stacks rendered from Meta-World reach with random actions. Calls alternate in blocks (local block,
remote block, local, ...) so that load from other jobs hits both alike.

Run: ``MUJOCO_GL=egl OMP_NUM_THREADS=1 .venv/bin/python bench/policy_server.py [--policies null,drqv2,tdmpc2]
[--requests 200] [--tdmpc2-requests 8] [--blocks 4] [--obs 20] [--threads 1]``; one JSON line per policy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control_loop import ENV_CFG, make_policy  # noqa: E402  (the same random-weight agents as the control loop)

TOKEN = "bench-token"


class NullAgent:
    """Returns zeros at once: what is left of a round trip is the transport."""

    def __init__(self, env: Any) -> None:
        self.observation_space, self.action_space = env.observation_space, env.action_space

    def act(self, obs: dict[str, np.ndarray], step: int, eval_mode: bool) -> np.ndarray:
        return np.zeros(self.action_space.shape, np.float32)


def observations(env: Any, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    out = [obs]
    while len(out) < n:
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        out.append(obs)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def measure(name: str, agent: Any, obs: list[dict[str, np.ndarray]], requests: int, blocks: int) -> dict[str, Any]:
    from robotrl.workflows.policy_server import PolicyClient, PolicyServer, served_agent

    big = int(torch.iinfo(torch.int64).max)
    served = served_agent(agent, {"env": ENV_CFG, "agent": name, "checkpoint": "random weights"})
    server = PolicyServer(served, TOKEN).start()
    client = PolicyClient(server.address, TOKEN, timeout_s=30.0)
    local: list[float] = []
    remote: list[float] = []
    try:
        client.actions(obs[0], 0)  # connect and warm up both paths
        agent.act(obs[0], big, eval_mode=True)
        per_block = max(1, requests // blocks)
        for b in range(blocks):
            for i in range(per_block):
                o = obs[(b * per_block + i) % len(obs)]
                t0 = time.perf_counter()
                a_local = agent.act(o, big, eval_mode=True)
                local.append(time.perf_counter() - t0)
            for i in range(per_block):
                o = obs[(b * per_block + i) % len(obs)]
                t0 = time.perf_counter()
                a_remote = client.actions(o, b * per_block + i)[0]
                remote.append(time.perf_counter() - t0)
            # deterministic eval-mode policies: the server computed the same action (TD-MPC2's MPPI draws from
            # the agent's own generator, so its two calls differ; shape and finiteness are checked by the client)
            if name != "tdmpc2":
                np.testing.assert_array_equal(np.asarray(a_local, np.float32), a_remote)
    finally:
        client.close()
        server.stop()
    loc50, rem50 = pct(local, 50), pct(remote, 50)
    return {"policy": name, "obs_bytes": int(sum(v.nbytes for v in obs[0].values())), "requests": len(remote),
            "local_ms_p50": round(loc50, 3), "local_ms_p99": round(pct(local, 99), 3),
            "remote_ms_p50": round(rem50, 3), "remote_ms_p99": round(pct(remote, 99), 3),
            "overhead_ms_p50": round(rem50 - loc50, 3), "ratio_p50": round(rem50 / loc50, 3) if loc50 > 0 else None,
            "ratio_p99": round(pct(remote, 99) / pct(local, 99), 3) if pct(local, 99) > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="null,drqv2,tdmpc2")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tdmpc2-requests", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--obs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = None
    for name in args.policies.split(","):
        if name == "null":
            if env is None:
                _, env = make_policy("drqv2")
            agent = NullAgent(env)
        else:
            agent, env = make_policy(name)
        obs = observations(env, args.obs)
        n = args.tdmpc2_requests if name == "tdmpc2" else args.requests
        print(json.dumps({**measure(name, agent, obs, n, min(args.blocks, n)), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
