"""The shard format: one msgpack member per training instance inside deterministic tar files.

Sample map (see the shard contract in the README): `input_ids` (after masking, [CLS] A [SEP] B
[SEP], unpadded), `masked_lm_positions`, `masked_lm_ids` as little-endian arrays of the manifest's
dtypes, `segment_b_start`, `next_sentence_label` (0: B follows A, 1: B is random).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack
import numpy as np

SAMPLE_EXTENSION = "msgpack"
POSITION_DTYPE = np.dtype("<u2")  # positions < max_seq_length <= 65535


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32 (little-endian either way)."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def sample_key(split: str, index: int) -> str:
    """Unique within the dataset and without dots (webdataset splits keys at the first dot)."""
    return f"{split}-{index:010d}"


@dataclass(frozen=True)
class Sample:
    input_ids: np.ndarray
    masked_lm_positions: np.ndarray
    masked_lm_ids: np.ndarray
    segment_b_start: int
    next_sentence_label: int

    @property
    def segment_ids(self) -> np.ndarray:
        ids = np.zeros(len(self.input_ids), dtype=np.int64)
        ids[self.segment_b_start :] = 1
        return ids


def encode_sample(sample: Sample, dtype: np.dtype) -> bytes:
    return msgpack.packb(
        {
            "input_ids": sample.input_ids.astype(dtype).tobytes(),
            "masked_lm_positions": sample.masked_lm_positions.astype(POSITION_DTYPE).tobytes(),
            "masked_lm_ids": sample.masked_lm_ids.astype(dtype).tobytes(),
            "segment_b_start": int(sample.segment_b_start),
            "next_sentence_label": int(sample.next_sentence_label),
        }
    )


def decode_sample(data: bytes, dtype: np.dtype) -> Sample:
    fields = msgpack.unpackb(data)
    return Sample(
        input_ids=np.frombuffer(fields["input_ids"], dtype=dtype),
        masked_lm_positions=np.frombuffer(fields["masked_lm_positions"], dtype=POSITION_DTYPE),
        masked_lm_ids=np.frombuffer(fields["masked_lm_ids"], dtype=dtype),
        segment_b_start=fields["segment_b_start"],
        next_sentence_label=fields["next_sentence_label"],
    )


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar of `<key>.msgpack` members with fixed metadata, so equal content gives equal bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, data in members:
            info = tarfile.TarInfo(f"{key}.{SAMPLE_EXTENSION}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def shard_count(total_samples: int, total_bytes: int, target_shard_bytes: int) -> int:
    """Shards of about `target_shard_bytes`, at least one, never more than samples."""
    if total_samples == 0:
        return 0
    return max(1, min(total_samples, round(total_bytes / target_shard_bytes)))


def place(global_index: int, num_shards: int) -> tuple[int, int]:
    """(shard, position in shard) of a sample: dealt round-robin, so shard sizes differ by at most
    one and every shard mixes samples from all over the corpus."""
    return global_index % num_shards, global_index // num_shards
