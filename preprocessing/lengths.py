"""Instance lengths of a split: the histogram the manifest records, and the padding a batch padded to
max_seq_length would carry. Lengths count every token of [CLS] A [SEP] B [SEP]."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Bins 8 tokens wide: tensor cores want dimensions in multiples of 8, so a bin holds the lengths that pad to
# the same multiple of 8; and at seq 512 a split's histogram is 64 counts, which keeps the manifest small.
BIN_WIDTH = 8


@dataclass(frozen=True)
class LengthHistogram:
    """`counts[i]` instances have a length in (i * bin_width, (i + 1) * bin_width]; bins past the last
    non-empty one are left out."""

    bin_width: int
    counts: tuple[int, ...]

    @property
    def samples(self) -> int:
        return sum(self.counts)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LengthHistogram:
        return cls(bin_width=int(values["bin_width"]), counts=tuple(int(c) for c in values["counts"]))


def length_counts(lengths: Sequence[int] | np.ndarray, bin_width: int = BIN_WIDTH) -> list[int]:
    """Instances per bin of `bin_width` tokens (see LengthHistogram), up to the last non-empty bin."""
    values = np.asarray(lengths, dtype=np.int64)
    if values.size and values.min() < 1:
        raise ValueError(f"instance lengths must be positive, got {int(values.min())}")
    return np.bincount((values - 1) // bin_width).tolist() if values.size else []


def sum_counts(counts: Iterable[Sequence[int]]) -> list[int]:
    """Bin-wise sum of histograms of the same bin width, whatever their lengths."""
    total: list[int] = []
    for bins in counts:
        total.extend([0] * (len(bins) - len(total)))
        for i, count in enumerate(bins):
            total[i] += count
    return total


def mean_length(tokens: int, samples: int) -> float | None:
    """None for a split without samples: it has no length to average."""
    return tokens / samples if samples else None


def padding_share(mean: float | None, max_seq_length: int) -> float | None:
    """The share of a batch padded to `max_seq_length` that is padding: 1 - mean length / max_seq_length."""
    return None if mean is None else 1.0 - mean / max_seq_length
