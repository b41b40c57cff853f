"""Extractive QA on SQuAD v1.1 / v2.0 files: reading, windowing long contexts, and picking answer spans.

A feature is one window: [CLS] question [SEP] context tokens [SEP], the question as segment 0 and the
context as segment 1. Contexts longer than the room left by the question are cut into overlapping
windows whose starts are `doc_stride` tokens apart (the original BERT code's meaning of doc stride).
Each context token keeps its character offsets in the context, so a span of tokens maps back to text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.finetune.labels import DataError
from preprocessing.errors import MissingInputError


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]  # every gold answer text (for scoring); empty when unanswerable
    answer_start: int | None  # character offset of the answer trained on; None when unanswerable
    answer_text: str | None


@dataclass
class SquadFile:
    questions: list[Question]
    version: str
    misaligned_answers: int = 0  # answers whose text is not at their answer_start: not trained on
    unanswerable: int = 0


def read_squad(path: str | Path) -> SquadFile:
    """The questions of a SQuAD JSON file. The first answer whose text is found at its `answer_start` is
    the one trained on; answers that are not where they say are counted and skipped, and a question left
    with none is kept for evaluation only (its answer texts still score predictions)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: a SQuAD file is an object with a 'data' list of articles")
    result = SquadFile([], str(document.get("version", "")))
    for article_index, article in enumerate(document["data"]):
        for paragraph_index, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{article_index}].paragraphs[{paragraph_index}]"
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise DataError(f"{where} has no 'context' string")
            for qa in paragraph.get("qas", []):
                if "id" not in qa or "question" not in qa:
                    raise DataError(f"{where}: a question needs 'id' and 'question'")
                answers = qa.get("answers", []) or []
                impossible = bool(qa.get("is_impossible", False)) or not answers
                start = text = None
                if impossible:
                    result.unanswerable += 1
                else:
                    for answer in answers:
                        offset, answer_text = answer.get("answer_start"), answer.get("text", "")
                        found = (
                            isinstance(offset, int)
                            and offset >= 0
                            and context[offset : offset + len(answer_text)] == answer_text
                        )
                        if answer_text and found:
                            start, text = offset, answer_text
                            break
                    if start is None:
                        result.misaligned_answers += 1
                gold = () if impossible else tuple(a.get("text", "") for a in answers)
                result.questions.append(Question(str(qa["id"]), qa["question"], context, gold, start, text))
    if not result.questions:
        raise DataError(f"{path} holds no questions")
    return result


def trainable(question: Question) -> bool:
    """Unanswerable questions train towards [CLS]; answerable ones need an answer found at its offset."""
    return not question.answers or question.answer_start is not None


@dataclass(frozen=True)
class Window:
    """Context tokens [start, start + length) of the context's token list."""

    start: int
    length: int


def context_windows(tokens: int, room: int, doc_stride: int) -> list[Window]:
    """Windows of at most `room` tokens covering `tokens`, each starting `doc_stride` after the last."""
    if room < 1:
        raise ValueError(f"no room for the context: {room} tokens left by the question and special tokens")
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be positive, got {doc_stride}")
    windows, start = [], 0
    while True:
        length = min(room, tokens - start)
        windows.append(Window(start, length))
        if start + length >= tokens:
            return windows
        start += min(length, doc_stride)


def max_context_score(window: Window, position: int) -> float:
    """How central context token `position` is in `window`: the smaller of its left and right context,
    plus a little for longer windows (the original BERT rule); a token is scored in the window where
    this is highest."""
    left = position - window.start
    right = window.start + window.length - 1 - position
    return min(left, right) + 0.01 * window.length


def token_span(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int] | None:
    """The first and last token (indexes into `offsets`) that overlap characters [char_start, char_end)."""
    first = next((i for i, (_, end) in enumerate(offsets) if end > char_start), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < char_end), None)
    if first is None or last is None or last < first:
        return None
    return first, last


@dataclass
class Feature:
    question_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    # Per position: character offsets into the context, or None outside the context (question, specials).
    offsets: list[tuple[int, int] | None]
    # Per position: whether this window is where the token is scored (True only on context tokens).
    is_max_context: list[bool]
    start_position: int = 0  # 0 ([CLS]) when the answer is not wholly inside this window
    end_position: int = 0
    has_answer: bool = False


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int


def build_features(
    question_index: int,
    question_ids: Sequence[int],
    context_ids: Sequence[int],
    context_offsets: Sequence[tuple[int, int]],
    answer: tuple[int, int] | None,
    special: SpecialIds,
    max_seq_length: int,
    doc_stride: int,
) -> list[Feature]:
    """The windows of one question. `answer` is the answer's character span [start, end) in the context, or
    None for an unanswerable question; a window holding only part of the answer targets [CLS]."""
    room = max_seq_length - len(question_ids) - 3
    windows = context_windows(len(context_ids), room, doc_stride)
    answer_tokens = token_span(context_offsets, *answer) if answer is not None else None
    # The window where each context token is scored (the first of equals).
    home = [0] * len(context_ids)
    for position in range(len(context_ids)):
        holding = [i for i, w in enumerate(windows) if w.start <= position < w.start + w.length]
        home[position] = max(holding, key=lambda i: (max_context_score(windows[i], position), -i))
    features = []
    prefix = 2 + len(question_ids)  # [CLS] question [SEP]
    for index, window in enumerate(windows):
        piece = range(window.start, window.start + window.length)
        feature = Feature(
            question_index=question_index,
            input_ids=[special.cls, *question_ids, special.sep, *(context_ids[i] for i in piece), special.sep],
            token_type_ids=[0] * prefix + [1] * (window.length + 1),
            offsets=[None] * prefix + [tuple(context_offsets[i]) for i in piece] + [None],
            is_max_context=[False] * prefix + [home[i] == index for i in piece] + [False],
        )
        if answer_tokens is not None:
            first, last = answer_tokens
            if window.start <= first and last < window.start + window.length:
                feature.start_position = prefix + first - window.start
                feature.end_position = prefix + last - window.start
                feature.has_answer = True
        features.append(feature)
    return features


@dataclass(frozen=True)
class Candidate:
    text: str
    score: float
    char_start: int
    char_end: int


def best_answer(
    context: str,
    features: Sequence[Feature],
    start_logits: Sequence[Sequence[float]],
    end_logits: Sequence[Sequence[float]],
    n_best: int = 20,
    max_answer_tokens: int = 30,
    allow_no_answer: bool = False,
    null_threshold: float = 0.0,
) -> tuple[str, list[Candidate], float]:
    """The predicted answer of one question from its windows' logits: the best-scoring span (start + end
    logit) among the `n_best` highest starts and ends of each window, inside the context, end not before
    start, at most `max_answer_tokens` long, starting where that window is the token's max context.
    With `allow_no_answer` (SQuAD 2.0), the empty answer wins when the lowest [CLS] score (start + end
    logit at position 0) beats the best span by more than `null_threshold`.
    Returns the answer, the candidates best first, and the no-answer score."""
    candidates: list[Candidate] = []
    null_score = float("inf")
    for feature, starts, ends in zip(features, start_logits, end_logits, strict=True):
        null_score = min(null_score, float(starts[0]) + float(ends[0]))
        top_starts = sorted(range(len(feature.offsets)), key=lambda i: -starts[i])[:n_best]
        top_ends = sorted(range(len(feature.offsets)), key=lambda i: -ends[i])[:n_best]
        for s in top_starts:
            if feature.offsets[s] is None or not feature.is_max_context[s]:
                continue
            for e in top_ends:
                if feature.offsets[e] is None or e < s or e - s + 1 > max_answer_tokens:
                    continue
                char_start, char_end = feature.offsets[s][0], feature.offsets[e][1]
                score = float(starts[s]) + float(ends[e])
                candidates.append(Candidate(context[char_start:char_end], score, char_start, char_end))
    candidates.sort(key=lambda c: -c.score)
    unique: list[Candidate] = []
    for candidate in candidates:  # one entry per span: several windows can propose the same one
        if all((c.char_start, c.char_end) != (candidate.char_start, candidate.char_end) for c in unique):
            unique.append(candidate)
        if len(unique) == n_best:
            break
    if not unique:
        return "", [], null_score
    if allow_no_answer and null_score - unique[0].score > null_threshold:
        return "", unique, null_score
    return unique[0].text, unique, null_score
