"""Weights to start from, wherever they live: a Hugging Face style model directory, or a DeepSpeed
checkpoint of this trainer (a run's output directory, its `checkpoints/` directory or one tag in it),
consolidated to fp32 whatever ZeRO stage and world size wrote it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model.checkpoint import CheckpointError, load_weights
from model.config import BertConfig
from pipeline.logs import prints_to_debug
from pipeline.training import checkpointing
from preprocessing.errors import MissingInputError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
# mp_rank_00_model_states.pt at stages 0-2; zero_pp_rank_{r}_mp_rank_00_model_states.pt, one per rank, at
# stage 3 (each holds the client state; the weights are in the optimizer states).
MODEL_STATES = "*mp_rank_*_model_states.pt"


def checkpoint_tag_dir(path: Path) -> Path | None:
    """The DeepSpeed tag directory `path` designates, or None if it is not a DeepSpeed checkpoint."""
    for candidate in (path, path / CHECKPOINTS):
        if (candidate / checkpointing.LATEST).is_file():
            return candidate / checkpointing.latest_tag(candidate)
    if path.is_dir() and any(path.glob(MODEL_STATES)):
        return path
    return None


def model_config_of(path: Path) -> BertConfig | None:
    """The model config stored with a model directory or a checkpoint of this trainer."""
    if (path / "config.json").is_file():
        return BertConfig.from_pretrained(path)
    tag_dir = checkpoint_tag_dir(path)
    if tag_dir is not None:
        client_state = model_states(tag_dir)
        if "model_config" in client_state:
            return BertConfig.from_dict(client_state["model_config"])
    return None


def model_states(tag_dir: Path) -> dict:
    files = sorted(tag_dir.glob(MODEL_STATES))
    if not files:
        raise CheckpointError(f"{tag_dir} holds no DeepSpeed model states (mp_rank_00_model_states.pt)")
    return checkpointing.load_tensors_only(files[0])


def consolidated_state_dict(tag_dir: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of a DeepSpeed checkpoint tag, from any ZeRO stage."""
    checkpointing.vet_checkpoint(tag_dir)
    states = model_states(tag_dir)
    stage = states.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0)
    if stage == 0 or not any(tag_dir.glob("*optim_states.pt")):
        return {name: tensor.float() for name, tensor in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with prints_to_debug(log):  # it prints each step of its work and a progress bar
        return get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)


def load_initial_weights(model: torch.nn.Module, source: str | Path) -> None:
    """Load `source` into `model` (every weight must be present and of the right shape)."""
    path = Path(source)
    if not path.exists():
        raise MissingInputError(f"--init-from {source}: no such directory")
    tag_dir = checkpoint_tag_dir(path)
    if tag_dir is not None:
        state = consolidated_state_dict(tag_dir)
        where = f"DeepSpeed checkpoint {tag_dir}"
    elif (path / "config.json").is_file():
        state = load_weights(path)
        where = f"model directory {path}"
    else:
        raise CheckpointError(
            f"--init-from {source} is neither a model directory (config.json + weights) nor a checkpoint of this "
            f"trainer (a run's output directory, its checkpoints/ directory or a step directory)"
        )
    try:
        model.load_pretrained_state(state)  # raises on a missing or misshapen weight
    except CheckpointError as error:
        raise CheckpointError(f"{where}: {error}") from error
    log.info("initial weights from %s", where)
