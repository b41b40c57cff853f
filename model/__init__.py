"""The BERT network: config and presets, encoder, pretraining and task heads, HF-format I/O."""

from model.checkpoint import CheckpointError, LoadReport
from model.config import PRESETS, BertConfig, ConfigError
from model.encoder import BertModel
from model.heads import IGNORE_INDEX, cross_entropy_and_counts, gather_positions
from model.models import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    ClassificationOutput,
    PreTrainingOutput,
    QuestionAnsweringOutput,
)

__all__ = [
    "IGNORE_INDEX",
    "PRESETS",
    "BertConfig",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "CheckpointError",
    "ClassificationOutput",
    "ConfigError",
    "LoadReport",
    "PreTrainingOutput",
    "QuestionAnsweringOutput",
    "cross_entropy_and_counts",
    "gather_positions",
]
