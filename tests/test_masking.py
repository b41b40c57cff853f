"""Masking: exact rules per instance, the 80/10/10 split over many instances."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.masking import MaskingRule, mask_tokens, number_to_predict, unmask

# ids: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 [MASK] 5 [unused0], 6..99 words, 100..149 "##" pieces
PAD, UNK, CLS, SEP, MASK, UNUSED = range(6)
VOCAB = 150


def rule(**changes) -> MaskingRule:
    never = np.zeros(VOCAB, dtype=bool)
    never[[PAD, CLS, SEP, MASK]] = True
    continues = np.zeros(VOCAB, dtype=bool)
    continues[100:] = True
    values = {
        "mask_id": MASK,
        "never_masked": never,
        "replacements": np.arange(6, VOCAB),
        "continues_word": continues,
        "masked_lm_prob": 0.15,
        "max_predictions": 20,
        **changes,
    }
    return MaskingRule(**values)


def pair(len_a: int, len_b: int, rng: np.random.Generator, pieces: bool = False) -> np.ndarray:
    high = VOCAB if pieces else 100
    a, b = rng.integers(6, high, len_a), rng.integers(6, high, len_b)
    return np.concatenate(([CLS], a, [SEP], b, [SEP]))


@pytest.mark.parametrize(("maskable", "expected"), [(1, 1), (3, 1), (10, 2), (100, 15), (200, 20), (0, 0)])
def test_number_to_predict(maskable, expected):
    assert number_to_predict(maskable, rule()) == expected


def test_prediction_count_positions_and_labels():
    rng = np.random.default_rng(0)
    for trial in range(200):
        tokens = pair(1 + trial % 60, 1 + trial % 37, rng)
        tokens = np.concatenate((tokens, [PAD] * 5))  # padding, if a caller passes it, is never masked
        masked = mask_tokens(tokens, rng, rule())
        maskable = len(tokens) - 3 - 5
        assert len(masked.positions) == min(20, max(1, round(0.15 * maskable)))
        assert np.all(np.diff(masked.positions) > 0)
        assert not np.isin(tokens[masked.positions], [CLS, SEP, PAD]).any()
        assert np.array_equal(masked.labels, tokens[masked.positions])
        untouched = np.ones(len(tokens), dtype=bool)
        untouched[masked.positions] = False
        assert np.array_equal(masked.input_ids[untouched], tokens[untouched])
        assert np.array_equal(unmask(masked.input_ids, masked.positions, masked.labels), tokens)


def test_eighty_ten_ten_over_many_instances():
    rng = np.random.default_rng(1)
    outcomes = {"mask": 0, "same": 0, "random": 0}
    for _ in range(2000):
        tokens = pair(60, 63, rng)
        masked = mask_tokens(tokens, rng, rule())
        new = masked.input_ids[masked.positions]
        outcomes["mask"] += int(np.sum(new == MASK))
        outcomes["same"] += int(np.sum(new == masked.labels))
        replaced = new[(new != MASK) & (new != masked.labels)]
        outcomes["random"] += len(replaced)
        assert not np.isin(replaced, [PAD, UNK, CLS, SEP, MASK, UNUSED]).any()
    total = sum(outcomes.values())
    assert total == 2000 * 18
    # 36,000 predictions: one standard deviation of a 10% share is 0.16 points; bounds are ~6 sigma.
    # A random draw equal to the original (1 in 144) counts as "same": +0.07 points there.
    assert outcomes["mask"] / total == pytest.approx(0.80, abs=0.012)
    assert outcomes["same"] / total == pytest.approx(0.10 + 0.1 / 144, abs=0.01)
    assert outcomes["random"] / total == pytest.approx(0.10 - 0.1 / 144, abs=0.01)


def test_whole_words_are_masked_together():
    rng = np.random.default_rng(2)
    continues = rule().continues_word
    for _ in range(300):
        tokens = pair(50, 40, rng, pieces=True)
        masked = mask_tokens(tokens, rng, rule(whole_word=True))
        chosen = np.zeros(len(tokens), dtype=bool)
        chosen[masked.positions] = True
        assert 1 <= chosen.sum() <= number_to_predict(len(tokens) - 3, rule())
        for position in range(1, len(tokens)):
            joined = continues[tokens[position]] and tokens[position - 1] not in (CLS, SEP)
            if joined:  # a piece and the token before it belong to one word: both or neither
                assert chosen[position] == chosen[position - 1]


def test_a_piece_after_a_separator_starts_its_own_word():
    tokens = np.array([CLS, 10, 101, 102, SEP, 103, 104, 11, SEP])  # B begins with "##" pieces
    words = set()
    for seed in range(200):
        masked = mask_tokens(tokens, np.random.default_rng(seed), rule(whole_word=True, masked_lm_prob=0.3))
        words.add(tuple(masked.positions.tolist()))
    # Words: (1, 2, 3), (5, 6) and (7,). 7 maskable tokens -> 2 predictions: the 3-token word never
    # fits; either (5, 6) comes first and fills the quota, or (7,) does and (5, 6) would overshoot.
    assert words == {(5, 6), (7,)}


def test_same_seed_same_masks():
    tokens = pair(40, 40, np.random.default_rng(3))
    first = mask_tokens(tokens, np.random.default_rng(7), rule())
    second = mask_tokens(tokens, np.random.default_rng(7), rule())
    assert np.array_equal(first.input_ids, second.input_ids)
    assert np.array_equal(first.positions, second.positions)


def test_rule_rejects_impossible_values():
    with pytest.raises(ValueError, match="masked_lm_prob"):
        rule(masked_lm_prob=0.0)
    with pytest.raises(ValueError, match="max_predictions"):
        rule(max_predictions=0)
    with pytest.raises(ValueError, match="random replacement"):
        rule(replacements=np.array([], dtype=np.int64))
