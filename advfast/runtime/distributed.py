"""torch.distributed under torchrun: process-group set-up, sharded loading, and rank-0-only side effects."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass
class DistContext:
    """This process's place in the job: rank 0 of 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or the default when None: CUDA when a GPU is available, else the CPU. An unknown name, or
    CUDA on a machine without it, is an error naming ``device``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a device name such as cpu, cuda or cuda:1, got {device!r}") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine (or this torch build) has no CUDA device")
    return chosen


def setup(device: str | None = None) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on the CPU.
    Each process uses the GPU of its LOCAL_RANK. Without torchrun: one process on ``device``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    chosen = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, chosen)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _collate_batch(batch: Any) -> Any:
    """Batches arrive whole from TensorImages.__getitems__; other data sets give a list of pairs."""
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    return torch.utils.data.default_collate(batch)


class ShardSampler(Sampler[int]):
    """This rank's share of an epoch's order, resumable mid-epoch.

    The epoch's order is ``randperm(n)`` seeded by ``seed + epoch`` (or ``0..n-1`` unshuffled), padded by
    wrapping around to a multiple of the world size (or truncated with ``drop_last``); rank r takes positions
    r, r + N, r + 2N, ... So with a per-rank batch b, step j of all N ranks covers exactly positions
    [jNb, (j+1)Nb) of the order: the batch one process with batch size Nb would take.
    """

    def __init__(self, n: int, ctx: DistContext, *, shuffle: bool, seed: int, drop_last: bool) -> None:
        self.n, self.ctx, self.shuffle, self.seed, self.drop_last = n, ctx, shuffle, seed, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate ``epoch``'s order from this rank's ``start``-th sample (to resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        world = self.ctx.world_size
        if self.drop_last:
            return order[: len(order) - len(order) % world]
        padding = (-len(order)) % world
        return order + order[:padding]

    def __iter__(self):
        return iter(self._order()[self.ctx.rank :: self.ctx.world_size][self.start :])

    def __len__(self) -> int:
        return max(0, len(self._order()) // self.ctx.world_size - self.start)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    ctx: DistContext,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
) -> DataLoader:
    """A loader over this rank's shard (its sampler is a :class:`ShardSampler`). ``batch_size`` is the global
    batch: each of the N ranks takes batch_size / N samples. ``collate_fn``: how a list of items becomes a
    batch (default: image tensors, whole or stacked; text: a tokenizing collate)."""
    if batch_size % ctx.world_size:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {ctx.world_size}")
    sampler = ShardSampler(len(dataset), ctx, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size // ctx.world_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate_fn or _collate_batch,
    )


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum over ranks (identity in one process)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any (all ranks must call): a decision such as stopping on a
    signal, which may reach the processes at different steps, then happens at the same step everywhere."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list in one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
