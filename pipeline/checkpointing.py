"""DeepSpeed checkpoints with a `latest` pointer that moves only after every rank finished writing.

Layout under `<output>/checkpoints/`: one directory per tag (`step00000120`) as DeepSpeed writes it,
plus `trainer_state_rank<R>.pt` per rank (RNG states and data position, which differ per rank), and
`latest`, a one-line file naming the newest complete tag (DeepSpeed's own convention, so its tools
read it too). A save that fails on any rank leaves `latest` where it was.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from model.checkpoint import atomic_write_bytes

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
        raise FileNotFoundError(f"{pointer} names checkpoint {tag!r}, which is missing from {directory}")
    return tag


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
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


def load(engine: Any, directory: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model, optimizer, lr scheduler and loss scaler through DeepSpeed; then this rank's own state."""
    path, client_state = engine.load_checkpoint(
        str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise FileNotFoundError(f"DeepSpeed could not load checkpoint {tag} from {directory}")
    state_file = rank_state_path(directory, tag, dist.get_rank())
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{state_file} is missing: checkpoint {tag} was written by a run with fewer ranks or is incomplete"
        )
    rank_state = torch.load(state_file, map_location="cpu", weights_only=False)
    return client_state or {}, rank_state


def _serialize(state: dict[str, Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def ensure_directory(path: Path) -> Path:
    os.makedirs(path, exist_ok=True)
    return path
