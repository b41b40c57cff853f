"""The fine-tuning metrics as pure functions: accuracy and macro-F1, entity-level precision/recall/F1
with seqeval's (conlleval's) chunk semantics, and SQuAD exact match and F1 with the official answer
normalisation. Scores are fractions in [0, 1] except SQuAD's, which are percentages as the official
script prints them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


# -- classification --------------------------------------------------------------------------------


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    return _ratio(sum(g == p for g, p in zip(gold, predicted, strict=True)), len(gold))


def macro_f1(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """Unweighted mean of the per-class F1 over every class that occurs in gold or predictions
    (scikit-learn's `f1_score(average="macro")`); a class with no true positive scores 0."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    classes = sorted(set(gold) | set(predicted))
    if not classes:
        return 0.0
    scores = []
    for label in classes:
        true_positive = sum(g == label and p == label for g, p in zip(gold, predicted, strict=True))
        precision = _ratio(true_positive, sum(p == label for p in predicted))
        recall = _ratio(true_positive, sum(g == label for g in gold))
        scores.append(_f1(precision, recall))
    return sum(scores) / len(scores)


# -- named entities ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    type: str
    start: int  # first word
    end: int  # last word, inclusive


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O" or not tag:
        return "O", ""
    prefix, _, entity_type = tag.partition("-")
    return (prefix, entity_type) if entity_type else ("O", "")


def entities(tags: Sequence[str]) -> list[Entity]:
    """The chunks of one sentence's BIO (IOB2 or IOB1) tags, as conlleval and seqeval's default mode read
    them: a chunk starts at B-X, or at I-X after O or after a different type; it ends where the next
    tag is O, B-, or of another type. So "I-X I-X" is one X entity and "B-X I-Y" two."""
    found: list[Entity] = []
    start, current = -1, ""
    for index, tag in enumerate([*tags, "O"]):
        prefix, entity_type = _split_tag(tag)
        ends = current and (prefix in ("O", "B") or entity_type != current)
        if ends:
            found.append(Entity(current, start, index - 1))
            current = ""
        if prefix in ("B", "I") and not current:
            start, current = index, entity_type
    return found


@dataclass(frozen=True)
class EntityScores:
    precision: float
    recall: float
    f1: float
    gold: int
    predicted: int
    correct: int


def entity_scores(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]) -> EntityScores:
    """Micro-averaged over all entities: an entity counts as correct only with its exact boundaries and type."""
    gold_count = predicted_count = correct = 0
    for sentence, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {sentence}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        gold_entities, predicted_entities = set(entities(gold_tags)), set(entities(predicted_tags))
        gold_count += len(gold_entities)
        predicted_count += len(predicted_entities)
        correct += len(gold_entities & predicted_entities)
    precision, recall = _ratio(correct, predicted_count), _ratio(correct, gold_count)
    return EntityScores(precision, recall, _f1(precision, recall), gold_count, predicted_count, correct)


# -- SQuAD -------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, punctuation removed, articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 of the normalised strings; two empty answers (no-answer agreed) score 1."""
    predicted_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    common = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    return _f1(common / len(predicted_tokens), common / len(gold_tokens))


@dataclass(frozen=True)
class SquadScores:
    exact_match: float  # percent
    f1: float  # percent
    total: int
    answered: int  # questions with a prediction


def squad_scores(gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> SquadScores:
    """EM and F1 over every question of the gold set, each the best over its gold answers; a question with
    no gold answer (SQuAD 2.0) has the empty answer; a question without a prediction scores 0."""
    exact = f1 = 0.0
    for question_id, answers in gold_answers.items():
        if question_id not in predictions:
            continue
        prediction = predictions[question_id]
        candidates = [a for a in answers if normalize_answer(a)] or [""]
        exact += max(exact_match(prediction, a) for a in candidates)
        f1 += max(token_f1(prediction, a) for a in candidates)
    total = len(gold_answers)
    answered = sum(question_id in predictions for question_id in gold_answers)
    return SquadScores(100.0 * _ratio(exact, total), 100.0 * _ratio(f1, total), total, answered)
