"""A synthetic masked-LM task that only attention can solve: each `[MASK]` hides a copy of the token
`offset` positions to its left, and the tokens are otherwise uniformly random.

A model that does not look at other positions cannot beat log(vocabulary) nats there; one whose
attention has found the offset predicts every masked token. How fast a model and its training recipe
get there shows whether they can learn to use context at all, apart from any corpus.
"""

from __future__ import annotations

import numpy as np
import torch

from model.heads import IGNORE_INDEX


def copy_offset_batch(
    rng: np.random.Generator,
    batch: int,
    length: int,
    first_token: int,
    vocab_size: int,
    offset: int,
    mask_id: int,
) -> dict[str, torch.Tensor]:
    """A pretraining batch (the keys `collate` makes) of random tokens in [first_token, vocab_size).

    Positions are cut into blocks of `offset`; every position of every odd block is masked and its
    label is the token `offset` to the left, which lies in an even block and is never masked.
    """
    if offset < 1 or 2 * offset > length:
        raise ValueError(f"offset must be in [1, length/2] = [1, {length // 2}], got {offset}")
    tokens = rng.integers(first_token, vocab_size, size=(batch, length))
    positions = np.flatnonzero((np.arange(length) // offset) % 2 == 1)
    labels = tokens[:, positions - offset]
    tokens[:, positions] = labels  # the sequence really holds the copy; it is then masked
    inputs = tokens.copy()
    inputs[:, positions] = mask_id
    return {
        "input_ids": torch.from_numpy(inputs),
        "token_type_ids": torch.zeros(batch, length, dtype=torch.int64),
        "attention_mask": torch.ones(batch, length, dtype=torch.int64),
        "masked_lm_positions": torch.from_numpy(np.tile(positions, (batch, 1))),
        "masked_lm_labels": torch.from_numpy(labels.astype(np.int64)),
        "next_sentence_label": torch.full((batch,), IGNORE_INDEX, dtype=torch.int64),
    }
