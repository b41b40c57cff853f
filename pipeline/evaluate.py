"""Held-out MLM loss, MLM accuracy and NSP accuracy, summed over every rank's share of the split."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class EvalResult:
    mlm_loss: float
    mlm_accuracy: float
    nsp_accuracy: float
    masked_tokens: int
    sequences: int

    def as_metrics(self, prefix: str = "eval_") -> dict[str, float]:
        return {
            f"{prefix}mlm_loss": self.mlm_loss,
            f"{prefix}mlm_accuracy": self.mlm_accuracy,
            f"{prefix}nsp_accuracy": self.nsp_accuracy,
            f"{prefix}masked_tokens": self.masked_tokens,
            f"{prefix}sequences": self.sequences,
        }


# Order of the summed counts: MLM loss sum, MLM correct, MLM count, NSP correct, NSP count.
COUNTS = 5


def result_from_sums(sums: torch.Tensor) -> EvalResult:
    mlm_loss_sum, mlm_correct, mlm_count, nsp_correct, nsp_count = (float(x) for x in sums)
    return EvalResult(
        mlm_loss=mlm_loss_sum / max(mlm_count, 1.0),
        mlm_accuracy=mlm_correct / max(mlm_count, 1.0),
        nsp_accuracy=nsp_correct / max(nsp_count, 1.0),
        masked_tokens=int(mlm_count),
        sequences=int(nsp_count),
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device) -> EvalResult:
    """Collective when torch.distributed is initialised: every rank passes its own (equally many) batches."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(COUNTS, dtype=torch.float64, device=device)
    for batch in batches:
        out = model(**{name: tensor.to(device) for name, tensor in batch.items()})
        sums += torch.stack(
            [
                out.mlm_loss.double() * out.mlm_count,
                out.mlm_correct.double(),
                out.mlm_count.double(),
                out.nsp_correct.double(),
                out.nsp_count.double(),
            ]
        )
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    return result_from_sums(sums.cpu())
