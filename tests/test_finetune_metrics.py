"""The fine-tuning metrics against values computed by hand."""

from __future__ import annotations

import pytest

from pipeline.finetune.metrics import (
    Entity,
    accuracy,
    entities,
    entity_scores,
    exact_match,
    macro_f1,
    normalize_answer,
    squad_scores,
    token_f1,
)


def test_accuracy_and_macro_f1():
    gold, predicted = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert accuracy(gold, predicted) == pytest.approx(3 / 5)
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 4/5; class 2: never predicted right, F1 0.
    assert macro_f1(gold, predicted) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # A class only predicted (3) still counts in the average, as in scikit-learn.
    assert macro_f1([0, 0], [0, 3]) == pytest.approx((2 / 3 + 0.0) / 2)
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        accuracy([0, 1], [0])


def test_entities_follow_conlleval_chunking():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [Entity("PER", 0, 1), Entity("LOC", 3, 3)]
    # I- after O or after another type starts a chunk (IOB1 files and sloppy predictions); B- splits a run.
    assert entities(["I-X", "I-X", "B-X", "I-Y", "O", "I-Z"]) == [
        Entity("X", 0, 1),
        Entity("X", 2, 2),
        Entity("Y", 3, 3),
        Entity("Z", 5, 5),
    ]
    assert entities(["O", "O"]) == []


def test_entity_scores_with_partial_overlaps():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],
        ["B-ORG", "O", "B-MISC"],
        ["B-PER", "O"],
    ]
    predicted = [
        ["B-PER", "O", "O", "B-LOC", "I-LOC"],  # both overlap their gold entity but neither matches it
        ["B-ORG", "O", "I-MISC"],  # both right: I-MISC after O starts the MISC entity
        ["B-LOC", "O"],  # right span, wrong type
    ]
    scores = entity_scores(gold, predicted)
    assert (scores.gold, scores.predicted, scores.correct) == (5, 5, 2)
    assert scores.precision == pytest.approx(2 / 5)
    assert scores.recall == pytest.approx(2 / 5)
    assert scores.f1 == pytest.approx(2 / 5)
    missed = entity_scores([["B-X", "O", "B-Y"]], [["B-X", "O", "O"]])
    assert (missed.precision, missed.recall) == (1.0, 0.5)
    assert missed.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert entity_scores([["O"]], [["O"]]).f1 == 0.0


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Cat's, hat!") == "cats hat"
    assert normalize_answer("An apple a day") == "apple day"
    assert exact_match("the cats hat", "Cats' Hat.") == 1.0
    # prediction tokens [big, red, dog], gold [red, dog]: P 2/3, R 1.
    assert token_f1("a big red dog", "red dog") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("dog", "") == 0.0
    gold = {"q1": ["red dog", "the red dog"], "q2": [], "q3": ["x"]}
    scores = squad_scores(gold, {"q1": "a big red dog", "q2": ""})
    # q1: EM 0, F1 0.8; q2 (no answer) answered with nothing: 1 and 1; q3 unanswered: 0.
    assert scores.exact_match == pytest.approx(100 / 3)
    assert scores.f1 == pytest.approx(100 * 1.8 / 3)
    assert (scores.total, scores.answered) == (3, 2)
