"""Communication among the processes of a torchrun: this process's rank and the collectives that
models, hooks and the trainer call (the role of Pointcept's utils/comm.py).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a process started without them is a world of one
and nothing here communicates. Joining and leaving the process group, and wrapping the model in
DistributedDataParallel, are the engine's (voxseg.engine.process_group, voxseg.engine.trainer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

from voxseg.errors import ConfigError


@dataclass(frozen=True)
class Context:
    """This process's place in the run: rank among world_size processes, local_rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Context:
    """The context torchrun's environment variables describe (a world of one without them)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not in a world of WORLD_SIZE {world}")
    return Context(rank, world, local)


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def average(values: dict[str, float], ctx: Context, device: torch.device) -> dict[str, float]:
    """The mean of each value over the ranks (every rank passes the same keys)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / ctx.world_size).tolist(), strict=True))


def any_rank(flag: bool, ctx: Context, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def broadcast_buffers(model: torch.nn.Module, ctx: Context) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank. Under DDP each rank's
    last forward updated its own copy from its own scans."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_gather_rows(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every process's rows concatenated in rank order, where this process's rows start). The
    processes may hold different numbers of rows (n, ...), 0 included; a collective, so every
    process must call it. Outside a process group (or in a world of one): (rows, 0). Gradients
    do not flow through the gathered rows. torch.distributed's all_gather needs equal shapes:
    the row counts are gathered first and every process pads to the largest."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return rows, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([len(rows)], dtype=torch.long, device=rows.device)
    gathered_counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(gathered_counts, count)
    counts = [int(c) for c in gathered_counts]
    padded = rows.new_zeros((max(max(counts), 1), *rows.shape[1:]))
    padded[: len(rows)] = rows.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts, strict=True)]), sum(counts[:rank])


def shard(items: list, ctx: Context) -> list:
    """This rank's share of `items`: every world_size-th, starting at its rank."""
    return items[ctx.rank::ctx.world_size]


def gather_in_order(shard_results: Iterable, count: int, ctx: Context) -> Iterator:
    """Results of `count` items computed as `shard(items)` on every rank, yielded on rank 0 in the
    items' order (other ranks yield nothing). One round of gathering per world_size items, so rank 0
    holds one round at a time."""
    if not ctx.enabled:
        yield from shard_results
        return
    results = iter(shard_results)
    for first in range(0, count, ctx.world_size):
        mine = next(results) if first + ctx.rank < count else None
        gathered: list | None = [None] * ctx.world_size if ctx.is_main else None
        dist.gather_object(mine, gathered, dst=0)
        if gathered is not None:  # rank 0
            yield from gathered[: min(ctx.world_size, count - first)]
