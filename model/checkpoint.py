"""Reading and writing model weights in the Hugging Face layout.

The functions here are pure over state dicts (key names in, key names out) except the two file
helpers at the bottom, so every rule about which keys a checkpoint may have is testable alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from preprocessing.errors import BertpipeError, MissingInputError

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
ENCODER_PREFIX = "bert."

# Tied aliases: Hugging Face checkpoints may or may not store them; both directions load.
TIED_ALIASES = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# Top-level modules of the task and pretraining heads: they sit beside `bert.`, not under it.
_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")
# Buffers older Hugging Face versions saved; they hold no learned state.
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Weight names of checkpoints converted from the original TensorFlow release.
_LEGACY_RENAMES = ((".gamma", ".weight"), (".beta", ".bias"))


class CheckpointError(BertpipeError, ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


@dataclass
class LoadReport:
    """What a load did beyond copying matching tensors."""

    initialized: list[str] = field(default_factory=list)  # absent in the checkpoint: new head weights
    ignored: list[str] = field(default_factory=list)  # present in the checkpoint, unused by this model


def canonical_state_dict(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own state dict without tied aliases: what goes into a file."""
    return {k: v for k, v in model_state.items() if k not in TIED_ALIASES}


def normalize_keys(checkpoint: Mapping[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys into the expected model's naming.

    Handles: saved buffers (dropped), TensorFlow-era `gamma`/`beta` names, a bare encoder loaded
    into a model with heads (keys gain `bert.`), a model with heads loaded into a bare encoder
    (keys lose `bert.`), and a decoder bias stored only under its tied alias.
    """
    expected = set(expected)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in checkpoint.items():
        if key.endswith(_BUFFER_SUFFIXES):
            continue
        for old, new in _LEGACY_RENAMES:
            if key.endswith(old) and "LayerNorm" in key:
                key = key[: -len(old)] + new
        state[key] = tensor

    model_has_prefix = any(k.startswith(ENCODER_PREFIX) for k in expected)
    checkpoint_has_prefix = any(k.startswith(ENCODER_PREFIX) for k in state)
    if model_has_prefix and not checkpoint_has_prefix:
        state = {(k if k.startswith(_HEAD_PREFIXES) else ENCODER_PREFIX + k): v for k, v in state.items()}
    elif checkpoint_has_prefix and not model_has_prefix:
        state = {k.removeprefix(ENCODER_PREFIX): v for k, v in state.items()}

    if "cls.predictions.bias" in expected and "cls.predictions.bias" not in state:
        alias = state.get("cls.predictions.decoder.bias")
        if alias is not None:
            state["cls.predictions.bias"] = alias
    return state


def match_state_dict(
    checkpoint: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    initializable_prefixes: tuple[str, ...],
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Select the checkpoint tensors the model takes, checking every shape.

    Keys of the model that the checkpoint lacks are an error unless they start with one of
    `initializable_prefixes` (task heads and the pooler, which a fine-tuning run trains anew).
    """
    wanted = canonical_state_dict(model_state)
    state = normalize_keys(checkpoint, wanted)
    report = LoadReport()
    selected: dict[str, torch.Tensor] = {}
    for key, target in wanted.items():
        if key not in state:
            report.initialized.append(key)
            continue
        tensor = state[key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(
                f"shape mismatch for {key}: checkpoint has {tuple(tensor.shape)}, model expects "
                f"{tuple(target.shape)}; does the config (vocab_size, hidden_size, num_labels, ...) match "
                f"the checkpoint?"
            )
        selected[key] = tensor
    report.ignored = sorted(k for k in state if k not in wanted and k not in TIED_ALIASES)
    missing = [k for k in report.initialized if not k.startswith(initializable_prefixes)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(
            f"checkpoint lacks {len(missing)} encoder weight(s) the model needs: {shown}; "
            f"it holds e.g. {sorted(state)[:3]}"
        )
    return selected, report


# ---- files ------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(state: Mapping[str, torch.Tensor], directory: Path) -> Path:
    """Write `model.safetensors` (contiguous CPU copies, no tied aliases) atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in canonical_state_dict(state).items()}
    path = directory / SAFETENSORS_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{SAFETENSORS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Read `model.safetensors`, or else `pytorch_model.bin` (tensors only, no pickled code)."""
    safetensors_path = directory / SAFETENSORS_NAME
    if safetensors_path.is_file():
        return load_file(str(safetensors_path))
    pytorch_path = directory / PYTORCH_NAME
    if pytorch_path.is_file():
        return torch.load(pytorch_path, map_location="cpu", weights_only=True)
    raise MissingInputError(
        f"no {SAFETENSORS_NAME} or {PYTORCH_NAME} in {directory}; sharded checkpoints are not supported, "
        f"merge them into one file first"
    )
