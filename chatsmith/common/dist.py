"""Process group helpers: one process is world size 1, `torchrun` starts the rest.

Every multi-process run is started by torchrun, which sets RANK, LOCAL_RANK and
WORLD_SIZE; without them these helpers answer as a single process and never touch
torch.distributed, so nothing else needs an `if distributed` branch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """What torchrun told this process (rank 0 of 1 when started by hand)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up: nccl on CUDA, gloo on CPU."""
    info = dist_info()
    if info.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist_info()


def local_device(device: torch.device) -> torch.device:
    """cuda -> cuda:LOCAL_RANK under torchrun; other devices are unchanged."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", dist_info().local_rank)
    return device


def is_main() -> bool:
    return dist_info().is_main


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over ranks (in place); a no-op for one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def threads_per_rank() -> int:
    """CPU threads each rank should use so the ranks on one machine do not oversubscribe it."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, (os.cpu_count() or 1) // local_world)
