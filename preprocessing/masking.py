"""Masked-LM masking: the one implementation of BERT's 80/10/10 rule.

Preprocessing calls it once per instance; the training loader calls it again per epoch for dynamic
re-masking. Pure numpy: tokens and a seeded Generator in, masked tokens and labels out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASK_FRACTION = 0.8  # of the chosen tokens: replaced by [MASK]
KEEP_FRACTION = 0.1  # left unchanged; the remaining 0.1 becomes a random non-special token


@dataclass(frozen=True)
class MaskingRule:
    """What to mask and what with.

    `never_masked[id]` is True for the special tokens ([CLS], [SEP], [PAD], [MASK]); they are
    never chosen. `replacements` holds the ids a chosen token may be swapped for (the vocabulary
    without special or [unused] tokens). `continues_word[id]` is True for `##` pieces; with
    `whole_word` a word and its pieces are chosen together.
    """

    mask_id: int
    never_masked: np.ndarray
    replacements: np.ndarray
    continues_word: np.ndarray
    masked_lm_prob: float = 0.15
    max_predictions: int = 20
    whole_word: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.max_predictions < 1:
            raise ValueError(f"max_predictions must be at least 1, got {self.max_predictions}")
        if len(self.replacements) == 0:
            raise ValueError("the vocabulary has no non-special token to use as a random replacement")


@dataclass(frozen=True)
class MaskedTokens:
    input_ids: np.ndarray  # the tokens after masking
    positions: np.ndarray  # ascending positions of the predictions
    labels: np.ndarray  # the original ids at those positions


def number_to_predict(candidates: int, rule: MaskingRule) -> int:
    """round(masked_lm_prob x maskable tokens), at least one, at most max_predictions."""
    return min(rule.max_predictions, max(1, round(candidates * rule.masked_lm_prob)), candidates)


def word_starts(tokens: np.ndarray, maskable: np.ndarray, continues_word: np.ndarray) -> np.ndarray:
    """Positions of maskable tokens that begin a word: not a `##` piece, or a piece right after a
    token that cannot be masked (a segment truncated mid-word starts a group of its own)."""
    is_piece = continues_word[tokens]
    previous_maskable = np.concatenate(([False], maskable[:-1]))
    return np.flatnonzero(maskable & ~(is_piece & previous_maskable))


def choose_positions(tokens: np.ndarray, rng: np.random.Generator, rule: MaskingRule) -> np.ndarray:
    """The positions to predict, ascending."""
    maskable = ~rule.never_masked[tokens]
    candidates = np.flatnonzero(maskable)
    if len(candidates) == 0:
        return candidates
    wanted = number_to_predict(len(candidates), rule)
    if not rule.whole_word:
        return np.sort(rng.permutation(candidates)[:wanted])

    starts = word_starts(tokens, maskable, rule.continues_word)
    # A word runs from its start to the next start or the next unmaskable token.
    boundaries = np.append(np.flatnonzero(~maskable), len(tokens))
    ends = np.minimum(np.append(starts[1:], len(tokens)), boundaries[np.searchsorted(boundaries, starts)])
    chosen: list[np.ndarray] = []
    total = 0
    for word in rng.permutation(len(starts)):
        size = ends[word] - starts[word]
        if total + size > wanted:
            continue  # as in the reference: skip words that would overshoot, try smaller ones
        chosen.append(np.arange(starts[word], ends[word]))
        total += size
        if total == wanted:
            break
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, rule: MaskingRule) -> MaskedTokens:
    """Choose positions and apply 80% [MASK], 10% unchanged, 10% a random non-special token."""
    positions = choose_positions(tokens, rng, rule)
    labels = tokens[positions]
    masked = tokens.copy()
    draw = rng.random(len(positions))
    to_mask = draw < MASK_FRACTION
    to_replace = draw >= MASK_FRACTION + KEEP_FRACTION
    masked[positions[to_mask]] = rule.mask_id
    replaced = positions[to_replace]
    masked[replaced] = rule.replacements[rng.integers(0, len(rule.replacements), len(replaced))]
    return MaskedTokens(input_ids=masked, positions=positions, labels=labels)


def unmask(input_ids: np.ndarray, positions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The original tokens of a masked instance: what dynamic re-masking starts from."""
    original = input_ids.copy()
    original[positions] = labels
    return original
