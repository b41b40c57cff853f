"""The process group on CPU: two real ranks under gloo, as the deepspeed launcher starts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pretrain_runs import ROOT, cpu_env, free_port

# Each rank records whether DeepSpeed's segment was there under the name we compute, then all-reduces
# once after the names are gone and reports what it sees.
RANK = """
import json, torch
import torch.distributed as dist
from pipeline.training import distributed

existed = []
unlink = distributed.unlink_cpu_allreduce_segment
def recording_unlink(rank):
    existed.append(distributed.cpu_allreduce_segment(rank).exists())
    unlink(rank)
distributed.unlink_cpu_allreduce_segment = recording_unlink

rank, world, on_gpu = distributed.init_distributed()
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
dist.barrier()
print(json.dumps({"rank": rank, "world": world, "existed": existed, "sum": total.item(),
                  "left": distributed.cpu_allreduce_segment(rank).exists()}), flush=True)
dist.destroy_process_group()  # as the trainers end: a rank that exits with gloo's threads running can abort
"""


@pytest.mark.parametrize("world", [2, 1])  # one rank as a launcher starts it (LOCAL_SIZE set) gets a segment too
def test_cpu_ranks_leave_no_shared_memory_segments_behind(world):
    port = str(free_port())
    ranks = []
    for rank in range(world):
        env = cpu_env(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_SIZE=str(world),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
        )  # fmt: skip
        command = [sys.executable, "-c", RANK]
        ranks.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [process.communicate(timeout=240) for process in ranks]
    for process, (_, err) in zip(ranks, outputs, strict=True):
        assert process.returncode == 0, err.decode()[-3000:]
    reports = sorted((json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs), key=lambda r: r["rank"])

    assert [r["world"] for r in reports] == [world] * world
    assert [r["sum"] for r in reports] == [world * (world + 1) / 2] * world
    # DeepSpeed made one segment per rank under the name computed here; it is gone while the ranks run
    assert [r["existed"] for r in reports] == [[True]] * world
    assert [r["left"] for r in reports] == [False] * world
    leftovers = sorted(p.name for p in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))
    assert leftovers == []


def test_a_lock_left_by_a_killed_build_of_the_cpu_op_is_removed_and_a_recent_one_kept(tmp_path):
    """torch waits for ever on the lock file of an extension build; a build killed half-way leaves one behind."""
    from pipeline.training.cpu_ops import STALE_LOCK_S, remove_stale_lock

    lock = tmp_path / "lock"
    lock.touch()
    assert not remove_stale_lock(tmp_path) and lock.exists()  # another process may be building right now
    old = lock.stat().st_mtime - STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    assert remove_stale_lock(tmp_path) and not lock.exists()
    assert not remove_stale_lock(tmp_path)  # nothing left to remove


def test_the_launcher_skips_the_cpu_op_check_only_while_its_stamp_describes_the_library_on_disk(tmp_path):
    from pipeline.training.cpu_ops import built_before, stamp_path, write_stamp

    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    library = tmp_path / "deepspeed_shm_comm.so"
    library.write_bytes(b"built")
    assert not built_before(env)  # never built from here
    write_stamp(library, env)
    assert stamp_path(env).parent == tmp_path / "cache" / "bertpipe" and built_before(env)
    assert not built_before({**env, "TORCH_EXTENSIONS_DIR": str(tmp_path / "elsewhere")})  # another cache
    later = library.stat().st_mtime_ns + 10**9
    os.utime(library, ns=(later, later))  # rebuilt since, by another environment
    assert not built_before(env)
    write_stamp(library, env)
    library.unlink()  # the cache was cleared
    assert not built_before(env)
    stamp_path(env).write_text("{not json")
    assert not built_before(env)


def test_cpu_runs_build_torch_extensions_in_a_directory_of_their_own_environment(tmp_path, monkeypatch):
    """torch's default directory is shared by every environment of the machine, which rebuild each other's op."""
    from pipeline.training import cpu_ops

    env = {"XDG_CACHE_HOME": str(tmp_path)}
    own = cpu_ops.extensions_directory(env)
    assert Path(own).parent == tmp_path / "torch_extensions"
    assert cpu_ops.extensions_directory({**env, "TORCH_EXTENSIONS_DIR": "/chosen"}) == "/chosen"
    cpu_ops.use_own_extensions_directory(env)
    assert env["TORCH_EXTENSIONS_DIR"] == own
    monkeypatch.setattr(sys, "prefix", "/elsewhere/.venv")
    assert cpu_ops.extensions_directory({"XDG_CACHE_HOME": str(tmp_path)}) != own  # another environment


def test_a_cpu_launch_that_built_the_op_leaves_a_stamp_the_next_launch_trusts():
    """The real build step (`python -m pipeline.training.cpu_ops`) writes the stamp for the library it loaded (in
    the machine's own cache, as every launch does: another cache would cost a build of a minute)."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    subprocess.run([sys.executable, "-m", "pipeline.training.cpu_ops"], env=env, check=True, timeout=600)
    from pipeline.training.cpu_ops import built_before, stamp_path

    assert built_before(env), stamp_path(env).read_text()
    library = Path(json.loads(stamp_path(env).read_text())["library"])
    assert library.name == "deepspeed_shm_comm.so"
    from pipeline.training.cpu_ops import extensions_directory

    assert library.is_relative_to(extensions_directory(env))  # this environment's own directory
