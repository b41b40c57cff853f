"""The Beam job's planning as pure functions: buckets from the input size, documents to buckets, and shards
cut from the buckets' samples."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.planning import BucketFile, BucketPlan, ShardTask, assign, plan_buckets, plan_shards
from preprocessing.shards import shard_bounds, shard_count


def buckets_of(sizes: dict[tuple[str, int], int], bytes_per_sample: int = 1024) -> dict:
    return {key: BucketFile(f"{key[0]}-{key[1]}", n, n * bytes_per_sample) for key, n in sizes.items()}


def plan_shards_by_definition(buckets: dict, shard_mb: float) -> list[ShardTask]:
    """Every (shard, file) pair looked at: what plan_shards must give, at any scale."""
    tasks = []
    for split in ("train", "validation"):
        files = [buckets[key] for key in sorted(buckets) if key[0] == split and buckets[key].samples]
        total = sum(f.samples for f in files)
        count = shard_count(total, sum(f.tar_bytes for f in files), int(shard_mb * 2**20))
        starts = np.cumsum([0] + [f.samples for f in files])
        for index, (first, stop) in enumerate(shard_bounds(total, count)):
            pieces = []
            for file, start in zip(files, starts[:-1], strict=True):
                low, high = max(first, start), min(stop, start + file.samples)
                if low < high:
                    pieces.append((file.path, int(low - start), int(high - start)))
            tasks.append(ShardTask(split, index, first, tuple(pieces)))
    return tasks


@pytest.mark.parametrize("seed", range(5))
def test_plan_shards_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    sizes = {("train", b): int(rng.integers(0, 300)) for b in range(int(rng.integers(1, 60)))}
    sizes |= {("validation", b): int(rng.integers(0, 50)) for b in range(int(rng.integers(1, 5)))}
    buckets = buckets_of(sizes)
    shard_mb = float(rng.choice([0.01, 0.05, 0.3, 10.0]))
    assert plan_shards(buckets, shard_mb) == plan_shards_by_definition(buckets, shard_mb)


def test_shards_cover_every_sample_once_in_bucket_order():
    buckets = buckets_of({("train", 0): 5, ("train", 1): 0, ("train", 2): 7, ("train", 10): 3, ("validation", 0): 4})
    tasks = plan_shards(buckets, shard_mb=0.006)  # 6 KiB: 6 samples of 1 KiB each
    train = [t for t in tasks if t.split == "train"]
    assert [t.index for t in train] == [0, 1] and [t.first_sample for t in train] == [0, 7]
    assert train[0].pieces == (("train-0", 0, 5), ("train-2", 0, 2))
    assert train[1].pieces == (("train-2", 2, 7), ("train-10", 0, 3))
    (validation,) = [t for t in tasks if t.split == "validation"]
    assert validation.pieces == (("validation-0", 0, 4),)


def test_a_terabyte_sized_plan_is_cut_without_pairing_every_shard_with_every_bucket():
    """~500k buckets of 2 MB of text into ~240k shards (1 TB): each shard's pieces are found by search, so
    this finishes in seconds where looking at every (shard, bucket) pair would take days."""
    rng = np.random.default_rng(0)
    counts = rng.integers(1_500, 2_500, size=500_000)
    buckets = {("train", b): BucketFile(f"b{b}", int(n), int(n) * 1100) for b, n in enumerate(counts)}
    tasks = plan_shards(buckets, shard_mb=4.5)
    total = int(counts.sum())
    assert len(tasks) == round(total * 1100 / (4.5 * 2**20))
    sizes = [sum(stop - first for _, first, stop in t.pieces) for t in tasks]
    assert sum(sizes) == total and max(sizes) - min(sizes) <= 1
    assert all(t.first_sample == sum(sizes[:0]) or True for t in tasks[:1])
    assert [t.first_sample for t in tasks[:3]] == [0, sizes[0], sizes[0] + sizes[1]]


def test_buckets_follow_the_input_size_and_documents_keep_their_bucket():
    assert plan_buckets(10 * 2**20, bucket_mb=2.0, validation_fraction=0.1) == BucketPlan(train=5, validation=1)
    assert plan_buckets(0, bucket_mb=2.0, validation_fraction=0.0) == BucketPlan(train=1, validation=1)
    plan = BucketPlan(train=7, validation=2)
    keys = [f"doc{i}.txt" for i in range(2000)]
    first = [assign(k, 5, 0.1, plan) for k in keys]
    assert first == [assign(k, 5, 0.1, plan) for k in keys]  # the name and the seed decide, nothing else
    share = sum(split == "validation" for split, _ in first) / len(keys)
    assert 0.08 < share < 0.12  # binomial(2000, 0.1): 0.1 +- 3 std
    assert {b for s, b in first if s == "train"} == set(range(7)) and {b for s, b in first if s == "validation"} <= {
        0,
        1,
    }
    assert first != [assign(k, 6, 0.1, plan) for k in keys]
