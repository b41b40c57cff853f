"""Every file the project reads or writes outside a run directory (corpora, tokenizers, datasets), wherever it
lives: a local path, s3://, gs://, any fsspec URL. One library (fsspec, which webdataset and the rest of the
training ecosystem use) for the Beam job, its launcher and the trainer; nothing here imports Beam, so a
training image reads datasets without the preprocessing engine. An object store is reached with its own
standard settings (for S3: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... or the machine's role; for GCS: the
application default credentials), in the launching process and in every worker alike.

Object stores have no directories: a "directory" here is a key prefix, which exists when something lies
under it, lists the names under it, and is deleted with everything under it."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import posixpath
import uuid
from typing import Any, BinaryIO

import fsspec
from fsspec.core import url_to_fs
from fsspec.spec import AbstractBufferedFile

from preprocessing.errors import BertpipeError

READ_BUFFER_BYTES = 4 << 20  # per open remote file: few round trips, bounded memory


def is_url(location: str | os.PathLike[str]) -> bool:
    return "://" in str(location)


def join(directory: str, *names: str) -> str:
    """`directory`/`names`, with '/' for URLs and the platform's separator for local paths."""
    return posixpath.join(directory, *names) if is_url(directory) else os.path.join(directory, *names)


def absolute(location: str | os.PathLike[str]) -> str:
    """A local path made absolute (a worker may run in another folder; a run's records should say where
    things are); a URL as it is."""
    text = str(location)
    return text if is_url(text) else os.path.abspath(text)


def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return url_to_fs(url)


def open_read(url: str) -> BinaryIO:
    """A seekable binary reader of `url`'s bytes."""
    filesystem, path = _filesystem(url)
    handle = filesystem.open(path, "rb")
    if isinstance(handle, AbstractBufferedFile):
        # Remote files' readline takes no size limit, which the line readers need: give them io's.
        return io.BufferedReader(handle, buffer_size=READ_BUFFER_BYTES)
    return handle


def read_bytes(url: str, start: int = 0, length: int | None = None) -> bytes:
    filesystem, path = _filesystem(url)
    end = None if length is None else start + length
    return filesystem.cat_file(path, start=start or None, end=end)


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url).decode("utf-8"))


def exists(url: str) -> bool:
    """A file, a directory, or (on an object store) a prefix that holds something."""
    filesystem, path = _filesystem(url)
    return filesystem.exists(path)


def is_file(url: str) -> bool:
    filesystem, path = _filesystem(url)
    return filesystem.isfile(path)


def list_names(directory: str) -> list[str]:
    """Names (not paths) of the entries directly inside `directory`, sorted; empty when it does not exist."""
    filesystem, path = _filesystem(directory)
    try:
        entries = filesystem.ls(path, detail=False, refresh=True) if filesystem.isdir(path) else []
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(entry.rstrip("/")) for entry in entries)


def delete(urls: list[str]) -> None:
    """Each file, or directory (prefix) with everything under it, that exists."""
    for url in urls:
        filesystem, path = _filesystem(url)
        if filesystem.exists(path):
            filesystem.rm(path, recursive=True)


def make_dirs(directory: str) -> None:
    """The directory and its parents; on an object store only the bucket, which must be reachable."""
    filesystem, path = _filesystem(directory)
    filesystem.makedirs(path, exist_ok=True)


def write_atomically(url: str, data: bytes) -> None:
    """A reader never sees a partial file, and a retried Beam bundle replaces the file with the same bytes.
    On disk: a temporary name unique to this attempt, then a rename. An object store's upload of one object
    is already all or nothing."""
    filesystem, path = _filesystem(url)
    if is_url(url) and "file" not in _protocols(filesystem):
        filesystem.pipe_file(path, data)
        return
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _protocols(filesystem: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = filesystem.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def match(patterns: list[str]) -> list[list[tuple[str, int]]]:
    """For each glob, the (path or URL, size in bytes) of the files it matches, sorted; local paths made
    absolute, URLs keep their scheme."""
    results = []
    for pattern in patterns:
        filesystem, path = _filesystem(absolute(pattern))
        found = filesystem.glob(path, detail=True) if fsspec.core.has_magic(path) else _single(filesystem, path)
        files = [(name, info) for name, info in found.items() if info.get("type") == "file"]
        results.append(sorted((_url_of(filesystem, name, pattern), int(info["size"])) for name, info in files))
    return results


def _single(filesystem: fsspec.AbstractFileSystem, path: str) -> dict[str, dict]:
    try:
        return {path: filesystem.info(path)}
    except FileNotFoundError:
        return {}


def _url_of(filesystem: fsspec.AbstractFileSystem, path: str, pattern: str) -> str:
    return filesystem.unstrip_protocol(path) if is_url(pattern) else path


class ZstdInput(io.RawIOBase):
    """A Zstandard stream, decompressed as it is read (frames one after another, as `zstd` writes them), under
    a buffered reader that gives the line readers a bounded readline. Read from its start to its end: the only
    seek it takes is to where it already is, which is all the readers of a whole file ask for."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # for the buffered reader's seek to the current position; anything else is refused

    def readinto(self, buffer) -> int:
        count = self._reader.readinto(buffer)
        self._position += count
        return count

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (whence == io.SEEK_SET and offset == self._position) or (whence == io.SEEK_CUR and offset == 0):
            return self._position
        raise io.UnsupportedOperation("a zstd input is read from its start to its end")

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


# Decompressors over the raw stream: each gives the line readers a bounded readline.
DECOMPRESSORS = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
    ".lzma": lzma.LZMAFile,
    ".zst": lambda raw: io.BufferedReader(ZstdInput(raw)),
    ".zstd": lambda raw: io.BufferedReader(ZstdInput(raw)),
}
UNSUPPORTED_COMPRESSIONS = (".zip", ".lz4", ".snappy", ".deflate", ".z", ".Z")


class CompressionError(BertpipeError, ValueError):
    """An input compressed in a way this job cannot read; the message names the file."""


def is_compressed(path: str) -> bool:
    """Compressed by its name; an error for compressions this job cannot read."""
    if path.endswith(tuple(DECOMPRESSORS)):
        return True
    if path.endswith(UNSUPPORTED_COMPRESSIONS):
        raise CompressionError(f"{path}: unsupported compression; use .gz, .bz2, .xz or .zst, or decompress it first")
    return False


def open_input(url: str) -> BinaryIO:
    """An input file's content: decompressed when its name says so, else the raw seekable stream."""
    raw = open_read(url)
    if not is_compressed(url):
        return raw
    suffix = next(s for s in DECOMPRESSORS if url.endswith(s))
    return DECOMPRESSORS[suffix](raw)
