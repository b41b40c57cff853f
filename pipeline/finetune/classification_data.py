"""Sequence-classification examples from CSV, TSV or JSON Lines, and their encoding as
[CLS] text [SEP] (or [CLS] A [SEP] B [SEP] with segment ids 0/1 for sentence pairs), long texts cut to
their head, their tail, or both."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from tokenizers import Tokenizer

from pipeline.finetune.labels import DataError
from pipeline.finetune.squad import SpecialIds
from preprocessing.errors import MissingInputError

FORMATS = ("csv", "tsv", "jsonl")
Truncation = Literal["head", "tail", "head+tail"]
TRUNCATIONS: tuple[str, ...] = get_args(Truncation)


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
        raise MissingInputError(f"{path}: no such file")
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


def truncate(ids: Sequence[int], budget: int, mode: Truncation = "head") -> list[int]:
    """At most `budget` of `ids`: the first ones (head), the last ones (tail), or the first quarter of the
    budget, rounded up, and the last three quarters (head+tail: 128 + 382 of 510, which Sun et al. 2019 found
    best on long IMDb reviews)."""
    if mode not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {mode!r}; choose one of {list(TRUNCATIONS)}")
    budget = max(budget, 0)
    if len(ids) <= budget:
        return list(ids)
    head = {"head": budget, "tail": 0, "head+tail": (budget + 3) // 4}[mode]
    # len - n rather than -n: a tail of 0 tokens is empty, not the whole list.
    return [*ids[:head], *ids[len(ids) - (budget - head) :]]


def pair_lengths(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens each text of a pair keeps within `budget`, as the tokenizers library's longest_first
    decides: the longer text gives tokens up until both are equal, then they share the budget (the odd token
    goes to the longer one, or to the second when they are equal)."""
    if first + second <= budget:
        return first, second
    shorter = min(first, second)
    if 2 * shorter <= budget:
        kept_short, kept_long = shorter, budget - shorter
    else:
        kept_short, kept_long = budget // 2, budget - budget // 2
    return (kept_long, kept_short) if first > second else (kept_short, kept_long)


def frame(
    first: Sequence[int], second: Sequence[int] | None, max_length: int, special: SpecialIds, mode: Truncation = "head"
) -> EncodedText:
    """[CLS] A [SEP] (B [SEP]), segment ids 0 then 1, at most `max_length` tokens; a pair loses tokens from
    the longer text first, and each text keeps its own head, tail or both."""
    if second is None:
        kept = truncate(first, max_length - 2, mode)
        return EncodedText([special.cls, *kept, special.sep], [0] * (len(kept) + 2), len(kept) < len(first))
    budget = max(max_length - 3, 0)
    length_first, length_second = pair_lengths(len(first), len(second), budget)
    kept_first, kept_second = truncate(first, length_first, mode), truncate(second, length_second, mode)
    ids = [special.cls, *kept_first, special.sep, *kept_second, special.sep]
    types = [0] * (len(kept_first) + 2) + [1] * (len(kept_second) + 1)
    return EncodedText(ids, types, len(kept_first) + len(kept_second) < len(first) + len(second))


def encode_texts(
    tokenizer: Tokenizer, examples: list[TextExample], max_length: int, truncation: Truncation = "head"
) -> list[EncodedText]:
    """[CLS] A [SEP] (B [SEP]) of each example, cut by `frame`. The texts are tokenized whole and framed here
    (not by the tokenizer's template and truncation) because the tokenizer can only keep a head or a tail."""
    special = SpecialIds(tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
    texts = tokenizer.encode_batch([e.text for e in examples], add_special_tokens=False)
    pairs = [e.text_pair for e in examples if e.text_pair is not None]
    encoded_pairs = iter(tokenizer.encode_batch(pairs, add_special_tokens=False) if pairs else ())
    result = []
    for example, text in zip(examples, texts, strict=True):
        second = None if example.text_pair is None else next(encoded_pairs).ids
        result.append(frame(text.ids, second, max_length, special, truncation))
    return result
