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


def bucket_instances(
    documents: Sequence[Document],
    stream: tuple[object, ...],
    pairing: PairingParams,
    dupe_factor: int,
    rule: MaskingRule,
    special: SpecialIds,
    dtype: np.dtype,
) -> tuple[list[bytes], InstanceStats]:
    """Encoded samples of the bucket in a seeded random order, and their statistics.

    `stream` names the random streams, e.g. (seed, split, bucket).
    """
    stats = InstanceStats()
    samples: list[bytes] = []
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
                samples.append(encode_sample(sample, dtype))
                stats.instances += 1
                stats.tokens += len(pair.tokens)
                stats.masked_tokens += len(masked.positions)
                stats.truncated_pairs += pair.truncated
                stats.random_next += pair.is_random_next
    python_rng(*stream, "order").shuffle(samples)
    return samples, stats
