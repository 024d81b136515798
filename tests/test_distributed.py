"""Data-parallel learner (robotrl.distributed): 2 gloo processes on loopback end an update with the same parameters
as one process on the concatenated batch, for a plain model and for TD-MPC2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from robotrl.types import Trajectories

WORLD = 2
# deterministic TD-MPC2: state obs, no dropout, 2 Q members (min/avg of "two random members" is then order-free),
# a policy std of e^-20 (the sampled action is the mean), no dormant diagnostic
TDMPC2 = {"model_size": 1, "latent_dim": 16, "mlp_dim": 32, "enc_dim": 32, "num_q": 2, "dropout": 0.0,
          "log_std_min": -20.0, "log_std_max": -20.0, "dormant_every": 0, "lr": 1e-3, "seed": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, out_dir, *args) -> list[dict[str, torch.Tensor]]:
    """Run ``fn(rank, *args)`` in WORLD gloo processes on loopback (forked: no re-import); their results, by rank."""
    port = free_port()
    mp.start_processes(_init_and_run, args=(port, fn, str(out_dir), args), nprocs=WORLD, start_method="fork")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def _init_and_run(rank: int, port: int, fn, out_dir: str, args) -> None:
    from robotrl.distributed import destroy_process_group, init_distributed

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)})
    ctx = init_distributed("cpu", timeout_s=120)
    assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, WORLD, "gloo")
    try:
        torch.save(fn(rank, *args), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        destroy_process_group()


def shard(x: torch.Tensor, rank: int | None, dim: int = 0) -> torch.Tensor:
    return x if rank is None else x.chunk(WORLD, dim=dim)[rank]


# ------------------------------------------------------------------------------------------------ plain model
def mlp_step(rank: int | None) -> dict[str, torch.Tensor]:
    """Two Adam steps of an MLP (with a parameter that gets no gradient) on rank's half of a fixed batch, or on all of
    it when rank is None; gradients clipped as the agents do."""
    from robotrl.distributed import all_reduce_gradients

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    unused = torch.nn.Linear(2, 2)
    params = [*net.parameters(), *unused.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)
    for _ in range(2):
        loss = ((net(shard(x, rank)) - shard(y, rank)) ** 2).mean()
        loss.backward()
        all_reduce_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    # a batch statistic over every rank's samples: TD-MPC2's Q scale (5th-95th percentile range, EMA)
    from robotrl.agents.tdmpc2_math import RunningScale

    from robotrl.distributed import all_gather_cat

    scale = RunningScale(tau=0.5)
    scale.update(all_gather_cat(shard(torch.linspace(0, 10, 16)[torch.randperm(16, generator=g)][:, None], rank)))
    out["scale"] = scale.value.clone()
    return out


def test_all_reduce_gradients_equals_one_process_on_the_concatenated_batch(tmp_path):
    reference = mlp_step(None)
    assert reference["scale"].item() == pytest.approx(0.5 + 0.5 * 9.0)  # (p95 - p5 of 0..10) = 9, EMA from 1
    ranks = spawn(mlp_step, tmp_path)
    for key, value in reference.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # the ranks never drift apart
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6)
    half = mlp_step(0)  # one process on half the batch differs: the test can tell
    assert not torch.allclose(half["net.0.weight"], reference["net.0.weight"]) and half["scale"] != reference["scale"]


def test_helpers_are_no_ops_in_one_process():
    from robotrl.distributed import DistContext, all_gather_cat, all_reduce_gradients, init_distributed

    assert init_distributed("cpu") == DistContext() and DistContext().is_main
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    all_reduce_gradients([p])
    x = torch.arange(4.0)
    assert torch.equal(p.grad, torch.full((3,), 2.0)) and all_gather_cat(x) is x


def test_init_without_torchrun_variables_is_one_line_error(monkeypatch):
    from robotrl.distributed import init_distributed
    from robotrl.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set; start distributed"):
        init_distributed("cpu")


# ------------------------------------------------------------------------------------------------ TD-MPC2
def tdmpc2_batch(horizon: int = 3, batch: int = 16) -> Trajectories:
    g = torch.Generator().manual_seed(2)
    obs = {"state": torch.randn(horizon + 1, batch, 5, generator=g)}
    return Trajectories(obs, torch.rand(horizon, batch, 2, generator=g) * 2 - 1,
                        torch.randn(horizon, batch, 1, generator=g), torch.zeros(horizon, batch, 1))


def tdmpc2_step(rank: int | None) -> dict[str, torch.Tensor]:
    """Two TD-MPC2 updates (world model, Q ensemble, policy, target Qs, Q scale) on rank's half of the batch."""
    from robotrl.agents.tdmpc2 import TDMPC2Agent

    torch.manual_seed(0)  # the model's initial weights (the trainer seeds torch the same way on every rank)
    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    agent = TDMPC2Agent(obs_space, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "cpu", **TDMPC2)
    full = tdmpc2_batch()
    half = Trajectories({k: shard(v, rank, 1) for k, v in full.obs.items()}, shard(full.action, rank, 1),
                        shard(full.reward, rank, 1), shard(full.terminated, rank, 1))
    for _ in range(2):
        agent.update_from(half)
    out = {f"model.{k}": v.detach().clone() for k, v in agent.model.state_dict().items()}
    out["scale"] = agent.scale.value.clone()
    return out


def test_tdmpc2_ddp_update_equals_one_process_on_the_concatenated_batch(tmp_path):
    reference = tdmpc2_step(None)
    ranks = spawn(tdmpc2_step, tmp_path)
    for key, value in reference.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)
    half = tdmpc2_step(0)
    assert not torch.allclose(half["model._dynamics.0.weight"], reference["model._dynamics.0.weight"])


# ------------------------------------------------------------------------------------------------ trainer
def test_rank_config(compose_cfg):
    from robotrl.distributed import DistContext
    from robotrl.errors import ConfigError
    from robotrl.workflows.train import rank_config

    cfg = compose_cfg("agent=tdmpc2", "seed=5", tiny=False)
    assert rank_config(cfg, DistContext()) is cfg  # one process: unchanged
    main, other = rank_config(cfg, DistContext(0, 2, 0, "gloo")), rank_config(cfg, DistContext(1, 2, 1, "gloo"))
    assert (main.seed, main.eval_episodes, main.save_video) == (5, cfg.eval_episodes, cfg.save_video)
    assert (other.seed, other.eval_episodes, other.save_video, other.tensorboard) == (6, 0, False, False)
    assert cfg.seed == 5  # the caller's config is not modified
    with pytest.raises(ConfigError, match="gym/hopper: data-parallel training needs episodes of one fixed length"):
        rank_config(compose_cfg("agent=tdmpc2", "env=gym/hopper", tiny=False), DistContext(0, 2, 0, "gloo"))


def torchrun(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
            "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "-m", "robotrl.cli", "train",
            *overrides]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_torchrun_trains_tdmpc2_on_two_gloo_ranks(tmp_path):
    from tests.test_tdmpc2 import TINY_CFG

    run_dir = tmp_path / "run"
    proc = torchrun(tmp_path, *TINY_CFG, "frames=300", "agent.dormant_every=0", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["distributed"] == {"world_size": 2, "backend": "gloo"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["seed"] == 1 and summary["frames"] >= 300
    assert proc.stdout.count("training dmc/cartpole_balance") == 1  # rank 0 alone prints
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == [".hydra"]
    # an agent without a data-parallel learner: one line, exit 2 (from each rank), nothing trained
    from tests.conftest import TINY_OVERRIDES

    bad = torchrun(tmp_path, *TINY_OVERRIDES, f"run_dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "robotrl: error: agent=drqv2 has no data-parallel learner" in bad.stderr
