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
from pipeline.finetune.task import TEST, VALIDATION, ModelInputs, Split, Task, TaskData


class ClassificationTask(Task):
    name = "classify"
    model_class = BertForSequenceClassification
    auto_model = "AutoModelForSequenceClassification"
    metric = "accuracy"
    predictions_file = "predictions.jsonl"

    def prepare(
        self, train_path: Path, validation_path: Path, tokenizer: Tokenizer, test_path: Path | None = None
    ) -> TaskData:
        options = self.options
        columns = Columns(options.text_column, options.text_pair_column, options.label_column)
        train, skipped = read_examples(train_path, columns)
        self.labels = LabelMap.from_training(e.label for e in train)
        train_ids = self.labels.ids([e.label for e in train], str(train_path))
        train_features, truncated = self._features(tokenizer, train, train_ids)
        paths = {VALIDATION: validation_path, **({TEST: test_path} if test_path is not None else {})}
        self.examples: dict[Split, list[TextExample]] = {}
        self.gold: dict[Split, list[int]] = {}
        features: dict[Split, list[ModelInputs]] = {}
        for split, path in paths.items():
            examples, skipped_here = read_examples(path, columns)
            gold = self.labels.ids([e.label for e in examples], str(path), options.map_unseen_label)
            features[split], truncated_here = self._features(tokenizer, examples, gold)
            self.examples[split], self.gold[split] = examples, gold
            skipped, truncated = skipped + skipped_here, truncated + truncated_here
        counts = {
            "train_examples": len(train),
            **{f"{split}_examples": len(examples) for split, examples in self.examples.items()},
            "empty_texts_skipped": skipped,
            "truncated_examples": truncated,
            "labels": len(self.labels.names),
        }
        return TaskData(train_features, features[VALIDATION], self.labels.id2label, counts, features.get(TEST))

    def _features(self, tokenizer: Tokenizer, examples: list[TextExample], label_ids: list[int]):
        encoded = encode_texts(tokenizer, examples, self.options.max_seq_length, self.options.truncation)
        features = [
            {"input_ids": e.input_ids, "token_type_ids": e.token_type_ids, "labels": label}
            for e, label in zip(encoded, label_ids, strict=True)
        ]
        return features, sum(e.truncated for e in encoded)

    def outputs(self, output: Any, lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [{"logits": row} for row in output.logits.float().cpu().numpy()]

    def score(
        self, outputs: Sequence[dict[str, np.ndarray]], split: Split = VALIDATION
    ) -> tuple[dict[str, float], Any]:
        predicted = [int(np.argmax(o["logits"])) for o in outputs]
        gold = self.gold[split]
        metrics = {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted)}
        names = self.labels.names
        predictions = [
            {"line": e.line, "label": e.label, "predicted": names[p]}
            for e, p in zip(self.examples[split], predicted, strict=True)
        ]
        return metrics, predictions

    def write_predictions(self, predictions: Any, path: Path, split: Split = VALIDATION) -> None:
        path.write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
