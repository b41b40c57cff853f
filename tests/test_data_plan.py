"""The data plan: which samples each loader stream reads in which order, as pure arithmetic."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import numpy as np
import pytest

from pipeline.data.data_plan import (
    Piece,
    PlanError,
    Window,
    check_streams,
    epoch_windows,
    shard_order,
    stream_bounds,
    stream_epoch_size,
    stream_pieces,
    stream_plan,
    windows,
)


def emissions(shard_sizes, streams, stream, seed=3, window_shards=2, start=0, count=None):
    """The stream's PlannedSamples from plan index `start` on, `count` of them (default: one epoch)."""
    if count is None:
        count = stream_epoch_size(shard_sizes, streams, stream)
    plan = stream_plan(shard_sizes, streams, stream, seed, window_shards, start)
    return list(islice((planned for _, window_emissions in plan for planned in window_emissions), count))


def order_of(planned_samples):
    return [(p.shard, p.index) for p in planned_samples]


# -- bounds and pieces -----------------------------------------------------------------------------


def test_stream_bounds_split_contiguously_with_sizes_differing_by_at_most_one():
    assert [stream_bounds(10, 4, s) for s in range(4)] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert [stream_bounds(12, 3, s) for s in range(3)] == [(0, 4), (4, 8), (8, 12)]
    assert [stream_bounds(5, 5, s) for s in range(5)] == [(s, s + 1) for s in range(5)]
    assert stream_bounds(7, 1, 0) == (0, 7)
    for total in range(1, 60):
        for streams in range(1, total + 1):
            bounds = [stream_bounds(total, streams, s) for s in range(streams)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(bounds[s][1] == bounds[s + 1][0] for s in range(streams - 1))
            sizes = [stop - start for start, stop in bounds]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_stream_epoch_size_sums_the_shards():
    assert [stream_epoch_size([3, 4], 4, s) for s in range(4)] == [1, 2, 2, 2]
    assert stream_epoch_size([305] * 7, 1, 0) == 2135


def test_check_streams_refuses_fewer_samples_than_streams():
    check_streams([2, 1], 3)
    with pytest.raises(PlanError, match=r"the train split has 3 samples, fewer than the 4 loader streams"):
        check_streams([2, 1], 4)
    with pytest.raises(PlanError, match=r"the validation split has 0 samples"):
        check_streams([], 1, split="validation")
    with pytest.raises(PlanError, match="fewer than the 5 loader streams"):
        next(stream_plan([2, 2], 5, 0, seed=0, window_shards=1))


def test_stream_pieces_cut_the_shard_concatenation_in_the_given_order():
    sizes = [10, 20, 30]
    # Concatenation in order [2, 0, 1]: shard 2 is [0, 30), shard 0 is [30, 40), shard 1 is [40, 60).
    assert stream_pieces(sizes, [2, 0, 1], 25, 45) == [Piece(2, 25, 30), Piece(0, 0, 10), Piece(1, 0, 5)]
    assert stream_pieces(sizes, [2, 0, 1], 0, 30) == [Piece(2, 0, 30)]
    assert stream_pieces(sizes, [2, 0, 1], 30, 40) == [Piece(0, 0, 10)]
    assert stream_pieces(sizes, [0, 1, 2], 12, 14) == [Piece(1, 2, 4)]
    assert stream_pieces(sizes, [0, 1, 2], 0, 60) == [Piece(0, 0, 10), Piece(1, 0, 20), Piece(2, 0, 30)]
    assert Piece(1, 2, 4).size == 2


def test_windows_group_pieces_and_record_their_offsets():
    pieces = [Piece(2, 25, 30), Piece(0, 0, 10), Piece(1, 0, 5)]
    assert windows(pieces, 2) == [
        Window(0, 0, (Piece(2, 25, 30), Piece(0, 0, 10))),
        Window(1, 15, (Piece(1, 0, 5),)),
    ]
    assert [(w.index, w.start, w.size) for w in windows(pieces, 1)] == [(0, 0, 5), (1, 5, 10), (2, 15, 5)]
    assert windows(pieces, 5) == [Window(0, 0, tuple(pieces))]
    with pytest.raises(PlanError, match="shuffle_window_shards must be at least 1, not 0"):
        windows(pieces, 0)


def test_epoch_windows_cover_the_stream_bounds():
    sizes = [7, 3, 9, 4, 6]
    for stream in range(3):
        start, stop = stream_bounds(sum(sizes), 3, stream)
        found = epoch_windows(sizes, 3, stream, seed=1, epoch=2, window_shards=2)
        assert sum(w.size for w in found) == stop - start
        assert all(len(w.pieces) <= 2 for w in found)
        assert [w.start for w in found] == list(np.cumsum([0] + [w.size for w in found[:-1]]))


def test_shard_order_is_a_seeded_permutation():
    assert sorted(shard_order(9, 5, 0)) == list(range(9))
    assert list(shard_order(9, 5, 0)) == list(shard_order(9, 5, 0))
    assert list(shard_order(9, 5, 0)) != list(shard_order(9, 5, 1))
    assert list(shard_order(9, 5, 0)) != list(shard_order(9, 6, 0))


# -- one epoch over all streams --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shard_sizes", "streams"),
    [
        ([305], 4),  # fewer shards than streams
        ([305] * 7, 4),
        ([305] * 7, 1),
        ([303, 303, 303, 304, 303, 303, 304], 8),
        ([5, 1, 7, 3, 11, 2], 3),
        ([4, 4], 8),  # one sample or less per stream and shard
        ([1, 1, 1], 3),
    ],
)
@pytest.mark.parametrize("window_shards", [1, 2, 3])
def test_one_epoch_of_all_streams_reads_every_sample_exactly_once(shard_sizes, streams, window_shards):
    everything = Counter()
    sizes = []
    for stream in range(streams):
        epoch = emissions(shard_sizes, streams, stream, window_shards=window_shards)
        sizes.append(len(epoch))
        assert [p.plan_index for p in epoch] == list(range(1, len(epoch) + 1))
        assert {p.epoch for p in epoch} == {0}
        everything.update(order_of(epoch))
    expected = {(shard, index) for shard, size in enumerate(shard_sizes) for index in range(size)}
    assert set(everything) == expected
    assert set(everything.values()) == {1}
    assert sum(sizes) == sum(shard_sizes)
    assert max(sizes) - min(sizes) <= 1


def test_a_stream_runs_on_into_the_next_epochs_without_end():
    sizes = [5, 1, 7, 3]
    following = emissions(sizes, 2, 1, count=3 * stream_epoch_size(sizes, 2, 1))
    epoch_size = stream_epoch_size(sizes, 2, 1)
    assert [p.plan_index for p in following] == list(range(1, 3 * epoch_size + 1))
    assert [p.epoch for p in following] == [0] * epoch_size + [1] * epoch_size + [2] * epoch_size


def test_each_window_emits_exactly_its_own_samples():
    sizes = [5, 1, 7, 3, 11, 2]
    plan = stream_plan(sizes, 2, 0, seed=4, window_shards=2)
    for _ in range(8):  # a few epochs' worth of windows
        window, window_emissions = next(plan)
        expected = sorted((p.shard, i) for p in window.pieces for i in range(p.first, p.stop))
        assert sorted(order_of(window_emissions)) == expected


def test_epochs_differ_and_the_same_seed_and_epoch_repeat():
    sizes = [303, 303, 303, 304, 303, 303, 304]
    epoch_size = sum(sizes)
    two_epochs = emissions(sizes, 1, 0, seed=9, count=2 * epoch_size)
    first, second = order_of(two_epochs[:epoch_size]), order_of(two_epochs[epoch_size:])
    assert first != second
    assert sorted(first) == sorted(second)
    assert order_of(emissions(sizes, 1, 0, seed=9, count=2 * epoch_size)) == first + second
    assert order_of(emissions(sizes, 1, 0, seed=10)) != first
    # The shuffle is not just the shard order: samples of a window are interleaved.
    assert first[:10] != sorted(first[:10])


def test_streams_of_the_same_epoch_are_disjoint_and_seeded_independently():
    sizes = [6, 6, 6, 6]
    streams = [order_of(emissions(sizes, 4, s, seed=2)) for s in range(4)]
    assert all(set(streams[a]).isdisjoint(streams[b]) for a in range(4) for b in range(a + 1, 4))


# -- resuming at a plan index ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shard_sizes", "streams", "stream", "window_shards"),
    [
        ([3, 5, 2, 4], 3, 1, 2),
        ([3, 5, 2, 4], 1, 0, 1),
        ([7], 4, 3, 2),
        ([5, 1, 7, 3, 11, 2], 2, 0, 3),
    ],
)
def test_resuming_at_any_plan_index_emits_the_tail_of_the_uninterrupted_sequence(
    shard_sizes, streams, stream, window_shards
):
    epoch_size = stream_epoch_size(shard_sizes, streams, stream)
    length = 3 * epoch_size + 2
    full = emissions(shard_sizes, streams, stream, window_shards=window_shards, count=length)
    for k in range(length):
        resumed = emissions(shard_sizes, streams, stream, window_shards=window_shards, start=k, count=length - k)
        assert resumed == full[k:], f"resumed at plan index {k}"


def test_resuming_yields_the_window_that_holds_the_resume_point():
    sizes = [3, 5, 2, 4]
    epoch_size = stream_epoch_size(sizes, 1, 0)
    uninterrupted = list(islice(stream_plan(sizes, 1, 0, seed=1, window_shards=1), 4))
    offsets = [0, *np.cumsum([w.size for w, _ in uninterrupted]).tolist()]
    for window_number, (window, _) in enumerate(uninterrupted):
        inside = offsets[window_number] + 1  # one sample into the window
        resumed_window, resumed = next(stream_plan(sizes, 1, 0, seed=1, window_shards=1, start_plan_index=inside))
        assert resumed_window == window
        assert len(list(resumed)) == window.size - 1
    # At an epoch boundary the next epoch starts with its first window.
    first_of_epoch_1 = epoch_windows(sizes, 1, 0, seed=1, epoch=1, window_shards=1)[0]
    assert next(stream_plan(sizes, 1, 0, seed=1, window_shards=1, start_plan_index=epoch_size))[0] == first_of_epoch_1


def test_numpy_integers_give_the_same_plan_as_python_ints():
    # The seeds are hashed from the parts' reprs, and np.int64(5) does not print like 5.
    assert list(shard_order(9, np.int64(5), np.int64(1))) == list(shard_order(9, 5, 1))
    sizes = [3, 5, 2, 4]
    expected = emissions(sizes, 2, 1, seed=7, start=5, count=20)
    assert emissions(sizes, 2, np.int64(1), seed=np.int64(7), start=np.int64(5), count=20) == expected
