"""A DeepSpeed checkpoint of this trainer -> a Hugging Face model directory.

The weights are consolidated to fp32 whatever ZeRO stage and world size wrote them; the tokenizer
comes from the dataset the run trained on (preprocessing copies it beside the shards), so the
directory loads in `transformers` with `BertForPreTraining.from_pretrained` and
`AutoTokenizer.from_pretrained` alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from model import BertConfig, BertForPreTraining
from model.checkpoint import CheckpointError
from pipeline.training import checkpointing
from pipeline.training.weights import CHECKPOINTS, checkpoint_tag_dir, consolidated_state_dict, model_states
from preprocessing.errors import BertpipeError, MissingInputError, OutputExistsError
from preprocessing.tokenizer import TOKENIZER_CONFIG, load_tokenizer, tokenizer_files

EXPORT_INFO = "export_info.json"


class ExportError(BertpipeError, ValueError):
    """A checkpoint that cannot be exported as asked; the message says why."""


def select_tag_dir(checkpoint: Path, tag: str | None) -> Path:
    """The tag directory to export: `tag` when given, else the one `latest` names."""
    if tag is None:
        found = checkpoint_tag_dir(checkpoint)
        if found is None:
            raise ExportError(
                f"{checkpoint} is not a checkpoint of this trainer (a run's output directory, its checkpoints/ "
                f"directory or a step directory)"
            )
        return found
    for directory in (checkpoint, checkpoint / CHECKPOINTS):
        if (directory / tag).is_dir():
            return directory / tag
    tags = sorted(
        p.name
        for directory in (checkpoint, checkpoint / CHECKPOINTS)
        if directory.is_dir()
        for p in directory.iterdir()
        if checkpointing.TAG_PATTERN.match(p.name)
    )
    raise ExportError(f"no checkpoint tag {tag!r} in {checkpoint}; tags there: {', '.join(tags) or 'none'}")


def tokenizer_config(config: BertConfig, base: bytes) -> bytes:
    """tokenizer_config.json with the model's maximum length, so a tokenizer truncates where the model must."""
    values: dict[str, Any] = json.loads(base)
    values["model_max_length"] = config.max_position_embeddings
    return (json.dumps(values, indent=2) + "\n").encode("utf-8")


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    tag: str | None = None,
    tokenizer: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the HF directory `out` (atomically: a temporary sibling, then a rename)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.exists():
        raise MissingInputError(
            f"checkpoint {checkpoint} does not exist",
            hint="--checkpoint takes a run's output directory, its checkpoints/ directory or a step directory",
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} is not empty; pass --overwrite to replace it or choose another --out")
    tag_dir = select_tag_dir(checkpoint, tag)
    states = model_states(tag_dir)
    client_state = {k: states[k] for k in ("model_config", "dataset", "step", "world_size") if k in states}
    if "model_config" not in client_state:
        raise CheckpointError(f"{tag_dir} was not written by `bertpipe pretrain` (no model_config in its state)")
    config = BertConfig.from_dict(client_state["model_config"])
    tokenizer_dir = str(tokenizer) if tokenizer else str(client_state.get("dataset", ""))
    try:
        files = tokenizer_files(load_tokenizer(tokenizer_dir))
    except (OSError, ValueError) as error:
        raise ExportError(
            f"no tokenizer found in {tokenizer_dir} (the run's dataset); pass --tokenizer DIR ({error})"
        ) from error

    model = BertForPreTraining(config)
    model.load_pretrained_state(consolidated_state_dict(tag_dir))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        files[TOKENIZER_CONFIG] = tokenizer_config(config, files[TOKENIZER_CONFIG])
        for name, data in files.items():
            (staging / name).write_bytes(data)
        stage = states.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0)
        info = {
            "checkpoint": str(tag_dir.resolve()),
            "tag": tag_dir.name,
            "step": client_state.get("step"),
            "zero_stage": stage,
            "world_size": client_state.get("world_size"),
            "model_safetensors_sha256": hashlib.sha256((staging / "model.safetensors").read_bytes()).hexdigest(),
        }
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
