"""The shard format: one msgpack member per training instance inside deterministic tar files.

Sample map (see the shard contract in the README): `input_ids` (after masking, [CLS] A [SEP] B
[SEP], unpadded), `masked_lm_positions`, `masked_lm_ids` as little-endian arrays of the manifest's
dtypes, `segment_b_start`, `next_sentence_label` (0: B follows A, 1: B is random).
"""

from __future__ import annotations

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


BLOCK = 512
RECORD = 20 * BLOCK  # tar archives are padded to whole records


def tar_header(name: str, size: int) -> bytes:
    """A USTAR header for a regular file with fixed metadata (mode 644, owner 0, mtime 0): the
    same bytes Python's tarfile writes, built directly because tarfile costs ~70 us a member."""
    encoded = name.encode("ascii")
    if len(encoded) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    header = bytearray(BLOCK)
    header[0 : len(encoded)] = encoded
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8  # checksum field counts as spaces while summing
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar of `<key>.msgpack` members; equal content gives equal bytes."""
    parts: list[bytes] = []
    length = 0
    for key, data in members:
        padding = -len(data) % BLOCK
        parts += (tar_header(f"{key}.{SAMPLE_EXTENSION}", len(data)), data, bytes(padding))
        length += BLOCK + len(data) + padding
    end = 2 * BLOCK
    end += -(length + end) % RECORD
    parts.append(bytes(end))
    return b"".join(parts)


def tar_member_bytes(payload_sizes: np.ndarray) -> int:
    """What members with these payload sizes take in a tar: a header block each and the data padded
    to whole blocks (a ~300-byte sample takes 1 KiB)."""
    sizes = np.asarray(payload_sizes, dtype=np.int64)
    return int((BLOCK + sizes + (-sizes % BLOCK)).sum())


def shard_count(total_samples: int, total_bytes: int, target_shard_bytes: int) -> int:
    """Shards of about `target_shard_bytes` (`total_bytes` being the tar members'), at least one,
    never more than samples."""
    if total_samples == 0:
        return 0
    return max(1, min(total_samples, round(total_bytes / target_shard_bytes)))


def shard_bounds(total_samples: int, num_shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard in the split's sample order: sizes differ by at most one."""
    return [(s * total_samples // num_shards, (s + 1) * total_samples // num_shards) for s in range(num_shards)]
