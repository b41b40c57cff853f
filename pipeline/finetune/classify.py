"""Sequence classification: one label per text or text pair, the head on [CLS]; accuracy and macro-F1."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from model import BertForSequenceClassification
from pipeline.finetune.classification_data import Columns, TextExample, encode_texts, read_examples
from pipeline.finetune.labels import LabelMap
from pipeline.finetune.metrics import accuracy, macro_f1
from pipeline.finetune.task import Task, TaskData


class ClassificationTask(Task):
    name = "classify"
    model_class = BertForSequenceClassification
    auto_model = "AutoModelForSequenceClassification"
    metric = "accuracy"
    predictions_file = "predictions.jsonl"

    def prepare(self, train_path: Path, validation_path: Path, tokenizer: Tokenizer) -> TaskData:
        options = self.options
        columns = Columns(options.text_column, options.text_pair_column, options.label_column)
        train, skipped_train = read_examples(train_path, columns)
        validation, skipped_validation = read_examples(validation_path, columns)
        self.labels = LabelMap.from_training(e.label for e in train)
        self.validation_examples = validation
        train_ids = self.labels.ids([e.label for e in train], str(train_path))
        validation_ids = self.labels.ids([e.label for e in validation], str(validation_path), options.map_unseen_label)
        self.validation_gold = validation_ids
        train_features, train_truncated = self._features(tokenizer, train, train_ids)
        validation_features, validation_truncated = self._features(tokenizer, validation, validation_ids)
        counts = {
            "train_examples": len(train),
            "validation_examples": len(validation),
            "empty_texts_skipped": skipped_train + skipped_validation,
            "truncated_examples": train_truncated + validation_truncated,
            "labels": len(self.labels.names),
        }
        return TaskData(train_features, validation_features, self.labels.id2label, counts)

    def _features(self, tokenizer: Tokenizer, examples: list[TextExample], label_ids: list[int]):
        encoded = encode_texts(tokenizer, examples, self.options.max_seq_length)
        features = [
            {"input_ids": e.input_ids, "token_type_ids": e.token_type_ids, "labels": label}
            for e, label in zip(encoded, label_ids, strict=True)
        ]
        return features, sum(e.truncated for e in encoded)

    def outputs(self, output: Any, lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [{"logits": row} for row in output.logits.float().cpu().numpy()]

    def score(self, outputs: Sequence[dict[str, np.ndarray]]) -> tuple[dict[str, float], Any]:
        predicted = [int(np.argmax(o["logits"])) for o in outputs]
        gold = self.validation_gold
        metrics = {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted)}
        names = self.labels.names
        predictions = [
            {"line": e.line, "label": e.label, "predicted": names[p]}
            for e, p in zip(self.validation_examples, predicted, strict=True)
        ]
        return metrics, predictions

    def write_predictions(self, predictions: Any, path: Path) -> None:
        path.write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
