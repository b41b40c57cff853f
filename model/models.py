"""BERT with its heads: pretraining (MLM + NSP) and the three fine-tuning tasks.

Every class keeps the encoder under `bert.` and its head under Hugging Face's name (`cls.`,
`classifier.`, `qa_outputs.`), so each one loads into the matching `transformers` class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from model.config import BertConfig
from model.encoder import BertModel
from model.heads import BertPreTrainingHeads, cross_entropy_and_counts
from model.pretrained import PreTrainedMixin


@dataclass
class PreTrainingOutput:
    """MLM logits are (batch, slots, vocab) when masked positions were given, else (batch, seq, vocab).

    Losses and counts are None when the matching labels were not given; `loss` sums the losses present.
    """

    mlm_logits: torch.Tensor
    nsp_logits: torch.Tensor
    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    mlm_correct: torch.Tensor | None = None
    mlm_count: torch.Tensor | None = None
    nsp_correct: torch.Tensor | None = None
    nsp_count: torch.Tensor | None = None


@dataclass
class ClassificationOutput:
    """Sequence logits (batch, labels) or token logits (batch, seq, labels); loss/counts with labels."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    count: torch.Tensor | None = None


@dataclass
class QuestionAnsweringOutput:
    start_logits: torch.Tensor
    end_logits: torch.Tensor
    loss: torch.Tensor | None = None


class BertForPreTraining(PreTrainedMixin, nn.Module):
    """Encoder + MLM head (decoder tied to the word embeddings) + NSP head on the pooled [CLS]."""

    hf_architecture = "BertForPreTraining"
    initializable_prefixes = ("cls.", "bert.pooler.")

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,
        masked_lm_labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        next_sentence_positions: torch.Tensor | None = None,
    ) -> PreTrainingOutput:
        """`masked_lm_positions` (batch, slots) restricts the vocabulary projection to those
        positions, with `masked_lm_labels` (batch, slots) and IGNORE_INDEX in unused slots.
        Without positions, logits cover every token and labels are (batch, seq) as in Hugging Face.
        Packed rows (pipeline/data/packing.py) add `position_ids`, `sequence_ids` and the [CLS] positions
        `next_sentence_positions` (batch, instances); NSP logits and labels are then per instance slot.
        """
        sequence_output, pooled_output = self.bert(
            input_ids, token_type_ids, attention_mask, position_ids, sequence_ids, next_sentence_positions
        )
        mlm_logits, nsp_logits = self.cls(sequence_output, pooled_output, masked_lm_positions)
        out = PreTrainingOutput(mlm_logits=mlm_logits, nsp_logits=nsp_logits)
        losses = []
        if masked_lm_labels is not None:
            mlm = cross_entropy_and_counts(mlm_logits, masked_lm_labels)
            out.mlm_loss, out.mlm_correct, out.mlm_count = mlm.loss, mlm.correct, mlm.count
            losses.append(mlm.loss)
        if next_sentence_label is not None:
            nsp = cross_entropy_and_counts(nsp_logits, next_sentence_label)
            out.nsp_loss, out.nsp_correct, out.nsp_count = nsp.loss, nsp.correct, nsp.count
            losses.append(nsp.loss)
        if losses:
            out.loss = sum(losses[1:], losses[0])
        return out


class _LinearClassifier(PreTrainedMixin, nn.Module):
    """Encoder -> dropout -> linear over `config.num_labels`, on the pooled [CLS] or on every token."""

    per_token: ClassVar[bool]

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=not self.per_token)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ClassificationOutput:
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask)
        features = sequence_output if self.per_token else pooled_output
        logits = self.classifier(self.dropout(features))
        out = ClassificationOutput(logits=logits)
        if labels is not None:
            result = cross_entropy_and_counts(logits, labels)
            out.loss, out.correct, out.count = result.loss, result.correct, result.count
        return out


class BertForSequenceClassification(_LinearClassifier):
    """Pooled [CLS] -> dropout -> linear: logits (batch, labels)."""

    hf_architecture = "BertForSequenceClassification"
    initializable_prefixes = ("classifier.", "bert.pooler.")
    per_token = False


class BertForTokenClassification(_LinearClassifier):
    """Per-token logits (batch, seq, labels); labels IGNORE_INDEX are left out of the loss."""

    hf_architecture = "BertForTokenClassification"
    initializable_prefixes = ("classifier.",)
    per_token = True


class BertForQuestionAnswering(PreTrainedMixin, nn.Module):
    """Per-token start and end logits for extractive QA."""

    hf_architecture = "BertForQuestionAnswering"
    initializable_prefixes = ("qa_outputs.",)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> QuestionAnsweringOutput:
        """Answer positions outside the sequence (e.g. an answer cut off by windowing) are ignored."""
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask)
        start_logits, end_logits = self.qa_outputs(sequence_output).unbind(dim=-1)
        out = QuestionAnsweringOutput(start_logits=start_logits, end_logits=end_logits)
        if start_positions is not None and end_positions is not None:
            outside = start_logits.shape[1]
            start_loss = F.cross_entropy(start_logits.float(), start_positions.clamp(0, outside), ignore_index=outside)
            end_loss = F.cross_entropy(end_logits.float(), end_positions.clamp(0, outside), ignore_index=outside)
            out.loss = (start_loss + end_loss) / 2
        return out
