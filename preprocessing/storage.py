"""Reading a dataset wherever it lives (a local path, s3://, gs://, any fsspec URL) through fsspec, the
library webdataset and the rest of the training ecosystem read storage with. No Beam here: a training image
reads datasets without carrying the preprocessing engine.

Object stores have no directories; a "directory" here is a key prefix, and `exists` of one is true when
any object lies under it."""

from __future__ import annotations

import json
import os.path
import posixpath
from typing import Any, BinaryIO

import fsspec
from fsspec.core import url_to_fs


def join(directory: str, *names: str) -> str:
    """`directory`/`names`, with '/' for URLs and the platform's separator for local paths."""
    if "://" in directory:
        return posixpath.join(directory, *names)
    return os.path.join(directory, *names)


def open_read(url: str) -> BinaryIO:
    """A binary reader of `url`'s bytes."""
    return fsspec.open(url, "rb").open()


def read_bytes(url: str) -> bytes:
    with open_read(url) as handle:
        return handle.read()


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url).decode("utf-8"))


def exists(url: str) -> bool:
    """A file, a directory, or (on an object store) a prefix that holds something."""
    filesystem, path = url_to_fs(url)
    return filesystem.exists(path)


def is_file(url: str) -> bool:
    filesystem, path = url_to_fs(url)
    return filesystem.isfile(path)


def absolute(url: str | os.PathLike[str]) -> str:
    """A local path made absolute (what a record of a run should hold); a URL as it is."""
    text = str(url)
    return text if "://" in text else os.path.abspath(text)
