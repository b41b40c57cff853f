"""Weight initialisation and `save_pretrained` / `from_pretrained` shared by every model class."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from model.checkpoint import (
    SAFETENSORS_NAME,
    CheckpointError,
    LoadReport,
    load_weights,
    match_state_dict,
    save_weights,
)
from model.config import CONFIG_NAME, BertConfig
from preprocessing.errors import OutputExistsError

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound="PreTrainedMixin")


class PreTrainedMixin:
    """Mixed into an nn.Module whose `config` is a BertConfig.

    Subclasses name their Hugging Face architecture and the parameter prefixes a checkpoint may
    lack (heads a fine-tuning run trains from scratch).
    """

    config: BertConfig
    hf_architecture: ClassVar[str]
    initializable_prefixes: ClassVar[tuple[str, ...]] = ()

    def init_weights(self) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        for module in self.modules():  # type: ignore[attr-defined]
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())  # type: ignore[attr-defined]

    def load_pretrained_state(self, checkpoint: dict[str, torch.Tensor]) -> LoadReport:
        """Copy a (Hugging Face layout) state dict in; shapes are checked, absent heads reported."""
        selected, report = match_state_dict(
            checkpoint,
            self.state_dict(),  # type: ignore[attr-defined]
            self.initializable_prefixes,
        )
        self.load_state_dict(selected, strict=False)  # type: ignore[attr-defined]
        if report.initialized:
            logger.warning("newly initialised (not in the checkpoint): %s", report.initialized)
        if report.ignored:
            logger.info("checkpoint weights this model does not use: %s", report.ignored)
        return report

    def save_pretrained(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write `config.json` and `model.safetensors`, readable by Hugging Face `from_pretrained`."""
        directory = Path(directory)
        existing = [name for name in (CONFIG_NAME, SAFETENSORS_NAME) if (directory / name).exists()]
        if existing and not overwrite:
            raise OutputExistsError(
                f"{directory} already holds {existing}; pass overwrite=True to replace them or choose a new directory"
            )
        save_weights(self.state_dict(), directory)  # type: ignore[attr-defined]
        self.config.save_pretrained(directory, architecture=self.hf_architecture)
        return directory

    @classmethod
    def from_pretrained(cls: type[ModelT], directory: str | os.PathLike[str], **config_changes: Any) -> ModelT:
        """Load a Hugging Face style directory (config.json + model.safetensors or pytorch_model.bin).

        `config_changes` override config fields, e.g. `id2label` for a new classification head or
        dropout for fine-tuning; architecture fields must still match the weights.
        """
        directory = Path(directory)
        config = BertConfig.from_pretrained(directory)
        if config_changes:
            config = config.replace(**config_changes)
        model = cls(config)  # type: ignore[call-arg]
        try:
            model.load_pretrained_state(load_weights(directory))
        except CheckpointError as err:
            raise CheckpointError(f"{directory}: {err}") from err
        return model
