"""CoNLL-2003 column files for NER, and the alignment of word labels with WordPiece tokens.

A file holds one token per line, the token first and its tag last (other columns, such as CoNLL-2003's
part-of-speech and chunk tags, are kept but not used), a blank line between sentences; `-DOCSTART-`
lines separate documents and are not sentences. Tags are BIO (IOB2, or IOB1 as in the original
CoNLL-2003 release): O, B-TYPE, I-TYPE.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.heads import IGNORE_INDEX
from pipeline.finetune.labels import DataError
from preprocessing.errors import MissingInputError

DOCSTART = "-DOCSTART-"
TAG = re.compile(r"^(O|[BI]-\S+)$")


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    lines: tuple[str, ...]  # the original lines, written back with the predictions
    first_line: int


def read_conll(path: str | Path) -> list[Sentence]:
    """The sentences of `path`; a line with one column or a tag that is not BIO is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[str] = []
    first = 0

    def close() -> None:
        if words:
            sentences.append(Sentence(tuple(words), tuple(tags), tuple(lines), first))
        words.clear()
        tags.clear()
        lines.clear()

    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            columns = line.split()
            if not columns:
                close()
                continue
            if columns[0] == DOCSTART:
                close()
                continue
            if len(columns) < 2:
                raise DataError(
                    f"{path}:{number}: expected a token and its tag separated by whitespace, got {line.strip()!r}"
                )
            if not TAG.match(columns[-1]):
                raise DataError(
                    f"{path}:{number}: the last column {columns[-1]!r} is not a BIO tag (O, B-TYPE or I-TYPE)"
                )
            if not words:
                first = number
            words.append(columns[0])
            tags.append(columns[-1])
            lines.append(line)
    close()
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return sentences


def write_predictions(path: str | Path, sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]) -> None:
    """Each original line with the predicted tag appended as its last column (what conlleval reads: the
    token first, gold tag second to last, prediction last), a blank line between sentences."""
    out = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        out.extend(f"{line} {tag}" for line, tag in zip(sentence.lines, tags, strict=True))
        out.append("")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """One label per token: a word's label on its first sub-token, IGNORE_INDEX on its other sub-tokens
    and on the special tokens, so each word is counted once in the loss."""
    labels = []
    previous: int | None = None
    for word in word_ids:
        labels.append(word_labels[word] if word is not None and word != previous else IGNORE_INDEX)
        previous = word
    return labels


def word_predictions(word_ids: Sequence[int | None], token_predictions: Sequence[int], words: int) -> list[int | None]:
    """The prediction of each word: the one at its first sub-token; None for words truncation cut off."""
    predicted: list[int | None] = [None] * words
    previous: int | None = None
    for word, label in zip(word_ids, token_predictions, strict=True):
        if word is not None and word != previous:
            predicted[word] = label
        previous = word
    return predicted
