"""Next-sentence-prediction pairs from tokenized documents, by the original BERT algorithm.

For each document: pick a target length (max_seq_length - 3, or with probability `short_seq_prob`
a random shorter one), accumulate sentences into a chunk until it reaches the target, split the
chunk at a random sentence boundary into A and B; with probability 0.5, and always when the chunk
holds one sentence, B is replaced by sentences from a random other document and the sentences of
the chunk that B did not use go back to be read again. Pairs that are too long lose tokens from
the longer side, each token from the front or the back at random.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

SPECIAL_TOKENS_PER_PAIR = 3  # [CLS] A [SEP] B [SEP]


@dataclass(frozen=True)
class Document:
    """A tokenized document: sentence k is tokens[offsets[k]:offsets[k + 1]], none of them empty."""

    tokens: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sequence[int]], dtype=np.int32) -> Document:
        lengths = [length for length in map(len, sentences) if length]
        tokens = np.fromiter(itertools.chain.from_iterable(sentences), dtype=dtype, count=sum(lengths))
        return cls(tokens=tokens, offsets=np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))

    @property
    def num_sentences(self) -> int:
        return len(self.offsets) - 1

    def span(self, first: int, stop: int) -> np.ndarray:
        """Sentences first .. stop-1 as one array."""
        return self.tokens[self.offsets[first] : self.offsets[stop]]

    def length(self, first: int, stop: int) -> int:
        return int(self.offsets[stop] - self.offsets[first])


@dataclass(frozen=True)
class PairingParams:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    random_next_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.max_seq_length < SPECIAL_TOKENS_PER_PAIR + 2:
            raise ValueError(f"max_seq_length must be at least 5, got {self.max_seq_length}")
        for name in ("short_seq_prob", "random_next_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Pair:
    """[CLS] A [SEP] B [SEP] before masking."""

    tokens: np.ndarray
    segment_b_start: int  # index of B's first token; segment ids are 0 before it, 1 from it
    is_random_next: bool
    truncated: bool


def truncated_lengths(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """Lengths after removing one token at a time from the longer side (B on ties) until they fit."""
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return len_a, len_b
    if len_a > len_b:
        step = min(len_a - len_b, excess)
        len_a, excess = len_a - step, excess - step
    else:
        step = min(len_b - len_a, excess)
        len_b, excess = len_b - step, excess - step
    # Now equal: removals alternate B, A, B, ...
    return len_a - excess // 2, len_b - (excess + 1) // 2


def trim(tokens: np.ndarray, keep: int, rng: random.Random) -> np.ndarray:
    """Drop len - keep tokens, each from the front or the back with probability 1/2."""
    removed = len(tokens) - keep
    if removed <= 0:
        return tokens
    from_front = rng.getrandbits(removed).bit_count()  # Binomial(removed, 1/2)
    return tokens[from_front : from_front + keep]


def make_pair(a: np.ndarray, b: np.ndarray, max_tokens: int, cls_id: int, sep_id: int, rng: random.Random):
    keep_a, keep_b = truncated_lengths(len(a), len(b), max_tokens)
    truncated = keep_a < len(a) or keep_b < len(b)
    a, b = trim(a, keep_a, rng), trim(b, keep_b, rng)
    tokens = np.empty(len(a) + len(b) + SPECIAL_TOKENS_PER_PAIR, dtype=a.dtype)
    tokens[0] = cls_id
    tokens[1 : 1 + len(a)] = a
    tokens[1 + len(a)] = sep_id
    tokens[2 + len(a) : -1] = b
    tokens[-1] = sep_id
    return tokens, len(a) + 2, truncated


def random_other_index(count: int, current: int, rng: random.Random) -> int:
    """Uniform over the other documents; the same one only when it is alone."""
    if count == 1:
        return current
    other = rng.randrange(count - 1)
    return other + 1 if other >= current else other


def pairs_from_document(
    documents: Sequence[Document],
    index: int,
    params: PairingParams,
    cls_id: int,
    sep_id: int,
    rng: random.Random,
) -> Iterator[Pair]:
    """The NSP pairs of documents[index]; the other documents supply random B segments."""
    document = documents[index]
    max_tokens = params.max_seq_length - SPECIAL_TOKENS_PER_PAIR
    target = max_tokens
    if rng.random() < params.short_seq_prob:
        target = rng.randint(2, max_tokens)

    chunk_start = 0  # first sentence of the chunk being accumulated
    i = 0
    while i < document.num_sentences:
        chunk_end = i + 1
        if chunk_end < document.num_sentences and document.length(chunk_start, chunk_end) < target:
            i += 1
            continue
        sentences = chunk_end - chunk_start
        a_end = chunk_start + (rng.randint(1, sentences - 1) if sentences >= 2 else 1)
        a = document.span(chunk_start, a_end)
        if sentences == 1 or rng.random() < params.random_next_prob:
            other_index = random_other_index(len(documents), index, rng)
            other = documents[other_index]
            b_target = target - len(a)
            first = rng.randrange(other.num_sentences)
            # At least one sentence, then until B reaches its share of the target.
            stop = first + 1
            while stop < other.num_sentences and other.length(first, stop) < b_target:
                stop += 1
            b = other.span(first, stop)
            is_random_next = True
            i = a_end - 1  # the chunk's sentences after A are read again
        else:
            b = document.span(a_end, chunk_end)
            is_random_next = False
        tokens, b_start, truncated = make_pair(a, b, max_tokens, cls_id, sep_id, rng)
        yield Pair(tokens=tokens, segment_b_start=b_start, is_random_next=is_random_next, truncated=truncated)
        i += 1
        chunk_start = i
