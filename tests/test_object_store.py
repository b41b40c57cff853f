"""Datasets on an object store: a real S3-compatible server (moto_server) on 127.0.0.1. The trainer's side reads
the manifest, the tokenizer and the shards through fsspec and gets what it gets from the same dataset on disk."""

from __future__ import annotations

import pytest
import torch

from pipeline.data.dataset_check import load_manifest
from pipeline.data.loader import SplitSpec, evaluation_batches
from pipeline.data.shard_reader import ShardError, read_shard_members
from preprocessing import storage
from preprocessing.tokenizer import load_tokenizer, vocabulary
from tests.conftest import PYDOCS_CORPUS
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


def fresh_s3_filesystem():
    import fsspec

    return fsspec.filesystem("s3", skip_instance_cache=True)


def test_the_beam_job_reads_and_writes_an_object_store(tmp_path, pretraining_dataset, s3_environment):  # noqa: F811
    """Corpus and tokenizer on S3, the dataset written to S3 by two Beam workers: the same bytes as the same job
    on disk, nothing left under .work, an identical rerun has nothing to do, and an output prefix that holds
    someone else's objects is refused."""
    from preprocessing import preprocess
    from preprocessing.beam_job import JobParams
    from preprocessing.preprocess import PreprocessError

    upload_directory(PYDOCS_CORPUS.parent, "s3://corpus/pydocs")
    upload_directory(pretraining_dataset.parent / "tokenizer", "s3://corpus/tokenizer")
    params = JobParams(seed=11, dupe_factor=2, validation_fraction=0.1, bucket_mb=0.1, shard_mb=0.3)
    runner = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    output = "s3://datasets/beam/seq128"
    outcome = preprocess.run(["s3://corpus/pydocs/corpus.txt"], "s3://corpus/tokenizer", output, params, runner)
    assert not outcome.skipped

    written = storage.list_names(output)
    assert ".work" not in written and "manifest.json" in written
    shards = [shard.name for split in outcome.manifest.splits.values() for shard in split.shards]
    assert set(shards) <= set(written) and len(shards) > 3
    for name in [*shards, "vocab.txt", "tokenizer.json"]:
        assert storage.read_bytes(storage.join(output, name)) == (pretraining_dataset / name).read_bytes(), name
    assert outcome.manifest.inputs == (
        {"path": "s3://corpus/pydocs/corpus.txt", "bytes": PYDOCS_CORPUS.stat().st_size},
    )

    again = preprocess.run(["s3://corpus/pydocs/corpus.txt"], "s3://corpus/tokenizer", output, params, runner)
    assert again.skipped and again.manifest == outcome.manifest

    fresh_s3_filesystem().pipe_file("datasets/theirs/notes.txt", b"not a dataset")
    with pytest.raises(PreprocessError, match=r"s3://datasets/theirs is not empty .*\['notes\.txt'\]"):
        preprocess.run(
            ["s3://corpus/pydocs/corpus.txt"], "s3://corpus/tokenizer", "s3://datasets/theirs", params, runner
        )
    assert storage.list_names("s3://datasets/theirs") == ["notes.txt"]
