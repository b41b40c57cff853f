"""Small utilities the model tests share."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from preprocessing.shards import Sample

CLS, SEP, MASK, PAD = 2, 3, 4, 0  # special token ids of the hand-built samples


def perturb_parameters(model: nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Add noise to every parameter, so that biases and LayerNorms stop being 0/1 and a weight loaded
    under the wrong name cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def random_batch(
    vocab_size: int, batch: int, seq_len: int, seed: int = 0, pad_lengths: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Random ids (never [PAD]=0) with segment ids and, if given, per-row lengths padded with 0."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch, seq_len), generator=generator)
    token_type_ids = torch.zeros(batch, seq_len, dtype=torch.long)
    token_type_ids[:, seq_len // 2 :] = 1
    attention_mask = torch.ones(batch, seq_len, dtype=torch.long)
    for row, length in enumerate(pad_lengths or []):
        input_ids[row, length:] = 0
        token_type_ids[row, length:] = 0
        attention_mask[row, length:] = 0
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


def pair_sample(a: list[int], b: list[int], positions: list[int], label: int = 0) -> Sample:
    """[CLS] a [SEP] b [SEP] with the tokens at `positions` replaced by [MASK] and kept as the labels."""
    tokens = np.array([CLS, *a, SEP, *b, SEP])
    original = tokens[positions].copy()
    tokens[positions] = MASK
    return Sample(tokens, np.array(positions), original, len(a) + 2, label)
