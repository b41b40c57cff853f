"""The process group every DeepSpeed job here starts with: NCCL on GPUs, gloo on CPU, and a world of one
when no launcher set the rank variables."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.logs import prints_to_debug
from pipeline.training import cpu_ops

log = logging.getLogger(__name__)


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
    if not on_gpu:  # where the launcher pointed the op's build, also for a run started without it
        cpu_ops.use_own_extensions_directory(os.environ)
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    with prints_to_debug(log):  # on CPU each rank prints that DeepSpeed's communication op loaded
        deepspeed.init_distributed(dist_backend=None if on_gpu else "gloo", auto_mpi_discovery=False)
    if not on_gpu:  # a launcher's world of one gets a segment too
        dist.barrier()  # every rank has mapped its peers' segments: the names are no longer needed
        unlink_cpu_allreduce_segment(dist.get_rank())
    return dist.get_rank(), dist.get_world_size(), on_gpu


def cpu_allreduce_segment(rank: int) -> Path:
    """The /dev/shm segment DeepSpeed's CPU all-reduce creates for `rank` when all ranks share a host
    (named after the user, MASTER_ADDR and MASTER_PORT, as in its shm.cpp)."""
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}"
    return Path("/dev/shm") / f"{name}_{os.environ.get('MASTER_PORT', '')}_{rank}"


def unlink_cpu_allreduce_segment(rank: int) -> None:
    """DeepSpeed never unlinks its CPU all-reduce segment: every run on CPU would leave world size x
    ~66 MB in /dev/shm until reboot, and repeated runs fill it. Unlinking after all ranks have mapped
    it frees the name at once; the memory stays mapped until the processes exit, even if killed."""
    with contextlib.suppress(FileNotFoundError):
        cpu_allreduce_segment(rank).unlink()


def node_count(world_size: int) -> int:
    """Distinct hosts among the ranks (a collective)."""
    hosts: list[str | None] = [None] * world_size
    dist.all_gather_object(hosts, socket.gethostname())
    return len(set(hosts))
