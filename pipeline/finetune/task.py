"""What the fine-tuning loop needs from a task, and the padding of task features into batches.

A task turns its files into features (model inputs plus training targets), names the model class and
the metric that picks the best epoch, and turns the logits of an evaluated split (validation after every
epoch; test, when given, once for the best epoch) back into metrics and predictions. The loop
(`pipeline.finetune.trainer`) knows nothing else about it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from model.heads import IGNORE_INDEX
from pipeline.data.collate import padded_length
from pipeline.finetune.classification_data import Truncation

ModelInputs = dict[str, Any]  # input_ids, token_type_ids (lists) and the task's targets: one row of a batch
Split = Literal["validation", "test"]
VALIDATION: Split = "validation"
TEST: Split = "test"


@dataclass(frozen=True)
class TaskOptions:
    """Data options of every task; each task reads the ones it has."""

    max_seq_length: int = 128
    # classification
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    truncation: Truncation = "head"  # which tokens of a long text are kept
    # classification and NER: a validation or test label training never saw becomes this one (None: an error)
    map_unseen_label: str | None = None
    # QA
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0
    version_2: bool | None = None  # None: from the files (SQuAD 2.0 when any question is unanswerable)


@dataclass
class TaskData:
    train: list[ModelInputs]
    validation: list[ModelInputs]
    id2label: dict[int, str] | None = None  # None for heads without label names (QA)
    counts: dict[str, int] = field(default_factory=dict)  # skipped, truncated, ... for the logs and MLflow
    test: list[ModelInputs] | None = None  # None: no test file


class Task(ABC):
    name: ClassVar[str]
    model_class: ClassVar[type]
    auto_model: ClassVar[str]  # the transformers class that loads the result
    metric: ClassVar[str]  # higher is better; picks the best epoch and the registry champion
    predictions_file: ClassVar[str]

    def __init__(self, options: TaskOptions):
        self.options = options

    @abstractmethod
    def prepare(
        self, train_path: Path, validation_path: Path, tokenizer: Tokenizer, test_path: Path | None = None
    ) -> TaskData:
        """Read and encode the files (what `score` needs of the validation and test sides is kept). Labels
        come from the training file alone, so the test file is encoded as validation is."""

    @abstractmethod
    def outputs(self, output: Any, lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """From the model's output for a batch, what `score` needs of each example (`lengths`: its tokens)."""

    @abstractmethod
    def score(
        self, outputs: Sequence[dict[str, np.ndarray]], split: Split = VALIDATION
    ) -> tuple[dict[str, float], Any]:
        """Metrics and predictions from the outputs of `split`, one entry per feature of that split in order."""

    @abstractmethod
    def write_predictions(self, predictions: Any, path: Path, split: Split = VALIDATION) -> None: ...

    @classmethod
    def predictions_name(cls, split: Split) -> str:
        """The validation predictions keep the task's file name; the test ones are `test_<name>` beside them."""
        return cls.predictions_file if split == VALIDATION else f"{split}_{cls.predictions_file}"


def collate_features(features: Sequence[ModelInputs], pad_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Pad to the longest feature (rounded up to a multiple of 8, at most `max_length`): token ids with
    `pad_id`, segment ids with 0, per-token labels with IGNORE_INDEX; scalar targets stacked."""
    if not features:
        raise ValueError("cannot collate an empty batch")
    length = padded_length(max(len(f["input_ids"]) for f in features), limit=max_length)
    batch = len(features)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((batch, length), dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    out = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        input_ids[row, :n] = torch.tensor(feature["input_ids"])
        token_type_ids[row, :n] = torch.tensor(feature["token_type_ids"])
        attention_mask[row, :n] = 1
    for name in features[0]:
        if name in out or name.startswith("_"):
            continue
        values = [f[name] for f in features]
        if isinstance(values[0], list):
            padded = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
            for row, value in enumerate(values):
                padded[row, : len(value)] = torch.tensor(value)
            out[name] = padded
        else:
            out[name] = torch.tensor(values, dtype=torch.long)
    return out
