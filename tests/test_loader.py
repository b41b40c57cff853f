"""The shard reader and the training/evaluation loaders, on shards made by the real preprocessing job."""

from __future__ import annotations

import json
import re
import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from model.heads import IGNORE_INDEX
from pipeline.data import data_plan
from pipeline.data.dataset_check import load_manifest
from pipeline.data.loader import (
    POSITION_KEY,
    SKIPPED_KEY,
    LoaderState,
    SplitSpec,
    StreamOptions,
    TrainBatches,
    TrainStream,
    evaluation_batches,
    resume_state,
    stream_batches,
    stream_samples,
    target_counts,
)
from pipeline.data.shard_reader import ShardError, read_shard_members
from preprocessing.masking import unmask
from preprocessing.shards import decode_sample
from preprocessing.tokenizer import load_tokenizer, masking_rule

BATCH_KEYS = {
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "masked_lm_positions",
    "masked_lm_labels",
    "next_sentence_label",
}


def manifest_of(dataset: Path) -> dict:
    return json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))


def spec_of(dataset: Path, split: str = "train") -> SplitSpec:
    return SplitSpec.from_manifest(dataset, load_manifest(dataset), split)


@pytest.fixture(scope="module")
def train_spec(pretraining_dataset) -> SplitSpec:
    return spec_of(pretraining_dataset)


@pytest.fixture(scope="module")
def stored(train_spec) -> dict[int, list]:
    """Every train shard's samples in stored order, decoded, read directly with the shard reader."""
    dtype = np.dtype(train_spec.token_dtype)
    return {
        shard: [decode_sample(data, dtype) for data in read_shard_members(train_spec.url(shard), size)]
        for shard, size in enumerate(train_spec.shard_sizes)
    }


@pytest.fixture
def damaged_copy(pretraining_dataset, tmp_path) -> Path:
    """A copy of the dataset that a test may damage; the session fixture's files stay intact."""
    return Path(shutil.copytree(pretraining_dataset, tmp_path / "dataset"))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_same_sample(actual, expected) -> None:
    np.testing.assert_array_equal(actual.input_ids, expected.input_ids)
    np.testing.assert_array_equal(actual.masked_lm_positions, expected.masked_lm_positions)
    np.testing.assert_array_equal(actual.masked_lm_ids, expected.masked_lm_ids)
    assert actual.segment_b_start == expected.segment_b_start
    assert actual.next_sentence_label == expected.next_sentence_label


def assert_same_batches(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert set(got) == set(want)
        for name in want:
            assert torch.equal(got[name], want[name]), name


def instances_of(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    """The real tokens of every instance in a padded or packed batch, sorted: what the batch holds."""
    ids = batch.get("sequence_ids", batch["attention_mask"])
    found = []
    for row, tokens in zip(ids, batch["input_ids"], strict=True):
        found += [tuple(tokens[row == k].tolist()) for k in row.unique().tolist() if k != 0]
    return sorted(found)


def planned(spec: SplitSpec, options: StreamOptions, streams: int, stream: int, count: int, start: int = 0) -> list:
    plan = data_plan.stream_plan(spec.shard_sizes, streams, stream, options.seed, options.window_shards, start)
    return list(islice((p for _, emissions in plan for p in emissions), count))


# -- the split and the shard reader -----------------------------------------------------------------


def test_split_spec_from_manifest(pretraining_dataset):
    manifest = manifest_of(pretraining_dataset)
    spec = spec_of(pretraining_dataset)
    shards = manifest["splits"]["train"]["shards"]
    assert spec.split == "train"
    assert spec.shard_names == tuple(f"train-{i:06d}.tar" for i in range(7))
    assert spec.shard_sizes == tuple(s["samples"] for s in shards)
    assert spec.samples == sum(s["samples"] for s in shards)
    assert spec.shard_sha256 == tuple(s["sha256"] for s in shards)
    assert (spec.token_dtype, spec.pad_id, spec.max_predictions, spec.max_seq_length) == ("uint16", 0, 20, 128)
    assert Path(spec.url(3)) == pretraining_dataset / "train-000003.tar"
    validation = spec_of(pretraining_dataset, "validation")
    assert validation.shard_names == ("validation-000000.tar",)
    assert validation.samples == manifest["splits"]["validation"]["shards"][0]["samples"]


def test_read_shard_members_checks_the_count_and_checksum(train_spec, stored):
    members = read_shard_members(train_spec.url(0), train_spec.shard_sizes[0], train_spec.shard_sha256[0])
    assert len(members) == train_spec.shard_sizes[0]
    for data, sample in zip(members, stored[0], strict=True):
        assert_same_sample(decode_sample(data, np.dtype("uint16")), sample)
    cls_id, sep_id = 2, 3
    assert all(s.input_ids[0] == cls_id and s.input_ids[-1] == sep_id for s in stored[0])
    with pytest.raises(ShardError, match=r"train-000000\.tar holds .* but manifest.json lists 1000"):
        read_shard_members(train_spec.url(0), 1000)


@pytest.mark.parametrize("verify", [True, False])
def test_a_truncated_shard_is_a_shard_error_naming_it(damaged_copy, verify):
    spec = spec_of(damaged_copy)
    path = damaged_copy / "train-000002.tar"
    cut_in_half(path)
    with pytest.raises(ShardError, match=re.escape(str(path))):
        read_shard_members(spec.url(2), spec.shard_sizes[2], spec.shard_sha256[2] if verify else None)


@pytest.mark.parametrize("offset", [0, 100, 5000])  # a header's name, a header's checksum field, member data
def test_a_flipped_byte_is_a_shard_error_naming_the_shard(damaged_copy, offset):
    spec = spec_of(damaged_copy)
    path = damaged_copy / "train-000004.tar"
    flip_byte(path, offset)
    with pytest.raises(ShardError, match=re.escape(str(path)) + ".*sha256 differs from manifest.json"):
        read_shard_members(spec.url(4), spec.shard_sizes[4], spec.shard_sha256[4])


def test_a_missing_shard_is_a_shard_error(damaged_copy):
    spec = spec_of(damaged_copy)
    (damaged_copy / "train-000001.tar").unlink()
    with pytest.raises(ShardError, match=r"cannot read shard .*train-000001\.tar"):
        read_shard_members(spec.url(1), spec.shard_sizes[1])


# -- streams ----------------------------------------------------------------------------------------


def test_stream_samples_follow_the_plan_across_an_epoch_boundary(train_spec, stored):
    options = StreamOptions(micro_batch=4, seed=5)
    epoch_size = data_plan.stream_epoch_size(train_spec.shard_sizes, 2, 1)
    count = epoch_size + 40
    samples = list(islice(stream_samples(train_spec, options, 2, 1, 0), count))
    plan = planned(train_spec, options, 2, 1, count)
    assert [plan_index for plan_index, _, _ in samples] == list(range(1, count + 1))
    for (_, sample, skipped), expected in zip(samples, plan, strict=True):
        assert skipped == []
        assert_same_sample(sample, stored[expected.shard][expected.index])


def test_stream_batches_carry_the_plan_index_and_resume_from_it(train_spec):
    options = StreamOptions(micro_batch=16, seed=5)
    batches = list(islice(stream_batches(train_spec, options, 2, 0, 0), 75))  # one epoch is ~66 batches
    assert [b[POSITION_KEY] for b in batches] == [16 * (i + 1) for i in range(75)]
    for batch in batches:
        assert batch[SKIPPED_KEY] == []
        length = batch["input_ids"].shape[1]
        assert batch["input_ids"].shape[0] == 16 and length % 8 == 0 and length <= 128
        assert batch["masked_lm_positions"].shape == batch["masked_lm_labels"].shape == (16, 20)
        assert batch["next_sentence_label"].shape == (16,)
    resumed = list(islice(stream_batches(train_spec, options, 2, 0, batches[63][POSITION_KEY]), 11))
    assert [b[POSITION_KEY] for b in resumed] == [b[POSITION_KEY] for b in batches[64:]]
    strip = [{k: v for k, v in b.items() if k in BATCH_KEYS} for b in (*batches[64:], *resumed)]
    assert_same_batches(strip[11:], strip[:11])


def test_dynamic_masking_changes_the_masks_per_epoch_but_not_the_tokens(pretraining_dataset, train_spec, stored):
    rule = masking_rule(load_tokenizer(pretraining_dataset), 0.15, 20, whole_word=False)
    options = StreamOptions(micro_batch=8, seed=5, remasking=rule)
    epoch_size = train_spec.samples  # one stream reads every sample once per epoch
    samples = list(islice(stream_samples(train_spec, options, 1, 0, 0), 2 * epoch_size))
    plan = planned(train_spec, options, 1, 0, 2 * epoch_size)
    by_epoch: list[dict] = [{}, {}]
    for (_, sample, _), where in zip(samples, plan, strict=True):
        by_epoch[where.epoch][where.shard, where.index] = sample
    assert set(by_epoch[0]) == set(by_epoch[1]) and len(by_epoch[0]) == epoch_size
    changed = 0
    for key, first in by_epoch[0].items():
        second, original = by_epoch[1][key], stored[key[0]][key[1]]
        tokens = unmask(original.input_ids, original.masked_lm_positions, original.masked_lm_ids)
        for remasked in (first, second):
            np.testing.assert_array_equal(
                unmask(remasked.input_ids, remasked.masked_lm_positions, remasked.masked_lm_ids), tokens
            )
            assert len(remasked.masked_lm_positions) == len(original.masked_lm_positions)
            assert remasked.segment_b_start == original.segment_b_start
            assert remasked.next_sentence_label == original.next_sentence_label
        changed += not np.array_equal(first.masked_lm_positions, second.masked_lm_positions)
    assert changed > 0.9 * epoch_size
    # Reproducible: the masks are a function of (seed, epoch, sample), so a resumed stream re-masks the same way.
    start = epoch_size + 7
    resumed = list(islice(stream_samples(train_spec, options, 1, 0, start), 30))
    for (_, again, _), (_, first_time, _) in zip(resumed, samples[start : start + 30], strict=True):
        assert_same_sample(again, first_time)


def test_a_bad_shard_stops_a_stream_or_is_skipped_and_reported(damaged_copy):
    spec = spec_of(damaged_copy)
    cut_in_half(damaged_copy / "train-000003.tar")
    with pytest.raises(ShardError, match=re.escape(str(damaged_copy / "train-000003.tar"))):
        list(islice(stream_samples(spec, StreamOptions(micro_batch=4, seed=1), 1, 0, 0), spec.samples))

    options = StreamOptions(micro_batch=4, seed=1, skip_bad_shards=True)
    epoch = list(islice(stream_samples(spec, options, 1, 0, 0), spec.samples))
    assert [plan_index for plan_index, _, _ in epoch] == list(range(1, spec.samples + 1))
    assert sum(sample is None for _, sample, _ in epoch) == spec.shard_sizes[3]
    assert [name for _, _, skipped in epoch for name in skipped] == ["train-000003.tar"]


# -- training batches -------------------------------------------------------------------------------


def test_train_stream_plays_the_stream_of_its_rank_and_slot(train_spec):
    options = StreamOptions(micro_batch=8, seed=2)
    state = LoaderState(world_size=2, slots=2, positions=[0, 24], next_slot=1)
    first = next(iter(TrainStream(train_spec, options, rank=1, state=state)))
    assert first.pop("_stream_slot") == 1
    expected = next(stream_batches(train_spec, options, 4, 3, 24))  # rank 1, slot 1 of 2 x 2 streams
    assert first[POSITION_KEY] == expected[POSITION_KEY] == 32
    assert_same_batches([{k: first[k] for k in BATCH_KEYS}], [{k: expected[k] for k in BATCH_KEYS}])


def take(batches: TrainBatches, count: int) -> list[dict]:
    return [next(batches) for _ in range(count)]


@pytest.mark.parametrize(
    ("workers", "consumed"),
    [
        (2, 5),  # odd: the resumed run starts at the second slot
        (2, 36),  # each stream is past its first epoch (~17 batches of 64 per stream and epoch)
        (0, 7),
    ],
)
def test_train_batches_resume_exactly_from_the_saved_state(train_spec, workers, consumed):
    options = StreamOptions(micro_batch=64, seed=7)
    slots = max(1, workers)
    following = 6
    uninterrupted = TrainBatches(train_spec, options, 0, LoaderState.start(1, slots), workers)
    try:
        before = take(uninterrupted, consumed)
        saved = json.loads(json.dumps(uninterrupted.state.to_dict()))  # as a checkpoint stores it
        after = take(uninterrupted, following)
    finally:
        uninterrupted.close()
    assert all(set(batch) == BATCH_KEYS and batch["input_ids"].shape[0] == 64 for batch in before + after)
    if workers == 2:  # batches alternate between the two slots; positions count consumed batches only
        assert saved == {
            "world_size": 1,
            "slots": 2,
            "positions": [64 * -(-consumed // 2), 64 * (consumed // 2)],
            "next_slot": consumed % 2,
        }
    else:
        assert saved == {"world_size": 1, "slots": 1, "positions": [64 * consumed], "next_slot": 0}

    resumed = TrainBatches(train_spec, options, 0, resume_state(saved, 1, slots), workers)
    try:
        again = take(resumed, following)
    finally:
        resumed.close()
    assert_same_batches(again, after)
    replay = before[0]["input_ids"]  # what a resume that ignored the saved position would give first
    assert again[0]["input_ids"].shape != replay.shape or not torch.equal(again[0]["input_ids"], replay)


def test_packed_batches_hold_the_same_instances_in_fewer_rows_and_resume_exactly(train_spec):
    padded_options = StreamOptions(micro_batch=64, seed=7)
    packed_options = StreamOptions(micro_batch=64, seed=7, packing=True)
    padded = take(TrainBatches(train_spec, padded_options, 0, LoaderState.start(1, 1), 0), 8)
    packed_run = TrainBatches(train_spec, packed_options, 0, LoaderState.start(1, 1), 0)
    before = take(packed_run, 5)
    saved = json.loads(json.dumps(packed_run.state.to_dict()))
    after = take(packed_run, 3)
    assert [instances_of(b) for b in before + after] == [instances_of(b) for b in padded]
    assert sum(b["input_ids"].numel() for b in before + after) < sum(b["input_ids"].numel() for b in padded)
    assert all(int((b["next_sentence_label"] != IGNORE_INDEX).sum()) == 64 for b in before + after)
    resumed = TrainBatches(train_spec, packed_options, 0, resume_state(saved, 1, 1), 0)
    assert_same_batches(take(resumed, 3), after)


def test_train_batches_with_a_bad_shard(damaged_copy):
    spec = spec_of(damaged_copy)
    path = damaged_copy / "train-000003.tar"
    cut_in_half(path)
    batches = TrainBatches(spec, StreamOptions(micro_batch=64, seed=7), 0, LoaderState.start(1, 2), workers=2)
    try:
        with pytest.raises(ShardError, match=re.escape(str(path))):
            take(batches, 40)
    finally:
        batches.close()

    options = StreamOptions(micro_batch=64, seed=7, skip_bad_shards=True)
    batches = TrainBatches(spec, options, 0, LoaderState.start(1, 2), workers=2)
    try:
        # 40 batches of 64 is more than an epoch of the good shards for both streams.
        received = take(batches, 40)
    finally:
        batches.close()
    assert all(batch["input_ids"].shape[0] == 64 for batch in received)
    assert set(batches.skipped_shards) == {"train-000003.tar"}


def test_train_batches_refuse_more_streams_than_samples(train_spec):
    tiny = SplitSpec(**{**train_spec.__dict__, "shard_sizes": (1, 1), "shard_names": ("a.tar", "b.tar")})
    with pytest.raises(data_plan.PlanError, match="the train split has 2 samples, fewer than the 4 loader streams"):
        TrainBatches(tiny, StreamOptions(micro_batch=1, seed=0), 0, LoaderState.start(2, 2), workers=0)


# -- the data position ------------------------------------------------------------------------------


def test_loader_state_round_trips_and_resume_state_checks_the_layout():
    state = LoaderState(world_size=2, slots=3, positions=[64, 32, 32], next_slot=1)
    saved = json.loads(json.dumps(state.to_dict()))
    assert LoaderState.from_dict(saved) == state
    assert resume_state(saved, 2, 3) == state
    assert resume_state(None, 2, 3) == LoaderState(2, 3, [0, 0, 0], 0)
    # A different world size or worker count cannot continue exactly: the order restarts.
    assert resume_state(saved, 4, 3) == LoaderState(4, 3, [0, 0, 0], 0)
    assert resume_state(saved, 2, 2) == LoaderState(2, 2, [0, 0], 0)


# -- evaluation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("world_size", "micro_batch", "max_samples", "real_batches"),
    [
        (2, 91, 365, [2, 3]),  # 182 and 183 samples: rank 0 pads a third batch
        (2, 1, 5, [2, 3]),
        (3, 16, None, [8, 8, 8]),  # all 366 samples, 122 per rank
        (4, 10, 366, [10, 10, 10, 10]),
    ],
)
def test_every_rank_gets_the_same_number_of_evaluation_batches(
    pretraining_dataset, world_size, micro_batch, max_samples, real_batches
):
    spec = spec_of(pretraining_dataset, "validation")
    total = max_samples or spec.samples
    per_rank = [evaluation_batches(spec, micro_batch, rank, world_size, max_samples) for rank in range(world_size)]
    assert {len(batches) for batches in per_rank} == {max(real_batches)}
    rows = []
    for batches, real in zip(per_rank, real_batches, strict=True):
        for batch in batches[:real]:
            assert (batch["next_sentence_label"] >= 0).all()
            assert ((batch["masked_lm_labels"] != IGNORE_INDEX).sum(dim=1) > 0).all()
            rows.extend(
                ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
            )
        for padding in batches[real:]:
            assert (padding["masked_lm_labels"] == IGNORE_INDEX).all()
            assert (padding["next_sentence_label"] == IGNORE_INDEX).all()
            assert torch.equal(padding["input_ids"], batches[real - 1]["input_ids"])
    # The ranks' real rows are the first `total` validation samples in stored order, each once.
    members = read_shard_members(spec.url(0), spec.shard_sizes[0])
    expected = [decode_sample(data, np.dtype(spec.token_dtype)).input_ids.tolist() for data in members[:total]]
    assert rows == expected


def test_evaluation_is_skipped_with_fewer_samples_than_ranks(pretraining_dataset):
    spec = spec_of(pretraining_dataset, "validation")
    assert evaluation_batches(spec, 4, 0, 2, max_samples=1) == []


def test_evaluation_refuses_a_damaged_validation_shard(damaged_copy):
    spec = spec_of(damaged_copy, "validation")
    path = damaged_copy / "validation-000000.tar"
    flip_byte(path, 3000)
    with pytest.raises(ShardError, match=re.escape(str(path))):
        evaluation_batches(spec, 8, 0, 1, None)


def test_target_counts_count_the_masked_lm_targets_of_whole_shards_in_stored_order(train_spec, stored):
    vocab = 3000
    everything = target_counts(train_spec, vocab, max_samples=10**9)
    expected = np.zeros(vocab, dtype=np.int64)
    for samples in stored.values():
        for sample in samples:
            np.add.at(expected, sample.masked_lm_ids.astype(np.int64), 1)
    assert np.array_equal(everything, expected)
    # a limit inside the second shard reads the first two shards whole
    first_two = target_counts(train_spec, vocab, max_samples=train_spec.shard_sizes[0] + 1)
    expected_two = sum(
        np.bincount(np.concatenate([s.masked_lm_ids for s in stored[i]]).astype(np.int64), minlength=vocab)
        for i in (0, 1)
    )
    assert np.array_equal(first_two, expected_two)


def test_target_counts_raise_on_a_bad_shard_or_leave_it_out_when_told(damaged_copy, train_spec, stored):
    path = damaged_copy / train_spec.shard_names[1]
    path.write_bytes(path.read_bytes()[:1000])
    spec = spec_of(damaged_copy)
    with pytest.raises(ShardError, match=train_spec.shard_names[1]):
        target_counts(spec, 3000, max_samples=10**9)
    counts = target_counts(spec, 3000, max_samples=10**9, skip_bad_shards=True)
    kept = np.concatenate([s.masked_lm_ids for i, samples in stored.items() if i != 1 for s in samples])
    assert np.array_equal(counts, np.bincount(kept.astype(np.int64), minlength=3000))
