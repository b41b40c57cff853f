"""How the Beam job divides its work, as pure functions: documents into buckets (fixed by the seed and each
document's name alone, whatever the workers), and each split's samples, in (bucket, position) order, into
shards of about the same size.

Planning the shards touches each bucket and each shard a bounded number of times: at a terabyte (hundreds of
thousands of buckets and shards) it takes seconds on one worker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from preprocessing.manifest import SPLITS
from preprocessing.randomness import stable_hash, unit_interval
from preprocessing.shards import shard_count

Bucket = tuple[str, int]  # (split, bucket index)


@dataclass(frozen=True)
class BucketPlan:
    """How many buckets each split has: fixed by the input size, so a document lands in the same
    bucket whatever the workers."""

    train: int
    validation: int

    def count(self, split: str) -> int:
        return self.train if split == "train" else self.validation


def plan_buckets(total_bytes: int, bucket_mb: float, validation_fraction: float) -> BucketPlan:
    """Buckets of about `bucket_mb` of input text in each split."""
    bucket_bytes = bucket_mb * 2**20
    validation_bytes = total_bytes * validation_fraction
    return BucketPlan(
        train=max(1, math.ceil((total_bytes - validation_bytes) / bucket_bytes)),
        validation=max(1, math.ceil(validation_bytes / bucket_bytes)),
    )


def assign(document_key: str, seed: int, validation_fraction: float, plan: BucketPlan) -> Bucket:
    """(split, bucket) of a document, from the seed and its name alone."""
    split = "validation" if unit_interval(seed, "split", document_key) < validation_fraction else "train"
    return split, stable_hash(seed, "bucket", document_key) % plan.count(split)


@dataclass(frozen=True)
class BucketFile:
    """Where a bucket's samples went, and how many there are."""

    path: str
    samples: int
    tar_bytes: int  # what its samples take as tar members: shard sizes are planned from it


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    first_sample: int  # global index in the split of the shard's first sample
    pieces: tuple[tuple[str, int, int], ...]  # (samples file, first, stop) in order


def plan_shards(buckets: Mapping[Bucket, BucketFile], shard_mb: float) -> list[ShardTask]:
    """Cut each split's samples, in (bucket, position) order, into contiguous shards of about
    `shard_mb` whose sizes differ by at most one sample."""
    tasks: list[ShardTask] = []
    for split in SPLITS:
        files = [buckets[key] for key in sorted(buckets) if key[0] == split and buckets[key].samples]
        sizes = np.array([f.samples for f in files], dtype=np.int64)
        total = int(sizes.sum())
        count = shard_count(total, sum(f.tar_bytes for f in files), int(shard_mb * 2**20))
        if not count:
            continue
        file_starts = np.concatenate([[0], np.cumsum(sizes)])
        shard_starts = np.arange(count + 1, dtype=np.int64) * total // count  # sizes differ by at most one
        # The files a shard overlaps: from the one holding its first sample to the one holding its last.
        first_file = np.searchsorted(file_starts, shard_starts[:-1], side="right") - 1
        last_file = np.searchsorted(file_starts, shard_starts[1:], side="left") - 1
        for index in range(count):
            first, stop = int(shard_starts[index]), int(shard_starts[index + 1])
            pieces = []
            for f in range(int(first_file[index]), int(last_file[index]) + 1):
                start = int(file_starts[f])
                low, high = max(first, start), min(stop, start + int(sizes[f]))
                if low < high:
                    pieces.append((files[f].path, low - start, high - start))
            tasks.append(ShardTask(split, index, first, tuple(pieces)))
    return tasks
