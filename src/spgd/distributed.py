"""Sharing a run between the processes `torchrun` starts: which process this is, a barrier, a gather.

Under torchrun (WORLD_SIZE > 1 in the environment) a process group is set up: NCCL with one GPU per
process on CUDA, gloo on the CPU. Otherwise nothing of torch.distributed is touched and the run is
one process of a world of one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

# a process that finished its share waits at the barrier for the slowest one, possibly for hours
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Group:
    """This process's place among the processes of a run."""

    rank: int = 0
    world: int = 1

    def owns(self, index: int) -> bool:
        """Whether work item `index` is this process's (items are dealt round-robin)."""
        return index % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every process, by rank (picklable objects)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


@contextmanager
def process_group(device: str) -> Iterator[tuple[Group, str]]:
    """The process group of this run and the device this process uses (cuda -> cuda:LOCAL_RANK).

    On the CPU each process gets its share of the cores (OMP_NUM_THREADS, which torchrun sets to 1,
    else cores / processes on this machine) so that the processes do not oversubscribe them.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Group(), device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        if "OMP_NUM_THREADS" not in os.environ:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    try:
        yield Group(dist.get_rank(), dist.get_world_size()), device
    finally:
        dist.destroy_process_group()
