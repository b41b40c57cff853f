"""Batches for the model: exact padding, slots and segment ids; dynamic re-masking; the dataset check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLS, MASK, PAD, SEP
from helpers import pair_sample as sample

from model import IGNORE_INDEX, BertConfig, BertForPreTraining
from pipeline.data.collate import collate, padded_length, remask
from pipeline.data.dataset_check import DatasetMismatch, check_against_model, load_manifest
from preprocessing.manifest import Manifest
from preprocessing.masking import MaskingRule, unmask


def test_padded_length():
    assert [padded_length(n) for n in (1, 8, 9, 127, 128)] == [8, 8, 16, 128, 128]
    assert padded_length(509, limit=512) == 512 and padded_length(510, multiple=16, limit=512) == 512


def test_collate_exact_layout():
    first = sample([10, 11, 12], [20, 21], positions=[2, 5], label=1)  # 8 tokens
    second = sample([30], [40, 41, 42, 43, 44], positions=[7])  # 9 tokens -> padded to 16
    batch = collate([first, second], pad_id=PAD, max_predictions=3)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == [CLS, 10, MASK, 12, SEP, MASK, 21, SEP] + [PAD] * 8
    assert batch["token_type_ids"][0].tolist() == [0] * 5 + [1] * 3 + [0] * 8
    assert batch["token_type_ids"][1].tolist() == [0] * 3 + [1] * 6 + [0] * 7
    assert batch["attention_mask"].sum(dim=1).tolist() == [8, 9]
    assert batch["masked_lm_positions"].tolist() == [[2, 5, 0], [7, 0, 0]]
    assert batch["masked_lm_labels"].tolist() == [[11, 20, IGNORE_INDEX], [44, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["next_sentence_label"].tolist() == [1, 0]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_collated_batch_feeds_the_model():
    config = BertConfig.from_preset("tiny", vocab_size=100)
    batch = collate([sample([10, 11, 12], [20, 21], [2, 5], 1), sample([30], [40, 41], [4])], PAD, 20)
    out = BertForPreTraining(config)(**batch)
    assert out.mlm_count.item() == 3 and out.nsp_count.item() == 2
    assert torch.isfinite(out.loss)


def test_too_many_predictions_for_the_slots():
    with pytest.raises(ValueError, match="has 2 masked positions but the batch has 1 slots"):
        collate([sample([10, 11], [20], [1, 2])], PAD, max_predictions=1)


def test_remask_keeps_the_pair_and_masks_afresh():
    never = np.zeros(100, dtype=bool)
    never[[PAD, CLS, SEP, MASK]] = True
    rule = MaskingRule(MASK, never, np.arange(5, 100), np.zeros(100, dtype=bool), 0.15, 20)
    rng = np.random.default_rng(0)
    original = sample(list(range(10, 40)), list(range(50, 80)), positions=[3, 9, 33, 40, 41, 50, 55, 60, 61])
    seen = set()
    for _ in range(20):
        again = remask(original, rng, rule)
        assert np.array_equal(
            unmask(again.input_ids, again.masked_lm_positions, again.masked_lm_ids),
            unmask(original.input_ids, original.masked_lm_positions, original.masked_lm_ids),
        )
        assert (again.segment_b_start, again.next_sentence_label) == (original.segment_b_start, 0)
        seen.add(tuple(again.masked_lm_positions.tolist()))
    assert len(seen) > 15  # new positions almost every time


def manifest_dict(vocab_size=1000, max_seq_length=128, pad=0) -> dict:
    """A complete manifest of a dataset with no shards."""
    no_shards = {"samples": 0, "tokens": 0, "masked_tokens": 0, "shards": []}
    return {
        "format_version": 1,
        "parameters": {"max_seq_length": max_seq_length, "max_predictions_per_seq": 20},
        "inputs": [],
        "tokenizer": {
            "vocab_size": vocab_size,
            "vocab_sha256": None,
            "special_token_ids": {"[PAD]": pad},
            "lowercase": True,
        },
        "token_dtype": "uint16",
        "position_dtype": "uint16",
        "splits": {"train": no_shards, "validation": no_shards},
        "counters": {},
        "totals": {"samples": 0, "tokens": 0, "shards": 0},
    }


def manifest(**values) -> Manifest:
    return Manifest.from_dict(manifest_dict(**values))


def test_dataset_check_names_both_values():
    config = BertConfig.from_preset("tiny", vocab_size=1000, max_position_embeddings=128)
    check_against_model(manifest(), config)
    with pytest.raises(DatasetMismatch, match="vocabulary has 30522 tokens but the model's vocab_size is 1000"):
        check_against_model(manifest(vocab_size=30522), config)
    with pytest.raises(DatasetMismatch, match="max_seq_length is 512 but the model has only 128 positions"):
        check_against_model(manifest(max_seq_length=512), config)
    with pytest.raises(DatasetMismatch, match=r"\[PAD\] id is 3 but the model's pad_token_id is 0"):
        check_against_model(manifest(pad=3), config)


def test_load_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; run `bertpipe preprocess` first"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"has no manifest\.json: not a finished dataset"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest_dict(), "format_version": 99}))
    with pytest.raises(DatasetMismatch, match="format_version 99; this version of bertpipe reads 1: preprocess"):
        load_manifest(tmp_path)
    without_splits = {k: v for k, v in manifest_dict().items() if k != "splits"}
    (tmp_path / "manifest.json").write_text(json.dumps(without_splits))
    with pytest.raises(DatasetMismatch, match=r"manifest\.json lacks a field .*'splits'.*preprocess again"):
        load_manifest(tmp_path)


def test_a_manifest_reads_back_to_the_dict_it_was_read_from():
    values = manifest_dict(vocab_size=6)
    values["splits"]["train"] = {
        "samples": 3,
        "tokens": 30,
        "masked_tokens": 4,
        "shards": [
            {"name": "train-000000.tar", "samples": 3, "tokens": 30, "masked_tokens": 4, "bytes": 10240, "sha256": "ab"}
        ],
    }
    read = Manifest.from_dict(values)
    assert read.to_dict() == values
    assert read.splits["train"].shards[0].name == "train-000000.tar" and read.tokenizer.pad_id == 0
    assert read.max_seq_length == 128 and read.max_predictions == 20


def test_reading_a_dataset_does_not_import_beam():
    """A training image reads datasets without the preprocessing engine."""
    code = (
        "import sys, pipeline.data.loader, pipeline.training.pretrain; "
        "assert 'apache_beam' not in sys.modules, 'Beam imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_manifest_that_contradicts_its_vocabulary_file_is_refused(tmp_path):
    from preprocessing.manifest import FORMAT_VERSION

    (tmp_path / "manifest.json").write_text(
        json.dumps({**manifest_dict(vocab_size=6), "format_version": FORMAT_VERSION})
    )
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    assert load_manifest(tmp_path).tokenizer.vocab_size == 6
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    with pytest.raises(DatasetMismatch, match=r"states a vocabulary of 6 tokens but .*vocab\.txt has 5: .*preprocess"):
        load_manifest(tmp_path)
