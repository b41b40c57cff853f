"""BERT architecture config: presets, validation, and Hugging Face `config.json` I/O."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.checkpoint import atomic_write_bytes
from preprocessing.errors import BertpipeError, MissingInputError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

# Activations accepted in `hidden_act`, with the names Hugging Face configs use for them.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "base": {
        "num_hidden_layers": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "large": {
        "num_hidden_layers": 24,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}

# Keys Hugging Face writes into every config.json that say nothing about the architecture.
_HF_BOOKKEEPING_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "model_type",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "use_cache",
        "gradient_checkpointing",
        "problem_type",
        "output_past",
        "directionality",
        "pooler_fc_size",
        "pooler_num_attention_heads",
        "pooler_num_fc_layers",
        "pooler_size_per_head",
        "pooler_type",
        "tie_word_embeddings",
    }
)

# Hugging Face features this implementation does not have; loading a config that turns one on
# would silently compute something else, so it is refused.
_UNSUPPORTED_HF_SETTINGS: dict[str, Any] = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}


class ConfigError(BertpipeError, ValueError):
    """A config value, or a combination of values, that cannot describe a BERT model."""


@dataclass
class BertConfig:
    """The architecture of a BERT model; field names are Hugging Face's `BertConfig` names."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Task heads: dropout before the classifier (None: hidden_dropout_prob) and the label names.
    classifier_dropout: float | None = None
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        self.validate()

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        """Raise ConfigError naming the values that clash; return quietly when the config is usable."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; choose a head count that divides the hidden size "
                f"(for example {_divisor_hint(self.hidden_size, self.num_attention_heads)})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported; use one of {list(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if self.initializer_range <= 0:
            raise ConfigError(f"initializer_range must be positive, got {self.initializer_range!r}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id={self.pad_token_id} is outside the vocabulary (vocab_size={self.vocab_size})"
            )
        if sorted(self.id2label) != list(range(len(self.id2label))) or not self.id2label:
            raise ConfigError(f"id2label must map the ids 0..N-1 with no gaps, got ids {sorted(self.id2label)}")
        if len(set(self.id2label.values())) != len(self.id2label):
            raise ConfigError(f"id2label has duplicate label names: {sorted(self.id2label.values())}")

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BertConfig:
        """A preset (`tiny`, `mini`, `base`, `large`) with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Strict construction: an unknown key is an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown BERT config key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> BertConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- Hugging Face config.json --------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Read a Hugging Face BERT config dict, refusing settings that change the architecture."""
        model_type = values.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigError(f"config has model_type={model_type!r}; only 'bert' checkpoints can be loaded")
        for key, supported in _UNSUPPORTED_HF_SETTINGS.items():
            if key in values and values[key] != supported:
                raise ConfigError(f"config sets {key}={values[key]!r}; only {key}={supported!r} is supported")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "id2label" not in values and "num_labels" in values:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(values["num_labels"]))}
        ignored = sorted(
            set(values) - known - _HF_BOOKKEEPING_KEYS - set(_UNSUPPORTED_HF_SETTINGS) - {"label2id", "num_labels"}
        )
        if ignored:
            logger.info("config.json keys not used by this BERT implementation: %s", ignored)
        return cls(**kwargs)

    def to_hf_dict(self, architecture: str | None = None) -> dict[str, Any]:
        values = self.to_dict()
        values["id2label"] = {str(i): label for i, label in self.id2label.items()}
        values["label2id"] = self.label2id
        values.update(model_type="bert", position_embedding_type="absolute", dtype="float32")
        if architecture:
            values["architectures"] = [architecture]
        return dict(sorted(values.items()))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> BertConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise MissingInputError(f"no {CONFIG_NAME} in {directory}; is this a model directory?")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from err
        return cls.from_hf_dict(values)

    def save_pretrained(self, directory: str | os.PathLike[str], architecture: str | None = None) -> Path:
        path = Path(directory) / CONFIG_NAME
        text = json.dumps(self.to_hf_dict(architecture), indent=2) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))
        return path


def _divisor_hint(hidden_size: int, heads: int) -> int:
    """The divisor of hidden_size nearest to the requested head count."""
    divisors = [d for d in range(1, hidden_size + 1) if hidden_size % d == 0]
    return min(divisors, key=lambda d: (abs(d - heads), d))
