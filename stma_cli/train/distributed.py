"""torchrun / DistributedDataParallel set-up: NCCL on CUDA, gloo on CPU."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stma_cli.errors import StmaError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) training run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); else single process."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size or local_rank < 0:
        raise StmaError(f"RANK={rank}, LOCAL_RANK={local_rank} with WORLD_SIZE={world_size}: not a process of this run")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank)


def all_reduce_mean(values: dict[str, float], context: DistributedContext, device: torch.device) -> dict[str, float]:
    """Average scalar metrics over all processes."""
    if not context.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: v / context.world_size for k, v in zip(keys, tensor.tolist())}


def any_process(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """Whether `flag` is true on any process: one decision that every process takes together (a stop decided
    on each process's own clock would leave the others waiting in a collective)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    """Leave the process group."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def _env_int(name: str, default: int | None = None) -> int:
    """An integer environment variable set by torchrun; StmaError names it if it is missing or not one."""
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StmaError(f"environment variable {name}={value!r}: expected an integer") from None
