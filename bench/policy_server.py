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

``--clients N [--hz F] [--requests R]``: N concurrent pixel clients (DrQ-v2, 84x84 x 3 frames) against one server
with its default 2 worker threads, in its own process (as on a GPU machine: the clients' threads do not share its
GIL). Each client is a :class:`PolicyClient` with the deploy default timeout (2 s) on its own channel, sends R
requests, each when its previous reply has come (back to back with ``--hz 0``, else at most F per second, as a deploy
client at its control rate); all start together (barrier). Reported: latency p50/p99/max over all requests, the
calls that failed (DEADLINE_EXCEEDED: past the client's timeout), and the same numbers for one client alone in the
same run (the reference). Bounded: every client thread is joined, the server process is stopped and joined.
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
    from robotrl.workflows.policy import DETERMINISTIC_STEP as big
    from robotrl.workflows.policy_server import PolicyClient, PolicyServer, served_agent

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


def _serve(address_queue: Any, stop: Any, threads: int) -> None:
    """Child process: a random-weight DrQ-v2 behind a PolicyServer on loopback until ``stop`` is set."""
    from robotrl.workflows.policy_server import PolicyServer, served_agent

    torch.set_num_threads(threads)
    agent, _ = make_policy("drqv2")
    server = PolicyServer(served_agent(agent, {"env": ENV_CFG, "agent": "drqv2", "checkpoint": "random weights"}),
                          TOKEN).start()
    address_queue.put(server.address)
    stop.wait(3600)  # bounded even if the parent dies without setting it
    server.stop(0)


def _client_run(address: str, obs: list[dict[str, np.ndarray]], requests: int, hz: float,
                barrier: Any) -> tuple[list[float], list[str]]:
    from robotrl.workflows.policy_server import PolicyClient, PolicyServerError

    client = PolicyClient(address, TOKEN)  # timeout_s: the deploy default (2 s)
    times, errors = [], []
    try:
        client.actions(obs[0], 0)  # connect (not timed)
        barrier.wait(timeout=600)
        for i in range(requests):
            t0 = time.perf_counter()
            try:
                client.actions(obs[i % len(obs)], i)
                times.append(time.perf_counter() - t0)
            except PolicyServerError as exc:
                errors.append(exc.code or str(exc))
            if hz > 0:
                time.sleep(max(0.0, 1.0 / hz - (time.perf_counter() - t0)))
    finally:
        client.close()
    return times, errors


def concurrent_clients(clients: int, requests: int, hz: float, threads: int, n_obs: int) -> list[dict[str, Any]]:
    import multiprocessing as mp
    import threading

    ctx = mp.get_context("spawn")
    address_queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(address_queue, stop, threads), daemon=True)
    server.start()
    rows = []
    try:
        address = address_queue.get(timeout=600)
        _, env = make_policy("drqv2")
        obs = observations(env, n_obs)
        for n in (1, clients):  # one client alone: the reference, same server, same run
            results: list[tuple[list[float], list[str]]] = [([], [])] * n
            barrier = threading.Barrier(n)

            def run(k: int, results: list = results, barrier: Any = barrier) -> None:
                results[k] = _client_run(address, obs, requests, hz, barrier)

            workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=1800)
            wall = time.perf_counter() - t0
            times = [t for r in results for t in r[0]]
            errors = [e for r in results for e in r[1]]
            rows.append({"clients": n, "hz": hz, "requests": n * requests, "ok": len(times), "failed": len(errors),
                         "failed_codes": sorted(set(errors)), "p50_ms": round(pct(times, 50), 1) if times else None,
                         "p99_ms": round(pct(times, 99), 1) if times else None,
                         "max_ms": round(max(times) * 1e3, 1) if times else None,
                         "throughput_per_s": round(len(times) / wall, 1), "client_timeout_ms": 2000})
        if rows[0]["p99_ms"] and rows[1]["p99_ms"]:
            rows[1]["p99_ratio_vs_1_client"] = round(rows[1]["p99_ms"] / rows[0]["p99_ms"], 2)
    finally:
        stop.set()
        server.join(timeout=60)
        if server.is_alive():
            server.terminate()
            server.join(timeout=10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="null,drqv2,tdmpc2")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tdmpc2-requests", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--obs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=0, help="N concurrent pixel clients (0: the round trip)")
    parser.add_argument("--hz", type=float, default=0.0, help="with --clients: requests per second per client")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clients:
        for row in concurrent_clients(args.clients, args.requests, args.hz, args.threads, args.obs):
            print(json.dumps({"policy": "drqv2", **row, "threads": args.threads}), flush=True)
        return
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
