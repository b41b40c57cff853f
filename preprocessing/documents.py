"""Reading documents out of a byte range of an input file, in bounded memory.

A file is cut into byte ranges so that several workers can read one large file. A range owns the
documents (text layout) or records (JSON Lines) whose first line starts inside it, so documents are
the same whatever the range size, and each one is named by its file and byte offset. Pure Python
over seekable binary streams: the Beam job opens the streams, the tests open local files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

# A line longer than this is read in pieces of this size, each piece a paragraph of its own.
MAX_LINE_BYTES = 1 << 20
# A document longer than this is cut into several, each read, paired and counted on its own.
MAX_DOCUMENT_CHARS = 4 << 20


# The first bytes of files that are not text, whatever their name says: (magic, what it is, what to do).
BINARY_SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed", "name it .gz so that it is decompressed"),
    (b"BZh", "bzip2-compressed", "name it .bz2 so that it is decompressed"),
    (b"\xfd7zXZ\x00", "xz-compressed", "name it .xz so that it is decompressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "name it .zst so that it is decompressed"),
    (b"PK\x03\x04", "a zip archive", "extract it first"),
    (b"\x7fELF", "an executable or shared library", "leave it out of --input"),
    (b"%PDF-", "a PDF document", "extract its text first"),
    (b"PAR1", "a Parquet file", "pass --format parquet"),
)
SNIFF_BYTES = 8192


def binary_content(head: bytes) -> str | None:
    """What is wrong with an input whose content starts with `head`, if it is not UTF-8 text: a known binary
    format, or NUL bytes (never in UTF-8 text; UTF-16 text has them). None for text."""
    for magic, what, remedy in BINARY_SIGNATURES:
        if head.startswith(magic):
            return f"is {what}, not text: {remedy}"
    if b"\x00" in head:
        return "holds NUL bytes: it is binary, or text in an encoding other than UTF-8 (UTF-16?); convert it to UTF-8"
    return None


@dataclass
class ReadStats:
    documents: int = 0
    empty_documents: int = 0
    undecodable_documents: int = 0  # invalid UTF-8, decoded with U+FFFD replacement and kept
    malformed_records: int = 0  # JSON Lines that are not JSON objects with the text field: skipped
    long_lines_split: int = 0
    long_documents_split: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class RawDocument:
    key: str  # "<path>@<byte offset>": stable whatever the ranges
    paragraphs: list[str] = field(default_factory=list)


def is_blank(line: bytes) -> bool:
    return not line.strip()


def previous_line_is_blank(stream: BinaryIO, line_start: int) -> bool:
    """Whether the line ending just before `line_start` is empty or whitespace (True at the file start)."""
    if line_start == 0:
        return True
    position = line_start - 1  # the newline that ends the previous line
    block = 4096
    while position > 0:
        begin = max(0, position - block)
        stream.seek(begin)
        chunk = stream.read(position - begin)
        for byte in reversed(chunk):
            if byte == 0x0A:  # reached the line before: everything since was whitespace
                return True
            if not chr(byte).isspace():
                return False
        position = begin
    return True


def _lines_from(stream: BinaryIO, start: int) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line, continues_previous) from the first line that starts at or after `start`.

    A line longer than MAX_LINE_BYTES comes in pieces; `continues_previous` marks the later pieces.
    """
    stream.seek(max(0, start - 1))
    position = max(0, start - 1)
    if start > 0:
        while True:  # skip to the end of the line holding byte start-1
            tail = stream.readline(MAX_LINE_BYTES)
            position += len(tail)
            if not tail or tail.endswith(b"\n"):
                break
    continues = False
    while True:
        line = stream.readline(MAX_LINE_BYTES)
        if not line:
            return
        yield position, line, continues
        position += len(line)
        continues = not line.endswith(b"\n")


def decode(raw: bytes, stats: ReadStats, flagged: list[bool]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if not flagged[0]:
            stats.undecodable_documents += 1
            flagged[0] = True
        return raw.decode("utf-8", errors="replace")


def text_documents(stream: BinaryIO, path: str, start: int, end: int, stats: ReadStats) -> Iterator[RawDocument]:
    """BERT's layout: one sentence or paragraph per line, blank lines between documents.

    Yields the documents whose first line starts in [start, end); an empty document (no text at all
    between two boundaries) cannot exist in this layout, so `empty_documents` stays for other formats.
    """
    after_blank = previous_line_is_blank(stream, _first_line_start(stream, start)) if start > 0 else True
    current: RawDocument | None = None
    chars = 0
    flagged = [False]
    for offset, line, continues in _lines_from(stream, start):
        if continues:
            stats.long_lines_split += 1
        elif is_blank(line):
            after_blank = True
            continue
        if after_blank and not continues:
            if current is not None:
                yield current
                current = None
            if offset >= end:
                return
            if offset >= start:
                current, chars, flagged = RawDocument(key=f"{path}@{offset}"), 0, [False]
                stats.documents += 1
        after_blank = False
        if current is None:
            continue  # the tail of a document owned by the previous range
        if chars > MAX_DOCUMENT_CHARS:
            yield current
            stats.long_documents_split += 1
            current, chars, flagged = RawDocument(key=f"{path}@{offset}"), 0, [False]
        text = decode(line, stats, flagged).strip()
        current.paragraphs.append(text)
        chars += len(text)
    if current is not None:
        yield current


def _first_line_start(stream: BinaryIO, start: int) -> int:
    for offset, _, _ in _lines_from(stream, start):
        return offset
    return start


def jsonl_documents(
    stream: BinaryIO, path: str, start: int, end: int, text_field: str, stats: ReadStats
) -> Iterator[RawDocument]:
    """One JSON object per line; its `text_field` is a document whose newlines separate paragraphs."""
    record: list[bytes] = []
    record_offset = -1
    for offset, line, continues in _lines_from(stream, start):
        if not continues:
            if record:
                yield from _jsonl_record(b"".join(record), path, record_offset, text_field, stats)
                record = []
            if offset >= end:
                return
            record_offset = offset
        record.append(line)  # a record longer than MAX_LINE_BYTES is reassembled here
    if record:
        yield from _jsonl_record(b"".join(record), path, record_offset, text_field, stats)


def _jsonl_record(raw: bytes, path: str, offset: int, text_field: str, stats: ReadStats) -> Iterator[RawDocument]:
    if is_blank(raw):
        return
    flagged = [False]
    try:
        value = json.loads(decode(raw, stats, flagged))
        text = value[text_field]
        if not isinstance(text, str):
            raise TypeError(text_field)
    except (ValueError, KeyError, TypeError):
        stats.malformed_records += 1
        return
    yield from text_record(text, f"{path}@{offset}", stats)


def text_record(text: str, key: str, stats: ReadStats) -> Iterator[RawDocument]:
    """A document given as one string (JSON Lines, Parquet): its lines are paragraphs."""
    stats.documents += 1
    paragraphs = [p.strip() for p in text.splitlines() if p.strip()]
    if not paragraphs:
        stats.empty_documents += 1
        return
    document, chars = RawDocument(key=key), 0
    for paragraph in paragraphs:
        if chars > MAX_DOCUMENT_CHARS:
            yield document
            stats.long_documents_split += 1
            document, chars = RawDocument(key=f"{key}+{len(document.paragraphs)}"), 0
        document.paragraphs.append(paragraph)
        chars += len(paragraph)
    yield document
