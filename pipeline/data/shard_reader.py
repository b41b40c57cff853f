"""One shard -> its samples' encoded bytes, read through the dataset's storage layer, split by webdataset's tar
reader and checked against the manifest."""

from __future__ import annotations

import hashlib
import io
import tarfile

from webdataset.tariterators import tar_file_iterator

from preprocessing.errors import BertpipeError
from preprocessing.shards import SAMPLE_EXTENSION
from preprocessing.storage import read_bytes


class ShardError(BertpipeError, RuntimeError):
    """A shard that cannot be read or does not match the manifest; the message names it."""

    exit_code = 1


def read_shard_members(url: str, expected_samples: int, expected_sha256: str | None = None) -> list[bytes]:
    """The shard's sample members in stored order. The whole shard is read at once (a loader holds
    a window of shards in memory to shuffle it anyway), which also lets us check its sha256."""
    try:
        data = read_bytes(url)
    except OSError as error:
        raise ShardError(f"cannot read shard {url}: {error}") from error
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ShardError(
            f"shard {url} is corrupt or was changed after preprocessing: its sha256 differs from manifest.json "
            f"({len(data)} bytes read); rerun `bertpipe preprocess` or pass --skip-bad-shards"
        )
    try:
        members = list(tar_file_iterator(io.BytesIO(data)))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ShardError(f"shard {url} is not a readable tar file ({error}); it may be truncated") from error
    samples = [member["data"] for member in members if member["fname"].endswith("." + SAMPLE_EXTENSION)]
    if len(samples) != expected_samples or len(samples) != len(members):
        raise ShardError(
            f"shard {url} holds {len(samples)} .{SAMPLE_EXTENSION} samples among {len(members)} members but "
            f"manifest.json lists {expected_samples}; it may be truncated or from another dataset"
        )
    return samples
