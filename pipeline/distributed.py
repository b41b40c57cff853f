"""The process group every DeepSpeed job here starts with: NCCL on GPUs, gloo on CPU, and a world of one
when no launcher set the rank variables."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> tuple[int, int, bool]:
    """(rank, world size, on GPU). A run started without a launcher is a world of one."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    on_gpu = get_accelerator().device_name() == "cuda"
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend=None if on_gpu else "gloo", auto_mpi_discovery=False)
    return dist.get_rank(), dist.get_world_size(), on_gpu


def node_count(world_size: int) -> int:
    """Distinct hosts among the ranks (a collective)."""
    hosts: list[str | None] = [None] * world_size
    dist.all_gather_object(hosts, socket.gethostname())
    return len(set(hosts))
