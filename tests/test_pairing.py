"""Pair building by the original BERT algorithm: exact structure, statistical shares."""

from __future__ import annotations

import random

import numpy as np
import pytest

from preprocessing.pairing import (
    Document,
    PairingParams,
    pairs_from_document,
    random_other_index,
    trim,
    truncated_lengths,
)

CLS, SEP = 2, 3


def naive_truncation(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_truncated_lengths_equal_one_token_at_a_time():
    for max_tokens in (1, 2, 7, 30):
        for len_a in range(0, 40):
            for len_b in range(0, 40):
                assert truncated_lengths(len_a, len_b, max_tokens) == naive_truncation(len_a, len_b, max_tokens)


def test_trim_keeps_a_contiguous_run_cut_from_both_ends():
    tokens = np.arange(100)
    fronts = []
    rng = random.Random(0)
    for _ in range(4000):
        kept = trim(tokens, 60, rng)
        assert len(kept) == 60 and np.array_equal(kept, np.arange(kept[0], kept[0] + 60))
        fronts.append(int(kept[0]))
    # Binomial(40, 1/2): mean 20, sd 3.16; the mean of 4000 draws is within 0.3 of 20 by ~6 sd.
    assert np.mean(fronts) == pytest.approx(20, abs=0.3)
    assert np.std(fronts) == pytest.approx(np.sqrt(10), rel=0.08)


def test_random_other_index_is_uniform_over_the_others():
    rng = random.Random(1)
    counts = np.bincount([random_other_index(5, 2, rng) for _ in range(20000)], minlength=5)
    assert counts[2] == 0
    assert np.all(np.abs(counts[[0, 1, 3, 4]] / 20000 - 0.25) < 0.015)
    assert random_other_index(1, 0, rng) == 0


def corpus(num_docs: int, sentences: int, sentence_len, seed: int = 0) -> list[Document]:
    """Documents whose tokens tell where they came from: doc d's lie in [1000 d + 10, 1000 d + 1000)."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(num_docs):
        lengths = [sentence_len(rng) for _ in range(sentences)]
        tokens = 1000 * d + 10 + np.arange(sum(lengths)) % 990
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        docs.append(Document(tokens=tokens.astype(np.int32), offsets=offsets))
    return docs


def test_pair_structure_and_lengths():
    docs = corpus(20, 40, lambda rng: int(rng.integers(1, 60)))
    params = PairingParams(max_seq_length=64, short_seq_prob=0.1)
    rng = random.Random(0)
    count = 0
    for index in range(len(docs)):
        for pair in pairs_from_document(docs, index, params, CLS, SEP, rng):
            tokens, b = pair.tokens, pair.segment_b_start
            assert len(tokens) <= 64
            assert tokens[0] == CLS and tokens[b - 1] == SEP and tokens[-1] == SEP
            assert np.sum(tokens == SEP) == 2 and np.sum(tokens == CLS) == 1
            a_tokens, b_tokens = tokens[1 : b - 1], tokens[b:-1]
            assert len(a_tokens) >= 1 and len(b_tokens) >= 1
            assert np.all(a_tokens // 1000 == index)  # A always comes from the document itself
            b_docs = set((b_tokens // 1000).tolist())
            assert len(b_docs) == 1
            assert (b_docs != {index}) == pair.is_random_next
            count += 1
    assert count > 200


def test_unused_sentences_go_back():
    """With one-token sentences nothing is ever truncated, and A plus the non-random B segments of a
    document, in order, are exactly the document: every sentence is used once, none skipped."""
    docs = corpus(10, 700, lambda rng: 1)
    params = PairingParams(max_seq_length=32, short_seq_prob=0.2)
    rng = random.Random(5)
    random_pairs = 0
    for index in range(len(docs)):
        read = []
        for pair in pairs_from_document(docs, index, params, CLS, SEP, rng):
            assert not pair.truncated
            read.extend(pair.tokens[1 : pair.segment_b_start - 1])
            if not pair.is_random_next:
                read.extend(pair.tokens[pair.segment_b_start : -1])
            random_pairs += pair.is_random_next
        assert np.array_equal(read, docs[index].tokens)
    assert random_pairs > 50


def test_random_next_share_is_one_half():
    docs = corpus(100, 60, lambda rng: int(rng.integers(5, 15)))
    params = PairingParams(max_seq_length=128, short_seq_prob=0.0)
    rng = random.Random(9)
    labels = [p.is_random_next for i in range(len(docs)) for p in pairs_from_document(docs, i, params, CLS, SEP, rng)]
    # ~700 pairs: sd of the share 0.019; the last chunk of a document may hold one sentence and is
    # then always random, which adds a little.
    assert len(labels) > 500
    assert 0.44 < np.mean(labels) < 0.58


def test_single_sentence_chunks_always_take_a_random_b():
    docs = corpus(5, 10, lambda rng: 200)  # every sentence alone exceeds the target
    params = PairingParams(max_seq_length=128, short_seq_prob=0.0)
    rng = random.Random(2)
    pairs = [p for i in range(len(docs)) for p in pairs_from_document(docs, i, params, CLS, SEP, rng)]
    assert pairs and all(p.is_random_next and p.truncated and len(p.tokens) == 128 for p in pairs)


def test_short_sequences_with_short_seq_prob():
    docs = corpus(30, 200, lambda rng: int(rng.integers(3, 12)))
    rng = random.Random(4)

    def pairs(short_seq_prob: float) -> list[list]:
        params = PairingParams(max_seq_length=128, short_seq_prob=short_seq_prob)
        return [list(pairs_from_document(docs, i, params, CLS, SEP, rng)) for i in range(len(docs))]

    # Without short sequences a chunk grows to the target (125 tokens) and a non-random pair, which
    # is the whole chunk, is cut to exactly 128; only a document's last chunk may fall short.
    for document_pairs in pairs(0.0):
        assert all(len(p.tokens) == 128 for p in document_pairs[:-1] if not p.is_random_next)
    # With short_seq_prob=1 each document draws its target uniformly from [2, 125].
    lengths = [len(p.tokens) for document_pairs in pairs(1.0) for p in document_pairs[:-1]]
    assert 40 < np.mean(lengths) < 90


def test_params_are_validated():
    with pytest.raises(ValueError, match="max_seq_length"):
        PairingParams(max_seq_length=4)
    with pytest.raises(ValueError, match="short_seq_prob"):
        PairingParams(short_seq_prob=1.5)
