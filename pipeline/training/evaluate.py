"""Held-out pretraining metrics, summed over every rank's share of the split.

The masked-LM figures are split by what the input holds at a predicted position: `[MASK]` (80% of
the predictions), the original token left unchanged (10%: the model can copy it, so its accuracy
says nothing about language) and a random token (10%). The headline is the `[MASK]` one, next to
the loss a context-free unigram guess has at the same positions: a model that has learned to use
context is below it, a model on the unigram plateau is not. NSP accuracy comes with its majority share.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from model.heads import IGNORE_INDEX

KINDS = ("mask", "keep", "random")  # what the input holds at a predicted position
PER_KIND = 4  # loss sum, correct, count, unigram loss sum
NSP_SUMS = 3  # correct, count, label-1 count


@dataclass(frozen=True)
class KindResult:
    loss: float
    accuracy: float
    count: int
    unigram_loss: float  # the same positions under the training unigram distribution


@dataclass(frozen=True)
class EvalResult:
    kinds: dict[str, KindResult]
    nsp_accuracy: float
    nsp_majority: float  # accuracy of always answering the more frequent NSP label
    sequences: int

    @property
    def masked_tokens(self) -> int:
        return sum(k.count for k in self.kinds.values())

    def _pooled(self, field: str) -> float:
        total = max(self.masked_tokens, 1)
        return sum(getattr(k, field) * k.count for k in self.kinds.values()) / total

    @property
    def mlm_loss(self) -> float:
        """Over every predicted position, as the training loss is."""
        return self._pooled("loss")

    @property
    def mlm_accuracy(self) -> float:
        return self._pooled("accuracy")

    @property
    def mask_loss(self) -> float:
        return self.kinds["mask"].loss

    @property
    def mask_gain(self) -> float:
        """Nats by which the model beats the unigram guess at `[MASK]` positions (> 0: it uses context)."""
        return self.kinds["mask"].unigram_loss - self.kinds["mask"].loss

    def as_metrics(self, prefix: str = "eval_") -> dict[str, float]:
        return {
            f"{prefix}mlm_loss": self.mlm_loss,
            f"{prefix}mlm_accuracy": self.mlm_accuracy,
            f"{prefix}mask_loss": self.mask_loss,
            f"{prefix}mask_accuracy": self.kinds["mask"].accuracy,
            f"{prefix}mask_unigram_loss": self.kinds["mask"].unigram_loss,
            f"{prefix}mask_gain": self.mask_gain,
            f"{prefix}keep_accuracy": self.kinds["keep"].accuracy,
            f"{prefix}random_accuracy": self.kinds["random"].accuracy,
            f"{prefix}nsp_accuracy": self.nsp_accuracy,
            f"{prefix}nsp_majority": self.nsp_majority,
            f"{prefix}masked_tokens": self.masked_tokens,
            f"{prefix}mask_tokens": self.kinds["mask"].count,
            f"{prefix}sequences": self.sequences,
        }


def unigram_log_probs(counts: np.ndarray, special_ids: Iterable[int] = ()) -> torch.Tensor:
    """Add-one smoothed log-frequencies of the prediction targets: the best context-free guess.
    Special tokens are never targets and get no probability mass."""
    smoothed = counts.astype(np.float64) + 1.0
    smoothed[list(special_ids)] = 0.0
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(smoothed / smoothed.sum()))


def masked_lm_sums(
    logits: torch.Tensor,
    labels: torch.Tensor,
    inputs_at_positions: torch.Tensor,
    mask_id: int,
    unigram: torch.Tensor,
) -> torch.Tensor:
    """Per kind (KINDS order) the loss sum, correct count, count and unigram loss sum: (len(KINDS) * PER_KIND,).

    `logits` (batch, slots, vocab) at the predicted positions, `labels` (batch, slots) with
    IGNORE_INDEX in unused slots, `inputs_at_positions` (batch, slots) what the model was given there.
    """
    labelled = labels != IGNORE_INDEX
    targets = labels.clamp(min=0)
    log_probs = logits.float().log_softmax(dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double()
    correct = log_probs.argmax(dim=-1) == targets
    # where() rather than a product: an unused slot's target is [PAD], whose unigram log-probability is -inf
    unigram_nll = torch.where(labelled, -unigram.to(logits.device)[targets].double(), 0.0)
    is_mask = inputs_at_positions == mask_id
    is_keep = (inputs_at_positions == targets) & ~is_mask
    selections = (is_mask, is_keep, ~is_mask & ~is_keep)
    sums = []
    for selected in selections:
        selected = selected & labelled
        sums += [
            torch.where(selected, nll, 0.0).sum(),
            (correct & selected).sum().double(),
            selected.sum().double(),
            torch.where(selected, unigram_nll, 0.0).sum(),
        ]
    return torch.stack(sums)


def result_from_sums(mlm: torch.Tensor, nsp: torch.Tensor) -> EvalResult:
    kinds = {}
    for index, name in enumerate(KINDS):
        loss_sum, correct, count, unigram_sum = (float(x) for x in mlm[index * PER_KIND : (index + 1) * PER_KIND])
        denominator = max(count, 1.0)
        kinds[name] = KindResult(loss_sum / denominator, correct / denominator, int(count), unigram_sum / denominator)
    nsp_correct, nsp_count, nsp_ones = (float(x) for x in nsp)
    share_one = nsp_ones / max(nsp_count, 1.0)
    return EvalResult(
        kinds=kinds,
        nsp_accuracy=nsp_correct / max(nsp_count, 1.0),
        nsp_majority=max(share_one, 1.0 - share_one),
        sequences=int(nsp_count),
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    mask_id: int,
    unigram: torch.Tensor,
) -> EvalResult:
    """Collective when torch.distributed is initialised: every rank passes its own (equally many) batches."""
    was_training = model.training
    model.eval()
    mlm = torch.zeros(len(KINDS) * PER_KIND, dtype=torch.float64, device=device)
    nsp = torch.zeros(NSP_SUMS, dtype=torch.float64, device=device)
    for batch in batches:
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        out = model(**batch)
        inputs = torch.gather(batch["input_ids"], 1, batch["masked_lm_positions"])
        mlm += masked_lm_sums(out.mlm_logits, batch["masked_lm_labels"], inputs, mask_id, unigram)
        nsp_labels = batch["next_sentence_label"]
        nsp += torch.stack([out.nsp_correct.double(), out.nsp_count.double(), (nsp_labels == 1).sum().double()])
    if dist.is_initialized():
        both = torch.cat([mlm, nsp])
        dist.all_reduce(both)
        mlm, nsp = both[: len(mlm)], both[len(mlm) :]
    model.train(was_training)
    return result_from_sums(mlm.cpu(), nsp.cpu())
