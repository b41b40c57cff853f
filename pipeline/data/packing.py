"""Sequence packing: several training instances in one row, with no attention between them.

A micro-batch of N instances becomes as few rows of `capacity` tokens as first-fit decreasing finds.
Each instance keeps its own tokens, segment ids and [CLS]; positions restart at 0 for each instance; a
per-token `sequence_ids` (1, 2, ... within a row, 0 for padding) tells the model which tokens may attend
to which; the masked-LM positions are moved to where the instance sits in its row, and every [CLS]
gets an NSP slot. The batch still holds exactly the N instances it would hold unpacked, so the losses
(mean over masked tokens, mean over instances), the learning-rate recipe and the data position of a
resumed run are the same as without packing.

Packing is done here, per micro-batch, rather than in preprocessing: the shards keep one instance per
sample (what evaluation, Hugging Face and every other reader expect), one dataset serves packed and
unpacked training, and first-fit decreasing over a batch costs microseconds. Rows per batch then vary
from batch to batch, which eager execution takes as it comes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.heads import IGNORE_INDEX
from pipeline.data.collate import PAD_MULTIPLE, padded_length
from preprocessing.shards import Sample

DEFAULT_MAX_PER_ROW = 8  # bounds the NSP and prediction slots per row; short instances are rare past that


def first_fit_decreasing(lengths: Sequence[int], capacity: int, max_per_row: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows whose lengths sum to at most `capacity`, with at most
    `max_per_row` per row: longest first, each into the first row it fits (11/9 of the optimum row
    count at worst). Ties keep input order, so the same batch always packs the same way."""
    if max_per_row < 1:
        raise ValueError(f"max_per_row must be at least 1, got {max_per_row}")
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise ValueError(f"an instance of {too_long[0]} tokens does not fit a row of {capacity}")
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[index] and len(rows[r]) < max_per_row), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return rows


def collate_packed(
    samples: Sequence[Sample],
    pad_id: int,
    max_predictions: int,
    capacity: int,
    max_per_row: int = DEFAULT_MAX_PER_ROW,
    multiple: int = PAD_MULTIPLE,
) -> dict[str, torch.Tensor]:
    """The packed form of a batch of `samples` (rows x length, length <= capacity):

    input_ids, token_type_ids, position_ids, sequence_ids, attention_mask (1 on real tokens) per token;
    masked_lm_positions / masked_lm_labels per prediction slot (IGNORE_INDEX in unused ones);
    next_sentence_positions (each instance's [CLS]) / next_sentence_label per instance slot.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    for sample in samples:
        if len(sample.masked_lm_positions) > max_predictions:
            raise ValueError(
                f"a sample has {len(sample.masked_lm_positions)} masked positions but the batch has "
                f"{max_predictions} slots; raise max_predictions to the dataset's max_predictions_per_seq"
            )
    lengths = [len(s.input_ids) for s in samples]
    rows = first_fit_decreasing(lengths, capacity, max_per_row)
    length = padded_length(max(sum(lengths[i] for i in row) for row in rows), multiple, capacity)
    slots = max(sum(len(samples[i].masked_lm_positions) for i in row) for row in rows)
    instances = max(len(row) for row in rows)
    shape = (len(rows), length)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    token_type_ids = np.zeros(shape, dtype=np.int64)
    position_ids = np.zeros(shape, dtype=np.int64)
    sequence_ids = np.zeros(shape, dtype=np.int64)
    positions = np.zeros((len(rows), slots), dtype=np.int64)
    labels = np.full((len(rows), slots), IGNORE_INDEX, dtype=np.int64)
    cls_positions = np.zeros((len(rows), instances), dtype=np.int64)
    next_sentence = np.full((len(rows), instances), IGNORE_INDEX, dtype=np.int64)
    for r, row in enumerate(rows):
        start = slot = 0
        for k, index in enumerate(row):
            sample, size = samples[index], lengths[index]
            end = start + size
            input_ids[r, start:end] = sample.input_ids
            token_type_ids[r, start + sample.segment_b_start : end] = 1
            position_ids[r, start:end] = np.arange(size)
            sequence_ids[r, start:end] = k + 1
            predictions = len(sample.masked_lm_positions)
            positions[r, slot : slot + predictions] = np.asarray(sample.masked_lm_positions) + start
            labels[r, slot : slot + predictions] = sample.masked_lm_ids
            cls_positions[r, k] = start
            next_sentence[r, k] = sample.next_sentence_label
            start, slot = end, slot + predictions
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy((sequence_ids > 0).astype(np.int64)),
        "position_ids": torch.from_numpy(position_ids),
        "sequence_ids": torch.from_numpy(sequence_ids),
        "masked_lm_positions": torch.from_numpy(positions),
        "masked_lm_labels": torch.from_numpy(labels),
        "next_sentence_positions": torch.from_numpy(cls_positions),
        "next_sentence_label": torch.from_numpy(next_sentence),
    }
