"""The MLflow pyfunc model that `pipeline.handoff.registry` logs (as MLflow "model from code": this file is stored
with the model and run by `mlflow.pyfunc.load_model`, nothing is pickled). What `predict` does follows the
architecture in the model's config.json:

    BertForPreTraining              texts containing [MASK] -> the most likely token at each [MASK]
    BertForSequenceClassification   texts (a "text" column, optionally "text_pair") -> label names
    BertForTokenClassification      texts -> [[word, tag], ...] per text, words split on whitespace
    BertForQuestionAnswering        rows with "question" and "context" -> the answer span ("" for none)

Input is a list or a DataFrame; a list of strings is the "text" column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc

from pipeline.handoff.registry import HF_ARTIFACT


def _rows(model_input: Any) -> list[dict[str, Any]]:
    if hasattr(model_input, "to_dict"):
        return model_input.to_dict(orient="records")
    return [row if isinstance(row, dict) else {"text": row} for row in model_input]


class BertPredictor(mlflow.pyfunc.PythonModel):
    # MLflow validates predict's input against its type hints, and asks for them (a warning no filter reaches)
    # when there are none; this predict takes lists and DataFrames alike, which no hint describes. MLflow's own
    # switch for such models (its ChatModel uses it) turns the check off.
    _skip_type_hint_validation = True

    def load_context(self, context):
        import model as models
        from preprocessing.tokenizer import load_tokenizer

        directory = Path(context.artifacts[HF_ARTIFACT])
        architectures = json.loads((directory / "config.json").read_text()).get("architectures") or []
        self.architecture = architectures[0] if architectures else "BertForPreTraining"
        model_class = getattr(models, self.architecture, None)
        if model_class is None:
            raise ValueError(f"{directory}: architecture {self.architecture!r} is not one bertpipe serves")
        self.model = model_class.from_pretrained(directory).eval()
        self.tokenizer = load_tokenizer(directory)
        self.tokenizer.enable_truncation(self.model.config.max_position_embeddings)

    def predict(self, context, model_input, params=None):
        import torch

        rows = _rows(model_input)
        with torch.no_grad():
            if self.architecture == "BertForSequenceClassification":
                return [self._classify(row) for row in rows]
            if self.architecture == "BertForTokenClassification":
                return [self._tag(row["text"]) for row in rows]
            if self.architecture == "BertForQuestionAnswering":
                return [self._answer(row["question"], row["context"]) for row in rows]
            return [self._fill_mask(row["text"]) for row in rows]

    def _tensors(self, encoding) -> dict[str, Any]:
        import torch

        return {"input_ids": torch.tensor([encoding.ids]), "token_type_ids": torch.tensor([encoding.type_ids])}

    def _fill_mask(self, text: str) -> list[str]:
        encoding = self.tokenizer.encode(text)
        logits = self.model(**self._tensors(encoding)).mlm_logits[0]
        mask_id = self.tokenizer.token_to_id("[MASK]")
        return [self.tokenizer.id_to_token(int(logits[i].argmax())) for i, t in enumerate(encoding.ids) if t == mask_id]

    def _classify(self, row: dict[str, Any]) -> str:
        pair = row.get("text_pair")
        encoding = self.tokenizer.encode(row["text"], pair) if pair else self.tokenizer.encode(row["text"])
        logits = self.model(**self._tensors(encoding)).logits[0]
        return self.model.config.id2label[int(logits.argmax())]

    def _tag(self, text: str) -> list[list[str]]:
        from pipeline.finetune.conll import word_predictions

        words = text.split()
        encoding = self.tokenizer.encode(words, is_pretokenized=True)
        best = self.model(**self._tensors(encoding)).logits[0].argmax(dim=-1).tolist()
        labels = self.model.config.id2label
        tags = word_predictions(encoding.word_ids, best, len(words))
        return [[word, "O" if tag is None else labels[tag]] for word, tag in zip(words, tags, strict=True)]

    def _answer(self, question: str, context: str) -> str:
        import torch

        from pipeline.finetune.squad import SpecialIds, best_answer, build_features

        tokenizer = self.tokenizer
        limit = self.model.config.max_position_embeddings
        question_ids = tokenizer.encode(question, add_special_tokens=False).ids[: limit // 4]
        tokenizer.no_truncation()  # the context is windowed instead
        try:
            context_encoding = tokenizer.encode(context, add_special_tokens=False)
        finally:
            tokenizer.enable_truncation(limit)
        special = SpecialIds(tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
        features = build_features(
            0, question_ids, context_encoding.ids, context_encoding.offsets, None, special, limit, limit // 4
        )
        starts, ends = [], []
        for feature in features:
            out = self.model(torch.tensor([feature.input_ids]), torch.tensor([feature.token_type_ids]))
            starts.append(out.start_logits[0].tolist())
            ends.append(out.end_logits[0].tolist())
        return best_answer(context, features, starts, ends, allow_no_answer=True)[0]


mlflow.models.set_model(BertPredictor())
