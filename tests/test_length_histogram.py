"""Instance lengths in the manifest: the histogram arithmetic, the split fields, and older manifests."""

from __future__ import annotations

import hashlib
import json

import pytest

from preprocessing.lengths import BIN_WIDTH, LengthHistogram, length_counts, mean_length, padding_share, sum_counts
from preprocessing.manifest import Manifest, build_manifest
from preprocessing.preprocess import Outcome, summary


def test_a_bin_holds_the_lengths_that_pad_to_the_same_multiple_of_its_width():
    assert BIN_WIDTH == 8
    # (0, 8] -> bin 0, (8, 16] -> bin 1, 128 -> bin 15: seq 128 has 16 bins, not a 17th for full rows
    assert length_counts([3, 8, 9, 128]) == [2, 1] + [0] * 13 + [1]
    assert length_counts([1, 16, 17, 17], bin_width=16) == [2, 2]
    assert length_counts([]) == []
    with pytest.raises(ValueError, match="must be positive, got 0"):
        length_counts([0, 5])


def test_histograms_of_different_lengths_sum_bin_by_bin():
    assert sum_counts([[1, 2], [0, 0, 3], [], [4]]) == [5, 2, 3]
    assert sum_counts([]) == []


def test_mean_length_and_padding_share():
    assert mean_length(148, 4) == 37.0
    assert padding_share(37.0, 128) == 0.7109375  # 1 - 37/128
    assert padding_share(128.0, 128) == 0.0
    assert mean_length(0, 0) is None and padding_share(None, 128) is None


def shard_record(split: str, index: int, lengths: list[int]) -> dict:
    return {
        "split": split,
        "index": index,
        "name": f"{split}-{index:06d}.tar",
        "samples": len(lengths),
        "tokens": sum(lengths),
        "masked_tokens": len(lengths),
        "bytes": 10240,
        "sha256": "ab",
        "length_counts": length_counts(lengths),
    }


def built(records: list[dict], max_seq_length: int = 128) -> dict:
    return build_manifest(
        parameters={"max_seq_length": max_seq_length, "max_predictions_per_seq": 20},
        inputs=[],
        tokenizer={"vocab_size": 6, "vocab_sha256": None, "special_token_ids": {"[PAD]": 0}, "lowercase": True},
        token_dtype="uint16",
        position_dtype="uint16",
        shard_records=records,
        counters={},
    )


def test_the_manifest_sums_the_shards_histograms_per_split():
    values = built(
        [shard_record("train", 1, [128, 9]), shard_record("train", 0, [3, 8]), shard_record("validation", 0, [20])]
    )
    train = values["splits"]["train"]
    assert train["length_histogram"] == {"bin_width": 8, "counts": [2, 1] + [0] * 13 + [1]}
    assert train["mean_length"] == 37.0 and train["padding_share"] == 0.7109375
    assert all("length_counts" not in shard for shard in train["shards"])  # one histogram per split, not per shard
    validation = Manifest.from_dict(values).splits["validation"]
    assert validation.length_histogram == LengthHistogram(bin_width=8, counts=(0, 0, 1))
    assert validation.mean_length == 20.0 and validation.padding_share == 0.84375
    assert Manifest.from_dict(values).to_dict() == json.loads(json.dumps(values))


def test_a_split_without_samples_has_an_empty_histogram_and_no_means():
    validation = built([shard_record("train", 0, [3])])["splits"]["validation"]
    assert validation["length_histogram"] == {"bin_width": 8, "counts": []}
    assert "mean_length" not in validation and "padding_share" not in validation


def test_an_older_manifest_reads_without_the_fields_and_keeps_its_digest():
    values = built([shard_record("train", 0, [3, 8])])
    for split in values["splits"].values():
        for field in ("length_histogram", "mean_length", "padding_share"):
            split.pop(field, None)
    read = Manifest.from_dict(values)
    train = read.splits["train"]
    assert (train.length_histogram, train.mean_length, train.padding_share) == (None, None, None)
    assert read.to_dict() == values
    # the digest a checkpoint of that dataset recorded: a resume compares it with this one
    assert read.sha256 == hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def test_the_preprocess_summary_shows_the_padding_share_per_split():
    manifest = Manifest.from_dict(built([shard_record("train", 0, [128, 9, 3, 8])]))
    lines = summary(Outcome(manifest=manifest, skipped=False, beam_counters={}), "out").splitlines()
    assert lines[1].endswith("in 1 shards, mean length 37.0 of 128 (71.1% padding)")
    assert lines[2].endswith("in 0 shards")  # no samples: no mean
