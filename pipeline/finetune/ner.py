"""Named-entity recognition on CoNLL files: a label per word on its first sub-token; entity-level
precision, recall and F1; predictions written back as CoNLL columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from model import BertForTokenClassification
from pipeline.finetune.conll import Sentence, align_labels, read_conll, word_predictions, write_predictions
from pipeline.finetune.labels import LabelMap
from pipeline.finetune.metrics import entity_scores
from pipeline.finetune.task import TEST, VALIDATION, ModelInputs, Split, Task, TaskData

OUTSIDE = "O"


class NerTask(Task):
    name = "ner"
    model_class = BertForTokenClassification
    auto_model = "AutoModelForTokenClassification"
    metric = "f1"
    predictions_file = "predictions.conll"

    def prepare(
        self, train_path: Path, validation_path: Path, tokenizer: Tokenizer, test_path: Path | None = None
    ) -> TaskData:
        train = read_conll(train_path)
        self.labels = LabelMap.from_training((tag for s in train for tag in s.tags), first=[OUTSIDE])
        train_features, truncated = self._features(tokenizer, train, str(train_path), None)
        for feature in train_features:
            feature.pop("_word_ids")
        paths = {VALIDATION: validation_path, **({TEST: test_path} if test_path is not None else {})}
        self.sentences: dict[Split, list[Sentence]] = {}
        self.word_ids: dict[Split, list[list[int | None]]] = {}
        features: dict[Split, list[ModelInputs]] = {}
        for split, path in paths.items():
            self.sentences[split] = read_conll(path)
            features[split], truncated_here = self._features(
                tokenizer, self.sentences[split], str(path), self.options.map_unseen_label
            )
            self.word_ids[split] = [f.pop("_word_ids") for f in features[split]]
            truncated += truncated_here
        counts = {
            "train_sentences": len(train),
            **{f"{split}_sentences": len(sentences) for split, sentences in self.sentences.items()},
            "truncated_sentences": truncated,
            "labels": len(self.labels.names),
        }
        return TaskData(train_features, features[VALIDATION], self.labels.id2label, counts, features.get(TEST))

    def _features(self, tokenizer: Tokenizer, sentences: list[Sentence], source: str, unseen_to: str | None):
        tokenizer.enable_truncation(self.options.max_seq_length)
        try:
            encodings = tokenizer.encode_batch([list(s.words) for s in sentences], is_pretokenized=True)
        finally:
            tokenizer.no_truncation()
        features, truncated = [], 0
        for sentence, encoding in zip(sentences, encodings, strict=True):
            word_labels = self.labels.ids(list(sentence.tags), f"{source}:{sentence.first_line}", unseen_to)
            features.append(
                {
                    "input_ids": encoding.ids,
                    "token_type_ids": encoding.type_ids,
                    "labels": align_labels(encoding.word_ids, word_labels),
                    "_word_ids": encoding.word_ids,
                }
            )
            covered = {w for w in encoding.word_ids if w is not None}
            truncated += len(covered) < len(sentence.words)
        return features, truncated

    def outputs(self, output: Any, lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
        best = output.logits.argmax(dim=-1).cpu().numpy()
        return [{"predicted": row[:n]} for row, n in zip(best, lengths, strict=True)]

    def score(
        self, outputs: Sequence[dict[str, np.ndarray]], split: Split = VALIDATION
    ) -> tuple[dict[str, float], Any]:
        names = self.labels.names
        sentences = self.sentences[split]
        predicted_tags = []
        for sentence, word_ids, out in zip(sentences, self.word_ids[split], outputs, strict=True):
            per_word = word_predictions(word_ids, out["predicted"].tolist(), len(sentence.words))
            # Words truncation cut off get O: they are scored, and count as missed entities.
            predicted_tags.append([OUTSIDE if p is None else names[p] for p in per_word])
        scores = entity_scores([s.tags for s in sentences], predicted_tags)
        metrics = {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1}
        return metrics, predicted_tags

    def write_predictions(self, predictions: Any, path: Path, split: Split = VALIDATION) -> None:
        write_predictions(path, self.sentences[split], predictions)
