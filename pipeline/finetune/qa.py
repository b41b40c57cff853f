"""Extractive question answering on SQuAD v1.1 / v2.0: windows over long contexts, start and end logits,
the best span by n-best search; exact match and F1; predictions as the SQuAD predictions JSON."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from model import BertForQuestionAnswering
from pipeline.finetune.metrics import squad_scores
from pipeline.finetune.squad import Feature, Question, SpecialIds, best_answer, build_features, read_squad, trainable
from pipeline.finetune.task import TEST, VALIDATION, Split, Task, TaskData
from pipeline.training.train_config import TrainConfigError


class QuestionAnsweringTask(Task):
    name = "qa"
    model_class = BertForQuestionAnswering
    auto_model = "AutoModelForQuestionAnswering"
    metric = "f1"
    predictions_file = "predictions.json"

    def prepare(
        self, train_path: Path, validation_path: Path, tokenizer: Tokenizer, test_path: Path | None = None
    ) -> TaskData:
        room = self.options.max_seq_length - self.options.max_query_length - 3
        if room < 1:
            raise TrainConfigError(
                f"--max-query-length {self.options.max_query_length} leaves no room for the context in "
                f"--max-seq-length {self.options.max_seq_length} (3 positions go to [CLS] and [SEP]); lower it"
            )
        if self.options.doc_stride < 1:
            raise TrainConfigError(f"--doc-stride must be at least 1, got {self.options.doc_stride}")
        train, validation = read_squad(train_path), read_squad(validation_path)
        evaluated = {VALIDATION: validation, **({TEST: read_squad(test_path)} if test_path is not None else {})}
        if self.options.version_2 is None:
            # Not from the test file: what is held out must not change how the model answers.
            self.version_2 = any(f.unanswerable or f.version.lstrip("v").startswith("2") for f in (train, validation))
        else:
            self.version_2 = self.options.version_2
        special = SpecialIds(tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
        used = [q for q in train.questions if trainable(q)]
        train_windows = self._windows(tokenizer, used, special)
        self.questions: dict[Split, list[Question]] = {split: f.questions for split, f in evaluated.items()}
        self.windows: dict[Split, list[Feature]] = {
            split: self._windows(tokenizer, questions, special) for split, questions in self.questions.items()
        }
        counts = {
            "train_questions": len(used),
            "validation_questions": len(validation.questions),
            "misaligned_answers_skipped": train.misaligned_answers,
            "validation_misaligned_answers": validation.misaligned_answers,
            "unanswerable_questions": train.unanswerable + sum(f.unanswerable for f in evaluated.values()),
            "train_windows": len(train_windows),
            "validation_windows": len(self.windows[VALIDATION]),
        }
        if test_path is not None:
            test = evaluated[TEST]
            counts |= {
                "test_questions": len(test.questions),
                "test_misaligned_answers": test.misaligned_answers,
                "test_windows": len(self.windows[TEST]),
            }
        features = {split: [_inputs(w) for w in windows] for split, windows in self.windows.items()}
        return TaskData([_inputs(w) for w in train_windows], features[VALIDATION], None, counts, features.get(TEST))

    def _windows(self, tokenizer: Tokenizer, questions: list[Question], special: SpecialIds) -> list[Feature]:
        options = self.options
        tokenizer.enable_truncation(options.max_query_length)
        try:
            question_encodings = tokenizer.encode_batch([q.question for q in questions], add_special_tokens=False)
        finally:
            tokenizer.no_truncation()
        context_encodings: dict[str, Any] = {}
        features: list[Feature] = []
        for index, (question, encoded_question) in enumerate(zip(questions, question_encodings, strict=True)):
            context = context_encodings.get(question.context)
            if context is None:  # the questions of one paragraph share its context
                context = tokenizer.encode(question.context, add_special_tokens=False)
                context_encodings = {question.context: context}
            answer = None
            if question.answer_start is not None and question.answer_text is not None:
                answer = (question.answer_start, question.answer_start + len(question.answer_text))
            features += build_features(
                index,
                encoded_question.ids,
                context.ids,
                context.offsets,
                answer,
                special,
                options.max_seq_length,
                options.doc_stride,
            )
        return features

    def outputs(self, output: Any, lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
        starts = output.start_logits.float().cpu().numpy()
        ends = output.end_logits.float().cpu().numpy()
        return [{"start": s[:n], "end": e[:n]} for s, e, n in zip(starts, ends, lengths, strict=True)]

    def score(
        self, outputs: Sequence[dict[str, np.ndarray]], split: Split = VALIDATION
    ) -> tuple[dict[str, float], Any]:
        windows, questions = self.windows[split], self.questions[split]
        by_question: dict[int, list[int]] = defaultdict(list)
        for position, feature in enumerate(windows):
            by_question[feature.question_index].append(position)
        options = self.options
        predictions: dict[str, str] = {}
        for index, question in enumerate(questions):
            positions = by_question[index]
            answer, _, _ = best_answer(
                question.context,
                [windows[p] for p in positions],
                [outputs[p]["start"] for p in positions],
                [outputs[p]["end"] for p in positions],
                n_best=options.n_best,
                max_answer_tokens=options.max_answer_length,
                allow_no_answer=self.version_2,
                null_threshold=options.null_threshold,
            )
            predictions[question.id] = answer
        gold = {q.id: q.answers for q in questions}
        scores = squad_scores(gold, predictions)
        return {"exact_match": scores.exact_match, "f1": scores.f1}, predictions

    def write_predictions(self, predictions: Any, path: Path, split: Split = VALIDATION) -> None:
        path.write_text(json.dumps(predictions, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _inputs(feature: Feature) -> dict[str, Any]:
    return {
        "input_ids": feature.input_ids,
        "token_type_ids": feature.token_type_ids,
        "start_positions": feature.start_position,
        "end_positions": feature.end_position,
    }
