"""Reading documents from byte ranges: the same documents whatever the ranges; bad input counted."""

from __future__ import annotations

import io
import json

import pytest

from preprocessing import documents as docs

TEXT = (
    "First document, first line.\nIts second line.\n\n"
    "Second document.\r\n   \r\nThird document, after a blank line with spaces.\nMore of it.\n\n\n\n"
    "Fourth document.\n"
)


def read_text(data: bytes, step: int) -> tuple[list[docs.RawDocument], docs.ReadStats]:
    stats = docs.ReadStats()
    out = []
    for start in range(0, len(data), step):
        out.extend(docs.text_documents(io.BytesIO(data), "f", start, min(len(data), start + step), stats))
    return out, stats


def as_tuples(documents):
    return [(d.key, d.paragraphs) for d in documents]


def test_text_layout_documents():
    documents, stats = read_text(TEXT.encode(), len(TEXT))
    assert [d.paragraphs for d in documents] == [
        ["First document, first line.", "Its second line."],
        ["Second document."],
        ["Third document, after a blank line with spaces.", "More of it."],
        ["Fourth document."],
    ]
    assert documents[0].key == "f@0"
    assert stats.documents == 4


@pytest.mark.parametrize("step", [1, 2, 3, 7, 16, 29, 64, 1000])
def test_any_range_size_gives_the_same_documents(step):
    data = TEXT.encode() * 3
    whole, _ = read_text(data, len(data))
    pieces, stats = read_text(data, step)
    assert as_tuples(pieces) == as_tuples(whole)
    assert stats.documents == len(whole) == 10  # the 4th and the next 1st merge: no blank line between


def test_invalid_utf8_is_replaced_and_counted():
    data = b"caf\xe9 au lait.\nfine.\n\nclean document.\n"
    documents, stats = read_text(data, len(data))
    assert documents[0].paragraphs[0] == "caf\ufffd au lait."
    assert stats.undecodable_documents == 1 and stats.documents == 2


def test_a_giant_line_is_read_in_pieces(monkeypatch):
    monkeypatch.setattr(docs, "MAX_LINE_BYTES", 100)
    line = ("word " * 70).strip()  # 349 bytes, no newline inside
    data = f"short.\n{line}\n\nnext.\n".encode()
    documents, stats = read_text(data, len(data))
    assert "".join(documents[0].paragraphs[1:]).replace(" ", "") == line.replace(" ", "")
    assert all(len(p) <= 100 for p in documents[0].paragraphs)
    assert stats.long_lines_split == 3
    assert [d.paragraphs for d in documents[1:]] == [["next."]]
    pieces, _ = read_text(data, 37)
    assert as_tuples(pieces) == as_tuples(documents)


def test_a_giant_document_is_cut_and_counted(monkeypatch):
    monkeypatch.setattr(docs, "MAX_DOCUMENT_CHARS", 50)
    data = ("".join(f"Line number {i} of a long document.\n" for i in range(10)) + "\nAfter.\n").encode()
    documents, stats = read_text(data, len(data))
    assert stats.long_documents_split == 4 and stats.documents == 2
    assert sum(len(d.paragraphs) for d in documents[:-1]) == 10
    assert len({d.key for d in documents}) == len(documents)


def jsonl(*records) -> bytes:
    return "".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records).encode()


def test_jsonl_records_fields_and_malformed_lines():
    data = jsonl(
        {"text": "Para one.\nPara two.", "id": 1},
        "not json\n",
        {"body": "no text field"},
        {"text": 42},
        "\n",
        {"text": "   "},
        {"text": "Last."},
    )
    stats = docs.ReadStats()
    documents = list(docs.jsonl_documents(io.BytesIO(data), "j", 0, len(data), "text", stats))
    assert [d.paragraphs for d in documents] == [["Para one.", "Para two."], ["Last."]]
    assert stats.malformed_records == 3
    assert stats.empty_documents == 1
    assert stats.documents == 3


@pytest.mark.parametrize("step", [1, 5, 33])
def test_jsonl_ranges_give_the_same_records(step):
    data = jsonl(*({"text": f"record {i} " * (i + 1)} for i in range(12)))
    whole = list(docs.jsonl_documents(io.BytesIO(data), "j", 0, len(data), "text", docs.ReadStats()))
    pieces = []
    for start in range(0, len(data), step):
        end = min(len(data), start + step)
        pieces.extend(docs.jsonl_documents(io.BytesIO(data), "j", start, end, "text", docs.ReadStats()))
    assert as_tuples(pieces) == as_tuples(whole) and len(whole) == 12
