"""Shard encoding: samples, tar bytes, balanced shard bounds."""

from __future__ import annotations

import io
import itertools
import os
import tarfile

import numpy as np
import pytest

from preprocessing.shards import (
    BLOCK,
    RECORD,
    Sample,
    decode_sample,
    encode_sample,
    sample_key,
    shard_bounds,
    shard_count,
    shard_name,
    tar_bytes,
    tar_member_bytes,
    token_dtype,
)


def reference_tar(members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, data in members:
            info = tarfile.TarInfo(f"{key}.msgpack")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("count", [0, 1, 7, 50])
def test_tar_bytes_equal_pythons_tarfile(count):
    members = [(sample_key("train", i), os.urandom((i * 97) % 1500)) for i in range(count)]
    data = tar_bytes(members)
    assert data == reference_tar(members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()] == [
            (f"{k}.msgpack", d) for k, d in members
        ]


def test_sample_round_trip_and_segment_ids():
    sample = Sample(
        input_ids=np.array([2, 10, 4, 3, 11, 12, 3]),
        masked_lm_positions=np.array([2, 5]),
        masked_lm_ids=np.array([17, 12]),
        segment_b_start=4,
        next_sentence_label=1,
    )
    for dtype in (token_dtype(30522), token_dtype(100_000)):
        back = decode_sample(encode_sample(sample, dtype), dtype)
        assert back.input_ids.tolist() == sample.input_ids.tolist()
        assert back.masked_lm_positions.tolist() == [2, 5] and back.masked_lm_ids.tolist() == [17, 12]
        assert (back.segment_b_start, back.next_sentence_label) == (4, 1)
    assert sample.segment_ids.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_token_dtype_and_names():
    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<i4")
    assert shard_name("train", 12) == "train-000012.tar"
    assert "." not in sample_key("validation", 123) and sample_key("train", 5) == "train-0000000005"


@pytest.mark.parametrize(("total", "shards"), [(10, 3), (7, 7), (1000, 13), (5, 1)])
def test_shard_bounds_cover_everything_with_sizes_within_one(total, shards):
    bounds = shard_bounds(total, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_count_from_target_size():
    assert shard_count(1000, 10 * 2**20, 2**20) == 10
    assert shard_count(3, 10 * 2**20, 2**20) == 3  # never more shards than samples
    assert shard_count(1000, 100, 2**20) == 1
    assert shard_count(0, 0, 2**20) == 0


@pytest.mark.parametrize("sizes", [[0], [1], [511], [512], [513], [300, 700, 1024, 5], list(range(0, 3000, 7))])
def test_tar_member_bytes_is_the_archive_without_its_end_padding(sizes):
    members = [(f"k{i}", os.urandom(n)) for i, n in enumerate(sizes)]
    archive = len(tar_bytes(members))
    members_only = tar_member_bytes(np.array(sizes))
    assert members_only == sum(BLOCK + -(-n // BLOCK) * BLOCK for n in sizes)
    assert 2 * BLOCK <= archive - members_only < 2 * BLOCK + RECORD  # end-of-archive blocks, record padding
