"""Data-parallel learning across processes with torch.distributed, started by ``torchrun``.

    torchrun --standalone --nproc_per_node=2 -m robotrl.cli train agent=tdmpc2 env=dmc/walker_walk
    torchrun --nnodes=2 --node_rank=0 --rdzv_endpoint=HEAD:29500 --nproc_per_node=8 -m robotrl.cli train ...

Every process (rank) runs its own env and replay (seed ``seed + rank``) and the same model; after each backward
pass the gradients are averaged over ranks with one all-reduce per parameter group (DDP's algorithm: equal shards,
averaged gradients give the gradient of the mean loss over the concatenated batch), so the ranks' parameters stay
identical and the effective batch is ``world_size x batch_size``. Rank 0 alone evaluates, logs and checkpoints.

We average gradients explicitly instead of wrapping the model in ``DistributedDataParallel`` because world models
are trained through several methods (encode, next, Q, pi) and two optimisers per update, while DDP only syncs
gradients of parameters used through one ``forward``. An agent opts in with ``Capabilities(distributed=True)`` and calls
:func:`all_reduce_gradients` after ``backward`` (and :func:`all_gather_cat` for batch statistics that must be computed
over the whole batch); both are no-ops in a single process, so the single-process path is unchanged.

Backend: ``nccl`` on CUDA devices, ``gloo`` on CPU. ``init_distributed`` reads torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from robotrl.errors import ConfigError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that evaluates, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "cpu", timeout_s: float = 7200.0) -> DistContext:
    """Join the process group torchrun set up (``gloo`` for CPU, ``nccl`` for CUDA); rank 0 of 1 without torchrun.

    ``timeout_s`` bounds how long a collective waits: rank 0 evaluates alone between updates, so it is generous.
    """
    if not launched_by_torchrun():
        return DistContext()
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; start "
                          f"distributed training with torchrun (e.g. torchrun --standalone --nproc_per_node=2 -m "
                          f"robotrl.cli train ...)")
    rank, world, local = (int(os.environ[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    cuda = str(device).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world, local, backend)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average ``params``' gradients over ranks in one flat all-reduce (a parameter without a gradient counts as
    zero on that rank, so every rank sends the same layout); no-op in a single process."""
    world = world_size()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for p in params:
        mean = flat[offset:offset + p.numel()].view_as(p)
        if p.grad is None:
            p.grad = mean.clone()
        else:
            p.grad.copy_(mean)
        offset += p.numel()


def all_gather_cat(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x`` of every rank concatenated along ``dim`` in rank order (for statistics over the whole batch, e.g.
    percentiles); ``x`` itself in a single process. Shapes must match across ranks."""
    world = world_size()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=dim)


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (identical models before the first update)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def destroy_process_group() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
