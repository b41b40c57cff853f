"""Sentence segmentation with `sentencex` (Wikimedia's rule-based segmenter: compiled, ~300
languages, nothing downloaded at run time), with a bound on sentence length.

A "sentence" longer than `max_sentence_chars` (a line with no boundary, a table flattened into
text) is cut at whitespace into pieces of at most that size: more than a few hundred tokens of one
sentence can never fit a training sequence, and unbounded strings would cost memory and time.
"""

from __future__ import annotations

from collections import Counter
from importlib.metadata import version

import sentencex


class SentenceSplitter:
    def __init__(self, language: str = "en", max_sentence_chars: int = 5000):
        self.language = language
        self.max_sentence_chars = max_sentence_chars

    @staticmethod
    def description() -> str:
        return f"sentencex {version('sentencex')}"

    def split(self, paragraph: str, counters: Counter[str] | None = None) -> list[str]:
        sentences = []
        for sentence in sentencex.segment(self.language, paragraph):
            sentence = sentence.strip()
            if not sentence:
                continue
            if len(sentence) <= self.max_sentence_chars:
                sentences.append(sentence)
                continue
            pieces = cut_at_whitespace(sentence, self.max_sentence_chars)
            if counters is not None:
                counters["long_sentences_cut"] += 1
            sentences.extend(pieces)
        return sentences


def cut_at_whitespace(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at the last whitespace before the limit when there is one."""
    pieces = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return [p for p in pieces if p]
