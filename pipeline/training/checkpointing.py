"""DeepSpeed checkpoints with a `latest` pointer that moves only after every rank finished writing.

Layout under `<output>/checkpoints/`: one directory per tag (`step00000120`) as DeepSpeed writes it,
plus `trainer_state_rank<R>.pt` per rank (RNG states and data position, which differ per rank), and
`latest`, a one-line file naming the newest complete tag (DeepSpeed's own convention, so its tools
read it too). A save that fails on any rank leaves `latest` where it was.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from model.checkpoint import CheckpointError, atomic_write_bytes

log = logging.getLogger(__name__)

LATEST = "latest"
TAG_PATTERN = re.compile(r"^step(\d{8,})$")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def step_of(tag: str) -> int:
    match = TAG_PATTERN.match(tag)
    if not match:
        raise ValueError(f"{tag!r} is not a checkpoint tag of this trainer (stepNNNNNNNN)")
    return int(match.group(1))


def rank_state_path(directory: Path, tag: str, rank: int) -> Path:
    return directory / tag / f"trainer_state_rank{rank}.pt"


def latest_tag(directory: Path) -> str | None:
    """The newest complete checkpoint's tag, or None when there is none."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text(encoding="utf-8").strip()
    if not (directory / tag).is_dir():
        raise CheckpointError(
            f"{pointer} names checkpoint {tag!r}, which is missing from {directory}",
            hint=f"write the tag of a complete checkpoint (a step directory in {directory}) into {pointer}",
        )
    return tag


def rng_states() -> dict[str, Any]:
    """Every generator's state as tensors and plain values, so that `torch.load(weights_only=True)` reads it."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def _all_ranks_succeeded(ok: bool, device: torch.device) -> bool:
    flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() == 0


def save(
    engine: Any,
    directory: Path,
    step: int,
    client_state: dict[str, Any],
    rank_state: dict[str, Any],
    keep: int,
    device: torch.device,
) -> bool:
    """Collective: every rank calls it. True when the checkpoint is complete and `latest` names it."""
    tag = tag_for(step)
    rank = dist.get_rank()
    ok = True
    try:
        engine.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False)
        atomic_write_bytes(rank_state_path(directory, tag, rank), _serialize(rank_state))
    except Exception as error:  # any failure must reach the other ranks, or they would wait forever
        log.error("rank %d could not write checkpoint %s in %s: %s", rank, tag, directory, error)
        ok = False
    complete = _all_ranks_succeeded(ok, device)
    if complete and rank == 0:
        atomic_write_bytes(directory / LATEST, (tag + "\n").encode("utf-8"))
        prune(directory, keep)
    dist.barrier()
    if not complete and rank == 0:
        previous = latest_tag(directory)
        log.error("checkpoint %s is incomplete; the last usable checkpoint is %s", tag, previous or "none")
    return complete


def prune(directory: Path, keep: int) -> None:
    """Remove all but the `keep` newest complete checkpoints (never the one `latest` names)."""
    current = latest_tag(directory)
    tags = sorted((p.name for p in directory.iterdir() if p.is_dir() and TAG_PATTERN.match(p.name)), key=step_of)
    complete = [t for t in tags if current is not None and step_of(t) <= step_of(current)]
    for tag in complete[:-keep] if keep > 0 else []:
        if tag != current:
            shutil.rmtree(directory / tag, ignore_errors=True)


def deepspeed_safe_types() -> list[type]:
    """The only Python classes a DeepSpeed checkpoint of this trainer holds besides tensors and plain data:
    plain records with no behaviour on loading."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_tensors_only(path: Path) -> Any:
    """`torch.load` that builds tensors, plain data and `deepspeed_safe_types`, and nothing else: a pickle
    that names any other callable is refused before it can run."""
    try:
        with torch.serialization.safe_globals(deepspeed_safe_types()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        detail = f"it names {named.group(1)}" if named else "it is not a plain tensor file"
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain data ({detail}). "
            f"Loading it could run code from the file; bertpipe's own checkpoints never hold such objects, so "
            f"this file was not written by bertpipe or was altered"
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
    ) as error:  # cut short or damaged: torch names neither the file nor a way on
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"cannot read {path} ({first_line}): the file is cut short or damaged. To continue from an earlier "
            f"checkpoint, write its tag (a directory name beside {path.parent.name}) into "
            f"{path.parent.parent / LATEST}"
        ) from None


def vet_checkpoint(tag_dir: Path) -> None:
    """Read every `.pt` file of a checkpoint with `load_tensors_only` before DeepSpeed, which loads them with
    `weights_only=False`, is let near them."""
    for path in sorted(tag_dir.glob("*.pt")):
        load_tensors_only(path)


def load(engine: Any, directory: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model, optimizer, lr scheduler and loss scaler through DeepSpeed (after `vet_checkpoint`); then this
    rank's own state."""
    vet_checkpoint(directory / tag)
    path, client_state = engine.load_checkpoint(
        str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load checkpoint {tag} from {directory}")
    state_file = rank_state_path(directory, tag, dist.get_rank())
    if not state_file.is_file():
        raise CheckpointError(
            f"{state_file} is missing: checkpoint {tag} was written by a run with fewer ranks or is incomplete"
        )
    return client_state or {}, load_tensors_only(state_file)


def load_for_next_phase(engine: Any, tag_dir: Path, world_size: int) -> None:
    """Weights and optimizer state (moments and their step counts) of another run's checkpoint, for the next
    phase of a recipe as NVIDIA's phase 2 starts from phase 1. This run keeps its own step count, learning-rate
    schedule, data position and optimizer settings (learning rate, betas, weight decay from its config)."""
    partitions = len(list(tag_dir.glob("*_optim_states.pt")))  # ZeRO: one optimizer partition per rank
    if partitions > 1 and partitions != world_size:
        raise CheckpointError(
            f"{tag_dir} holds the optimizer state of {partitions} ranks in ZeRO partitions and this run has "
            f"{world_size}: run this phase on {partitions} ranks to carry the optimizer state, or leave "
            f"init_optimizer_state off to start from the weights alone"
        )
    vet_checkpoint(tag_dir)
    settings = [{k: v for k, v in group.items() if k != "params"} for group in engine.optimizer.param_groups]
    path, _ = engine.load_checkpoint(
        str(tag_dir.parent), tag=tag_dir.name, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load checkpoint {tag_dir}")
    for group, own in zip(engine.optimizer.param_groups, settings, strict=True):
        group.update(own)
    engine.global_steps = engine.global_samples = engine.skipped_steps = 0


def _serialize(state: dict[str, Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def ensure_directory(path: Path) -> Path:
    os.makedirs(path, exist_ok=True)
    return path
