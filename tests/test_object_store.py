"""Datasets on an object store: a real S3-compatible server (moto_server) on 127.0.0.1. The trainer's side reads
the manifest, the tokenizer and the shards through fsspec and gets what it gets from the same dataset on disk."""

from __future__ import annotations

import pytest
import torch

from pipeline.dataset_check import load_manifest
from pipeline.loader import SplitSpec, evaluation_batches
from pipeline.shard_reader import ShardError, read_shard_members
from preprocessing import storage
from preprocessing.tokenizer import load_tokenizer, vocabulary
from tests.object_store import s3_environment, s3_server, upload_directory  # noqa: F401 (fixtures)


@pytest.fixture
def dataset_url(pretraining_dataset, s3_environment) -> str:  # noqa: F811
    url = "s3://datasets/pydocs/seq128"
    upload_directory(pretraining_dataset, url)
    return url


def test_a_dataset_on_s3_reads_as_it_does_on_disk(pretraining_dataset, dataset_url):
    assert load_manifest(dataset_url) == load_manifest(pretraining_dataset)
    assert vocabulary(load_tokenizer(dataset_url)) == vocabulary(load_tokenizer(pretraining_dataset))
    manifest = load_manifest(dataset_url)
    from_s3 = evaluation_batches(SplitSpec.from_manifest(dataset_url, manifest, "validation"), 8, 0, 1, 32)
    from_disk = evaluation_batches(SplitSpec.from_manifest(pretraining_dataset, manifest, "validation"), 8, 0, 1, 32)
    assert len(from_s3) == len(from_disk) == 4  # 32 samples in batches of 8
    for remote, local in zip(from_s3, from_disk, strict=True):
        assert remote.keys() == local.keys()
        assert all(torch.equal(remote[key], local[key]) for key in local)


def test_object_store_prefixes_exist_and_missing_keys_are_reported(dataset_url):
    assert storage.exists(dataset_url) and storage.exists(storage.join(dataset_url, "manifest.json"))
    assert not storage.exists("s3://datasets/pydocs/seq512")
    with pytest.raises(FileNotFoundError, match="seq512 does not exist; run `bertpipe preprocess` first"):
        load_manifest("s3://datasets/pydocs/seq512")
    with pytest.raises(ShardError, match=r"cannot read shard s3://datasets/pydocs/seq128/train-000099\.tar"):
        read_shard_members(storage.join(dataset_url, "train-000099.tar"), 10)
