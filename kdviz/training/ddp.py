"""Everything torchrun: the environment it sets, the process group, and what the ranks must agree on.

This is the one module that reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` or talks to
``torch.distributed``; the rest of kdviz is handed a :class:`DistContext` (or a rank, a world size
and a barrier) and works the same in one process as in many.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DistContext:
    """Where this process stands under torchrun (rank 0 of 1 otherwise)."""

    rank: int = 0
    world: int = 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait here until every rank has arrived (nothing to wait for in one process)."""
        if self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def default_backend() -> str:
    """nccl with CUDA (unless ``KDVIZ_DEVICE=cpu``), gloo on the CPU."""
    return "nccl" if torch.cuda.is_available() and os.environ.get("KDVIZ_DEVICE", "cuda") != "cpu" else "gloo"


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the torchrun process group when there is one (``backend`` or :func:`default_backend`)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend or default_backend())
    return DistContext(dist.get_rank(), dist.get_world_size())


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (a no-op in one process)."""
    if ctx.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def local_device(device: str, ctx: DistContext) -> str:
    """Under torchrun each rank takes the GPU of its ``LOCAL_RANK``; a CPU device stays as it is."""
    if ctx.world > 1 and device.startswith("cuda"):
        return f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    return device


def wrap(model: nn.Module, ctx: DistContext, device: str) -> nn.Module | None:
    """The DistributedDataParallel wrapper that averages gradients over the ranks (None in one process)."""
    if ctx.world <= 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    return DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def synced_stop(
    should_stop: Callable[[], bool] | None, ctx: DistContext, device: str
) -> Callable[[], bool] | None:
    """Under DDP a stop must be agreed by all ranks, or one would wait forever for the others."""
    if ctx.world <= 1:
        return should_stop
    import torch.distributed as dist

    def check() -> bool:
        flag = torch.tensor([1.0 if should_stop and should_stop() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    return check


def replica_checksums(model: nn.Module, ctx: DistContext, device: str = "cpu") -> list[float]:
    """The sum of every weight on each rank: equal on all ranks when DDP kept the replicas in step."""
    total = torch.tensor(
        [sum(float(p.detach().double().sum()) for p in model.parameters())],
        dtype=torch.float64,
        device=device,
    )
    if ctx.world <= 1:
        return [float(total.item())]
    import torch.distributed as dist

    gathered = [torch.zeros_like(total) for _ in range(ctx.world)]
    dist.all_gather(gathered, total)
    return [float(t.item()) for t in gathered]
