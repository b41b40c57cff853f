"""Sequence-classification examples from CSV, TSV or JSON Lines, and their encoding as
[CLS] text [SEP] (or [CLS] A [SEP] B [SEP] with segment ids 0/1 for sentence pairs)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from pipeline.finetune.labels import DataError

FORMATS = ("csv", "tsv", "jsonl")


@dataclass(frozen=True)
class TextExample:
    text: str
    text_pair: str | None
    label: str
    line: int  # where it is in its file (for error messages)


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"


def table_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    for name in reversed(suffixes):
        name = name.lstrip(".")
        if name in ("json", "jsonl", "ndjson"):
            return "jsonl"
        if name in ("csv", "tsv"):
            return name
    raise DataError(f"{path}: cannot tell the format from the name; use a .csv, .tsv or .jsonl file")


def _rows(path: Path, file_format: str):
    """(line number, row dict) for each record."""
    with path.open(encoding="utf-8", newline="") as handle:
        if file_format == "jsonl":
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from error
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: a JSON Lines record must be an object, got {type(row).__name__}")
                yield number, row
        else:
            reader = csv.DictReader(handle, delimiter="\t" if file_format == "tsv" else ",")
            for row in reader:
                yield reader.line_num, row


def read_examples(path: str | Path, columns: Columns) -> tuple[list[TextExample], int]:
    """The examples of `path` and the number of rows skipped because their text is empty.
    A missing column or label is an error naming the file and line; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    file_format = table_format(path)
    examples: list[TextExample] = []
    skipped = 0
    wanted = [c for c in (columns.text, columns.text_pair, columns.label) if c]
    for number, row in _rows(path, file_format):
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DataError(
                f"{path}:{number}: no column {missing} (the record has {sorted(row)}); name the columns with "
                f"--text-column, --text-pair-column and --label-column"
            )
        label = row[columns.label]
        if label is None or str(label).strip() == "":
            raise DataError(f"{path}:{number}: the label is empty")
        text = "" if row[columns.text] is None else str(row[columns.text])
        pair = None if columns.text_pair is None else str(row[columns.text_pair] or "")
        if not text.strip():
            skipped += 1
            continue
        examples.append(TextExample(text, pair, str(label).strip(), number))
    if not examples:
        raise DataError(f"{path} holds no examples" + (f" ({skipped} rows with an empty text)" if skipped else ""))
    return examples, skipped


@dataclass(frozen=True)
class EncodedText:
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool


def encode_texts(tokenizer: Tokenizer, examples: list[TextExample], max_length: int) -> list[EncodedText]:
    """[CLS] A [SEP] (B [SEP]); pairs longer than `max_length` lose tokens from the longer side first."""
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    try:
        singles = [e.text for e in examples if e.text_pair is None]
        pairs = [(e.text, e.text_pair) for e in examples if e.text_pair is not None]
        encoded_singles = iter(tokenizer.encode_batch(singles)) if singles else iter(())
        encoded_pairs = iter(tokenizer.encode_batch(pairs)) if pairs else iter(())
        result = []
        for example in examples:
            encoding = next(encoded_singles if example.text_pair is None else encoded_pairs)
            result.append(EncodedText(encoding.ids, encoding.type_ids, bool(encoding.overflowing)))
        return result
    finally:
        tokenizer.no_truncation()
