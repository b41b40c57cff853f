"""Training instances of one bucket of documents: pairing, masking and encoding, dupe_factor times.

A bucket is a hash-chosen sample of documents from the whole corpus; the random B segments come
from it. Everything random is derived from (seed, split, bucket, pass), and documents are taken in
key order, so a bucket gives the same bytes wherever and whenever it is processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from preprocessing.masking import MaskingRule, mask_tokens
from preprocessing.pairing import Document, PairingParams, pairs_from_document
from preprocessing.randomness import numpy_rng, python_rng
from preprocessing.shards import Sample, encode_sample


@dataclass
class InstanceStats:
    instances: int = 0
    tokens: int = 0
    masked_tokens: int = 0
    truncated_pairs: int = 0
    random_next: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int


@dataclass
class BucketSamples:
    """Encoded samples in their seeded order, with each one's token and prediction counts."""

    data: list[bytes]
    tokens: np.ndarray
    masked: np.ndarray


def bucket_instances(
    documents: Sequence[Document],
    stream: tuple[object, ...],
    pairing: PairingParams,
    dupe_factor: int,
    rule: MaskingRule,
    special: SpecialIds,
    dtype: np.dtype,
) -> tuple[BucketSamples, InstanceStats]:
    """All samples of a bucket and their statistics; `stream` names the random streams, e.g.
    (seed, split, bucket)."""
    stats = InstanceStats()
    data: list[bytes] = []
    tokens: list[int] = []
    masked_counts: list[int] = []
    for dupe in range(dupe_factor):
        pair_rng = python_rng(*stream, "pairs", dupe)
        mask_rng = numpy_rng(*stream, "masks", dupe)
        for index in range(len(documents)):
            for pair in pairs_from_document(documents, index, pairing, special.cls, special.sep, pair_rng):
                masked = mask_tokens(pair.tokens, mask_rng, rule)
                sample = Sample(
                    input_ids=masked.input_ids,
                    masked_lm_positions=masked.positions,
                    masked_lm_ids=masked.labels,
                    segment_b_start=pair.segment_b_start,
                    next_sentence_label=int(pair.is_random_next),
                )
                data.append(encode_sample(sample, dtype))
                tokens.append(len(pair.tokens))
                masked_counts.append(len(masked.positions))
                stats.truncated_pairs += pair.truncated
                stats.random_next += pair.is_random_next
    order = list(range(len(data)))
    python_rng(*stream, "order").shuffle(order)
    samples = BucketSamples(
        data=[data[i] for i in order],
        tokens=np.asarray(tokens, dtype=np.int64)[order],
        masked=np.asarray(masked_counts, dtype=np.int64)[order],
    )
    stats.instances = len(data)
    stats.tokens = int(samples.tokens.sum())
    stats.masked_tokens = int(samples.masked.sum())
    return samples, stats
