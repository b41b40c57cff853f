"""Build the small fine-tuning datasets of the tests from the reStructuredText sources of the Python documentation.

* ``classify_{train,validation}.jsonl``: paragraphs labelled with the part of the documentation they come from
  (``tutorial`` or ``c-api``); training and validation paragraphs come from different files.
* ``ner_{train,validation}.conll``: sentences whose API references (``:func:``, ``:meth:``, ``:class:``,
  ``:exc:``, ``:mod:`` roles) are the entities FUNC, CLASS and MOD, in CoNLL column format with BIO tags.
* ``qa_{train,validation}.json``: SQuAD 2.0 cloze questions: the context is a paragraph, the question one of
  its sentences with an API reference blanked out, the answer that reference; a third of the questions take
  their sentence from another paragraph and have no answer.

Example::

    python3 tests/data/pydocs/build_tasks.py /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
        --out tests/data/pydocs/tasks
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from build_corpus import (
    ROLE,
    clean_inline,
    group_paragraphs,
    remove_blocks,
    role_text,
    section_paragraphs,
    section_titles,
    source_files,
    split_sections,
)

ENTITY_TYPES = {"func": "FUNC", "meth": "FUNC", "class": "CLASS", "exc": "CLASS", "mod": "MOD"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
PUNCTUATION = ".,;:!?()\"'"
BLANK = "_____"
SEED = 20261122


@dataclass
class Paragraph:
    text: str
    entities: list[tuple[int, int, str]]  # character spans in text, with the entity type
    source: str


def annotated_paragraph(raw: str, titles: dict[str, str], source: str) -> Paragraph:
    """The displayed text of a raw paragraph, with the character spans of its API references; a space
    separates pieces where the source has whitespace between them."""
    text, entities, position = "", [], 0

    def append(piece: str, spaced: bool) -> None:
        nonlocal text
        text += (" " if text and spaced else "") + piece

    for match in ROLE.finditer(raw):
        gap = raw[position : match.start()]
        before = clean_inline(gap, titles)
        if before:
            append(before, gap[:1].isspace())
        display = role_text(match.group(1), match.group(2), titles)
        append("", (bool(gap) and gap[-1:].isspace()) or (bool(before) and gap[:1].isspace() and not before))
        start = len(text)
        text += display
        if match.group(1) in ENTITY_TYPES and display.strip() and " " not in display:
            entities.append((start, len(text), ENTITY_TYPES[match.group(1)]))
        position = match.end()
    gap = raw[position:]
    rest = clean_inline(gap, titles)
    if rest:
        append(rest, gap[:1].isspace())
    return Paragraph(text.strip(), entities, source)


def paragraphs_of(path: Path, titles: dict[str, str], root: Path) -> list[Paragraph]:
    found = []
    for section in split_sections(path.read_text(encoding="utf-8").splitlines()):
        for raw in group_paragraphs(remove_blocks(section)):
            paragraph = annotated_paragraph(raw, titles, str(path.relative_to(root)))
            # The text must be as the corpus builder cleans it, apart from spacing around references.
            if any(c.isalpha() for c in paragraph.text):
                found.append(paragraph)
    return found


def split_punctuation(word: str) -> list[str]:
    """A word with its leading and trailing punctuation as separate tokens."""
    core = word.strip(PUNCTUATION)
    if not core:
        return list(word)
    lead = word[: len(word) - len(word.lstrip(PUNCTUATION))]
    tail = word[len(lead) + len(core) :]
    return [*lead, core, *tail]


def words_and_tags(text: str, start: int, end: int, entities: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    """Whitespace words of text[start:end] with punctuation split off, the API references tagged B-TYPE (a
    reference holds no space, so it is one word of its own), the rest O."""
    out: list[tuple[str, str]] = []
    for match in re.finditer(r"\S+", text[start:end]):
        word_start, word_end = start + match.start(), start + match.end()
        entity = next(((s, e, t) for s, e, t in entities if s < word_end and e > word_start), None)
        if entity is None:
            out += [(token, "O") for token in split_punctuation(text[word_start:word_end])]
            continue
        s, e, kind = entity
        out += [(token, "O") for token in split_punctuation(text[word_start:s])] if s > word_start else []
        out.append((text[s:e], f"B-{kind}"))
        out += [(token, "O") for token in split_punctuation(text[e:word_end])] if e < word_end else []
    return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


def classification(files: dict[str, list[Path]], titles, root, per_label: int, rng: random.Random):
    """Training and validation rows, and the source files the validation rows come from."""
    train, validation, validation_files = [], [], []
    for label, paths in files.items():
        paths = sorted(paths)
        rng.shuffle(paths)
        cut = max(1, len(paths) // 4)
        validation_files += paths[:cut]
        for split, chosen, count in ((validation, paths[:cut], per_label // 3), (train, paths[cut:], per_label)):
            texts = []
            for path in chosen:
                for section in split_sections(path.read_text(encoding="utf-8").splitlines()):
                    texts += [p for p in section_paragraphs(section, titles) if len(p) >= 80]
            rng.shuffle(texts)
            split += [{"text": text[:600], "label": label} for text in texts[:count]]
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation, sorted(path.relative_to(root).as_posix() for path in validation_files)


def ner_sentences(paragraphs: list[Paragraph]) -> list[list[tuple[str, str]]]:
    sentences = []
    for paragraph in paragraphs:
        for start, end in sentence_spans(paragraph.text):
            inside = [e for e in paragraph.entities if e[0] >= start and e[1] <= end]
            if not inside:
                continue
            tagged = words_and_tags(paragraph.text, start, end, inside)
            if 5 <= len(tagged) <= 60:
                sentences.append(tagged)
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    lines = ["-DOCSTART- O", ""]
    for sentence in sentences:
        lines += [f"{word} {tag}" for word, tag in sentence] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def cloze_questions(paragraphs: list[Paragraph], prefix: str, rng: random.Random, limit: int) -> dict:
    """SQuAD 2.0 articles: one per paragraph that has an API reference inside a sentence."""
    candidates = []
    for paragraph in paragraphs:
        for start, end in sentence_spans(paragraph.text):
            for s, e, _ in paragraph.entities:
                if start <= s and e <= end and 30 <= end - start <= 300:
                    candidates.append((paragraph, start, end, s, e))
    rng.shuffle(candidates)
    candidates = candidates[:limit]
    articles = []
    for number, (paragraph, start, end, s, e) in enumerate(candidates):
        context = paragraph.text
        if number % 3 == 2:  # no answer: the sentence of another paragraph
            other, o_start, o_end, o_s, o_e = candidates[(number + 1) % len(candidates)]
            if other.text == context:
                continue
            question = other.text[o_start:o_s] + BLANK + other.text[o_e:o_end]
            qa = {"id": f"{prefix}{number}", "question": question, "answers": [], "is_impossible": True}
        else:
            question = context[start:s] + BLANK + context[e:end]
            answer = {"text": context[s:e], "answer_start": s}
            qa = {"id": f"{prefix}{number}", "question": question, "answers": [answer], "is_impossible": False}
        articles.append({"title": paragraph.source, "paragraphs": [{"context": context, "qas": [qa]}]})
    return {"version": "v2.0", "data": articles}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", type=Path, help="the _sources directory of the HTML documentation")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    root = args.sources
    library = source_files(root, ["library"])
    titles = section_titles(source_files(root, ["tutorial", "library", "c-api", "reference"]))
    args.out.mkdir(parents=True, exist_ok=True)

    train, validation, validation_files = classification(
        {"tutorial": source_files(root, ["tutorial"]), "c-api": source_files(root, ["c-api"])}, titles, root, 240, rng
    )
    for name, rows in (("classify_train.jsonl", train), ("classify_validation.jsonl", validation)):
        (args.out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    # For a pretraining corpus that leaves out every file the classifier is validated on.
    (args.out / "classify_validation_sources.txt").write_text("".join(f"{name}\n" for name in validation_files))

    # NER and QA: library files in sorted order; every fifth file is validation.
    train_paragraphs: list[Paragraph] = []
    validation_paragraphs: list[Paragraph] = []
    for index, path in enumerate(library[:150]):
        (validation_paragraphs if index % 5 == 4 else train_paragraphs).extend(paragraphs_of(path, titles, root))
    train_sentences, validation_sentences = ner_sentences(train_paragraphs), ner_sentences(validation_paragraphs)
    write_conll(args.out / "ner_train.conll", train_sentences[:400])
    write_conll(args.out / "ner_validation.conll", validation_sentences[:100])

    for name, paragraphs, prefix, limit in (
        ("qa_train.json", train_paragraphs, "t", 300),
        ("qa_validation.json", validation_paragraphs, "v", 90),
    ):
        squad = cloze_questions(paragraphs, prefix, rng, limit)
        (args.out / name).write_text(json.dumps(squad, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
