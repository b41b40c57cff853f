"""File access through Beam's FileSystems, so that every path may be local, gs:// or s3://."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import uuid
from typing import Any, BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RAW = CompressionTypes.UNCOMPRESSED


def join(directory: str, *names: str) -> str:
    return FileSystems.join(directory, *names)


def write_atomically(path: str, data: bytes) -> None:
    """Write under a temporary name unique to this attempt, then rename: a reader never sees a
    partial file, and a retried bundle replaces the file with the same bytes."""
    directory, name = FileSystems.split(path)
    temporary = FileSystems.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temporary, compression_type=RAW) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


# Python's own decompressors, over Beam's raw stream: Beam's compressed reader has no bounded
# readline, which the line readers need.
DECOMPRESSORS = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
    ".lzma": lzma.LZMAFile,
}


def is_compressed(path: str) -> bool:
    """Compressed by its name; an error for compressions this job cannot read."""
    if CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED:
        return False
    if not path.endswith(tuple(DECOMPRESSORS)):
        raise ValueError(f"{path}: unsupported compression; use .gz, .bz2 or .xz, or decompress it first")
    return True


def open_decompressed(path: str) -> BinaryIO:
    """A readable binary stream of a compressed file's content."""
    suffix = next(s for s in DECOMPRESSORS if path.endswith(s))
    return DECOMPRESSORS[suffix](FileSystems.open(path, compression_type=RAW))


def open_input(path: str) -> BinaryIO:
    """An input file's content: decompressed when its name says so, else the raw seekable stream."""
    return open_decompressed(path) if is_compressed(path) else FileSystems.open(path, compression_type=RAW)


def read_bytes(path: str, start: int = 0, length: int | None = None) -> bytes:
    with FileSystems.open(path, compression_type=RAW) as handle:
        if start:
            handle.seek(start)
        return handle.read() if length is None else handle.read(length)


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path).decode("utf-8"))


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def list_names(directory: str) -> list[str]:
    """Names (not paths) of the entries directly inside `directory`; empty when it does not exist."""
    if not FileSystems.exists(directory):
        return []
    result = FileSystems.match([FileSystems.join(directory, "*")])[0]
    return sorted(m.path.rstrip("/").rsplit("/", 1)[-1] for m in result.metadata_list)


def delete(paths: list[str]) -> None:
    present = [p for p in paths if FileSystems.exists(p)]
    if present:
        FileSystems.delete(present)


def make_dirs(directory: str) -> None:
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
