"""Pretraining heads (masked LM tied to the word embeddings, next-sentence prediction) and the
pure functions that gather masked positions and turn logits into losses and accuracy counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import BertConfig
from model.encoder import activation

IGNORE_INDEX = -100  # label of a padding slot: contributes neither loss nor accuracy


@dataclass
class LossAndCounts:
    """Mean cross-entropy over the labelled slots and the counts that make accuracy additive."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(batch, seq, hidden) states at (batch, slots) positions -> (batch, slots, hidden)."""
    if positions.dim() != 2 or positions.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"masked_lm_positions must have shape (batch={hidden.shape[0]}, slots), got {tuple(positions.shape)}"
        )
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return torch.gather(hidden, 1, index)


def cross_entropy_and_counts(logits: torch.Tensor, labels: torch.Tensor) -> LossAndCounts:
    """Cross-entropy averaged over labels != IGNORE_INDEX, with correct/total counts.

    Summing and dividing by a clamped count (instead of a mean) gives the same value whenever a
    label exists, 0 instead of NaN when none does, and needs no host sync.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    labelled = flat_labels != IGNORE_INDEX
    count = labelled.sum()
    loss_sum = F.cross_entropy(flat_logits.float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((flat_logits.argmax(dim=-1) == flat_labels) & labelled).sum()
    return LossAndCounts(loss=loss_sum / count.clamp(min=1), correct=correct, count=count)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    """Transform, then the vocabulary projection whose weight is the word-embedding matrix.

    `decoder` is a real Linear that shares its weight with the embeddings (assigned by the owning
    model) and its bias with `bias`, as in Hugging Face; ZeRO-3 gathers a parameter through the
    module that uses it, so the tie must be a module, not a functional call.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))

    @torch.no_grad()
    def init_bias_to_prior(self, log_prior: torch.Tensor) -> None:
        """Start the output bias at the targets' log-frequencies, centred. Ids without mass (special tokens)
        start log(vocab_size) below the rarest target, so that all of them together weigh less than it.

        From a zero bias the first thing the MLM loss asks is to lower the logits of rare tokens. Adam moves
        each of a token's `hidden_size` embedding coordinates as far per step as its one bias value, so that
        prior is learnt mostly by pushing every rare token's (tied) embedding the same way, and the rare
        embeddings collapse onto one direction. A bias that already holds the prior leaves nothing to push.
        """
        if log_prior.shape != self.bias.shape:
            raise ValueError(f"log_prior has shape {tuple(log_prior.shape)}, the bias {tuple(self.bias.shape)}")
        finite = torch.isfinite(log_prior)
        if not finite.any():
            raise ValueError("log_prior gives no token a probability")
        values = log_prior.to(self.bias.dtype)
        floor = values[finite].min() - math.log(len(values))
        values = torch.where(finite, values, floor)
        self.bias.copy_(values - values[finite].mean())


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(
        self, sequence_output: torch.Tensor, pooled_output: torch.Tensor, positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM logits at `positions` (batch, slots, vocab), or at every position when None."""
        if positions is not None:
            sequence_output = gather_positions(sequence_output, positions)
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)
