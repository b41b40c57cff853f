"""Samples from the shards -> padded batches in the shape `BertForPreTraining` takes.

Pure functions: the training loader and the evaluation loop call them, and so can anyone reading
the shards for another purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.heads import IGNORE_INDEX
from preprocessing.masking import MaskingRule, mask_tokens, unmask
from preprocessing.shards import Sample

PAD_MULTIPLE = 8  # tensor cores and vectorised CPU kernels prefer lengths that are multiples of 8


def padded_length(longest: int, multiple: int = PAD_MULTIPLE, limit: int | None = None) -> int:
    """`longest` rounded up to a multiple of `multiple`, but never past `limit` (max positions)."""
    length = -(-longest // multiple) * multiple
    return min(length, limit) if limit is not None else length


def collate(
    samples: Sequence[Sample],
    pad_id: int,
    max_predictions: int,
    multiple: int = PAD_MULTIPLE,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad to the longest sample (rounded up to `multiple`) and the prediction slots to
    `max_predictions`; unused slots point at position 0 with label IGNORE_INDEX."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(s.input_ids) for s in samples)
    length = padded_length(longest, multiple, max_length)
    batch = len(samples)
    input_ids = np.full((batch, length), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((batch, length), dtype=np.int64)
    attention_mask = np.zeros((batch, length), dtype=np.int64)
    positions = np.zeros((batch, max_predictions), dtype=np.int64)
    labels = np.full((batch, max_predictions), IGNORE_INDEX, dtype=np.int64)
    next_sentence = np.empty(batch, dtype=np.int64)
    for row, sample in enumerate(samples):
        size = len(sample.input_ids)
        predictions = len(sample.masked_lm_positions)
        if predictions > max_predictions:
            raise ValueError(
                f"a sample has {predictions} masked positions but the batch has {max_predictions} slots; "
                f"raise max_predictions to the dataset's max_predictions_per_seq"
            )
        input_ids[row, :size] = sample.input_ids
        token_type_ids[row, sample.segment_b_start : size] = 1
        attention_mask[row, :size] = 1
        positions[row, :predictions] = sample.masked_lm_positions
        labels[row, :predictions] = sample.masked_lm_ids
        next_sentence[row] = sample.next_sentence_label
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "masked_lm_positions": torch.from_numpy(positions),
        "masked_lm_labels": torch.from_numpy(labels),
        "next_sentence_label": torch.from_numpy(next_sentence),
    }


def remask(sample: Sample, rng: np.random.Generator, rule: MaskingRule) -> Sample:
    """The same pair masked afresh (dynamic masking), with the preprocessing masking rule."""
    original = unmask(sample.input_ids, sample.masked_lm_positions, sample.masked_lm_ids)
    masked = mask_tokens(original, rng, rule)
    return Sample(
        input_ids=masked.input_ids,
        masked_lm_positions=masked.positions,
        masked_lm_ids=masked.labels,
        segment_b_start=sample.segment_b_start,
        next_sentence_label=sample.next_sentence_label,
    )
