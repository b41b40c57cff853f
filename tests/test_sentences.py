"""Sentence segmentation and the bound on sentence length."""

from __future__ import annotations

from collections import Counter

from preprocessing.sentences import SentenceSplitter, cut_at_whitespace


def test_splits_english_sentences_and_keeps_abbreviations():
    splitter = SentenceSplitter("en")
    text = "Dr. Smith arrived at 3.30 p.m. on Monday! Did he? Call os.path.join() here. See e.g. the docs."
    assert splitter.split(text) == [
        "Dr. Smith arrived at 3.30 p.m. on Monday!",
        "Did he?",
        "Call os.path.join() here.",
        "See e.g. the docs.",
    ]


def test_long_sentences_are_cut_at_whitespace_and_counted():
    splitter = SentenceSplitter("en", max_sentence_chars=50)
    counters: Counter[str] = Counter()
    long = " ".join(f"word{i}" for i in range(60))  # ~400 characters, no boundary
    pieces = splitter.split(long, counters)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces) == long
    assert counters["long_sentences_cut"] == 1


def test_cut_without_whitespace_cuts_hard():
    assert cut_at_whitespace("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert cut_at_whitespace("short", 10) == ["short"]
