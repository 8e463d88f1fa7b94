"""Processes and threads for torch: joining a torchrun DDP group, and how many intra-op CPU threads to use.

Shared by the lip and GAN training (DDP), the fit, lip prediction and the GAN benchmark (threads), so every caller
picks its device and thread count the same way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the torchrun process group if launched by torchrun (WORLD_SIZE > 1), else a single process. The device is
    this process's GPU (LOCAL_RANK, made current) when CUDA is present, else the CPU (gloo backend)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world == 1:
        return Distributed(0, 1, device)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def choose_threads(requested: int) -> int:
    """``requested`` threads, or for 0 the idle cores (at least 1): on a machine whose cores other processes
    already keep busy, intra-op threads spin-wait on each other and two threads ran 3x slower than one."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(torch.get_num_threads(), int(cores - busy + 1.0)))  # load < 1 on 2 cores: both


@contextlib.contextmanager
def torch_threads(requested: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op CPU thread count to ``choose_threads(requested)`` (0 = the idle cores), restored
    afterwards; None leaves it as it is."""
    previous = torch.get_num_threads()
    if requested is not None:
        torch.set_num_threads(choose_threads(requested))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
