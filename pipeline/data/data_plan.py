"""Which samples each loader stream reads, in which order: pure arithmetic over the manifest's counts.

A *stream* is one reader: a DataLoader worker of one rank (streams = world size x workers). Each epoch
the shards are put in a seeded order and the concatenation of their samples is cut into one contiguous,
equal-sized range per stream (sizes differ by at most one sample, whatever the shard count). A stream's
range is read in windows of a few shards' worth of samples and each window is emitted in a seeded random
order. A stream runs through the epochs without end, so no rank ever runs dry before another.

Because the order is a pure function of (seed, epoch, stream, window), a stream's state is one integer,
its *plan index*, the number of plan positions it has passed. Resuming at a plan index costs no reading
of what came before, and the resumed stream emits exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from preprocessing.errors import BertpipeError
from preprocessing.randomness import numpy_rng


class PlanError(BertpipeError, ValueError):
    """The dataset cannot feed the requested streams."""


@dataclass(frozen=True)
class Piece:
    """Samples [first, stop) of shard `shard` (its index in the split's manifest list)."""

    shard: int
    first: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class Window:
    """Consecutive pieces of a stream's range, emitted together in a shuffled order."""

    index: int  # window number within the stream's epoch range
    start: int  # offset of its first sample within the stream's epoch range
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(piece.size for piece in self.pieces)


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's shard permutation. The seed parts are hashed by their repr, so numpy integers
    (whose repr differs from an int's) are turned into ints first: the same values, the same order."""
    return numpy_rng(int(seed), "shard-order", int(epoch)).permutation(num_shards)


def stream_bounds(total: int, streams: int, stream: int) -> tuple[int, int]:
    """Stream `stream`'s contiguous share [start, stop) of `total` samples; shares differ by at most one."""
    return stream * total // streams, (stream + 1) * total // streams


def stream_epoch_size(shard_sizes: Sequence[int], streams: int, stream: int) -> int:
    start, stop = stream_bounds(sum(shard_sizes), streams, stream)
    return stop - start


def check_streams(shard_sizes: Sequence[int], streams: int, split: str = "train") -> None:
    total = sum(shard_sizes)
    if total < streams:
        raise PlanError(
            f"the {split} split has {total} samples, fewer than the {streams} loader streams "
            f"(world size x loader workers); use fewer loader workers or preprocess more data"
        )


def stream_pieces(shard_sizes: Sequence[int], order: Sequence[int], start: int, stop: int) -> list[Piece]:
    """The pieces of shards that samples [start, stop) of the concatenation in `order` fall into."""
    pieces = []
    offset = 0
    for shard in order:
        size = shard_sizes[shard]
        low, high = max(start, offset), min(stop, offset + size)
        if low < high:
            pieces.append(Piece(int(shard), low - offset, high - offset))
        offset += size
        if offset >= stop:
            break
    return pieces


def windows(pieces: Sequence[Piece], window_shards: int) -> list[Window]:
    """Group pieces `window_shards` at a time (a reader holds one window of samples in memory)."""
    if window_shards < 1:
        raise PlanError(f"shuffle_window_shards must be at least 1, not {window_shards}")
    result, start = [], 0
    for index, first in enumerate(range(0, len(pieces), window_shards)):
        group = tuple(pieces[first : first + window_shards])
        result.append(Window(index, start, group))
        start += sum(piece.size for piece in group)
    return result


def epoch_windows(
    shard_sizes: Sequence[int], streams: int, stream: int, seed: int, epoch: int, window_shards: int
) -> list[Window]:
    order = shard_order(len(shard_sizes), seed, epoch)
    start, stop = stream_bounds(sum(shard_sizes), streams, stream)
    return windows(stream_pieces(shard_sizes, order, start, stop), window_shards)


def window_permutation(size: int, seed: int, epoch: int, stream: int, window: int) -> np.ndarray:
    return numpy_rng(int(seed), "window-order", int(epoch), int(stream), int(window)).permutation(size)


@dataclass(frozen=True)
class PlannedSample:
    """One emission of a stream: the sample (shard, index in shard) at plan index `plan_index`."""

    plan_index: int
    epoch: int
    shard: int
    index: int


def stream_plan(
    shard_sizes: Sequence[int],
    streams: int,
    stream: int,
    seed: int,
    window_shards: int,
    start_plan_index: int = 0,
) -> Iterator[tuple[Window, Iterator[PlannedSample]]]:
    """The stream's emissions from `start_plan_index` on, window by window, without end.

    Yields each window (so the caller can load its shards) with an iterator over its emissions.
    """
    check_streams(shard_sizes, streams)
    epoch_size = stream_epoch_size(shard_sizes, streams, stream)
    epoch, offset = divmod(int(start_plan_index), epoch_size)
    while True:
        for window in epoch_windows(shard_sizes, streams, stream, seed, epoch, window_shards):
            if window.start + window.size <= offset:
                continue
            skip = max(0, offset - window.start)
            yield window, _window_emissions(window, seed, epoch, stream, epoch * epoch_size, skip)
        epoch, offset = epoch + 1, 0


def _window_emissions(
    window: Window, seed: int, epoch: int, stream: int, epoch_start: int, skip: int
) -> Iterator[PlannedSample]:
    shards = np.concatenate([np.full(p.size, p.shard) for p in window.pieces])
    indices = np.concatenate([np.arange(p.first, p.stop) for p in window.pieces])
    permutation = window_permutation(window.size, seed, epoch, stream, window.index)
    for position in range(skip, window.size):
        chosen = permutation[position]
        yield PlannedSample(
            plan_index=epoch_start + window.start + position + 1,
            epoch=epoch,
            shard=int(shards[chosen]),
            index=int(indices[chosen]),
        )
