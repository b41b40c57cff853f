"""Reading the fine-tuning inputs, label alignment for NER and span mapping for QA, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.heads import IGNORE_INDEX
from pipeline.finetune.classification_data import (
    TRUNCATIONS,
    Columns,
    TextExample,
    encode_texts,
    frame,
    pair_lengths,
    read_examples,
    truncate,
)
from pipeline.finetune.conll import align_labels, read_conll, word_predictions, write_predictions
from pipeline.finetune.labels import DataError, LabelMap
from pipeline.finetune.squad import (
    Feature,
    SpecialIds,
    Window,
    best_answer,
    build_features,
    context_windows,
    read_squad,
    token_span,
)
from pipeline.finetune.task import TEST, VALIDATION, TaskOptions, collate_features
from preprocessing.tokenizer import SPECIAL_TOKENS, add_pair_template, build_wordpiece

WORDS = ["use", "os", ".", "path", "join", "(", ")", "to", "##s", "the", "module"]


@pytest.fixture
def tokenizer():
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *WORDS])}
    built = build_wordpiece(vocab, lowercase=True)
    add_pair_template(built)
    return built


def ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.token_to_id(t) for t in tokens]


# -- classification ------------------------------------------------------------------------------------


def test_classification_files_in_three_formats(tmp_path):
    (tmp_path / "a.csv").write_text('text,other,label\n"Use os, please",x,pos\n,y,neg\nthe module,z,neg\n')
    (tmp_path / "a.tsv").write_text("text\tlabel\nuse os\t1\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "use", "label": 10}) + "\n\n")
    examples, skipped = read_examples(tmp_path / "a.csv", Columns())
    assert [(e.text, e.label, e.line) for e in examples] == [("Use os, please", "pos", 2), ("the module", "neg", 4)]
    assert skipped == 1  # the empty text
    assert read_examples(tmp_path / "a.tsv", Columns())[0][0].label == "1"
    assert read_examples(tmp_path / "a.jsonl", Columns())[0][0].label == "10"


def test_classification_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"empty\.csv holds no examples"):
        read_examples(tmp_path / "empty.csv", Columns())
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"sentence": "b", "label": "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: no column \['text'\].*--text-column"):
        read_examples(tmp_path / "bad.jsonl", Columns())
    (tmp_path / "nolabel.csv").write_text("text,label\nfine,a\nmissing,\n")
    with pytest.raises(DataError, match=r"nolabel\.csv:3: the label is empty"):
        read_examples(tmp_path / "nolabel.csv", Columns())
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_examples(tmp_path / "data.txt", Columns())


def test_label_map_orders_labels_and_refuses_unseen_ones():
    labels = LabelMap.from_training(["10", "2", "b", "a", "2"])
    assert labels.names == ("2", "10", "a", "b")
    assert LabelMap.from_training(["B-X", "O", "I-X"], first=["O"]).names == ("O", "B-X", "I-X")
    with pytest.raises(DataError, match=r"dev.csv has labels the training data never has: \['zzz'\].*--map-unseen"):
        labels.ids(["a", "zzz"], "dev.csv")
    assert labels.ids(["a", "zzz"], "dev.csv", unseen_to="b") == [2, 3]
    with pytest.raises(DataError, match="'nope' is not a training label"):
        labels.ids(["a"], "dev.csv", unseen_to="nope")


def test_sentence_pairs_are_segments_a_and_b_truncated_to_fit(tokenizer, tmp_path):
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({"q": "use os", "p": "the module", "y": "1"})
        + "\n"
        + json.dumps({"q": "use os path join to paths", "p": "the module", "y": "0"})
        + "\n"
    )
    examples, _ = read_examples(tmp_path / "pairs.jsonl", Columns("q", "p", "y"))
    short, long = encode_texts(tokenizer, examples, max_length=8)
    assert short.input_ids == ids(tokenizer, "[CLS]", "use", "os", "[SEP]", "the", "module", "[SEP]")
    assert short.token_type_ids == [0, 0, 0, 0, 1, 1, 1] and not short.truncated
    # 6 + 2 tokens and 3 specials exceed 8: the longer (first) segment gives up tokens.
    assert long.input_ids == ids(tokenizer, "[CLS]", "use", "os", "path", "[SEP]", "the", "module", "[SEP]")
    assert long.token_type_ids == [0, 0, 0, 0, 0, 1, 1, 1] and long.truncated


def test_truncation_keeps_the_head_the_tail_or_both():
    ids = list(range(1, 21))
    assert truncate(ids, 10, "head") == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert truncate(ids, 10, "tail") == [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    # A quarter of 10, rounded up, from the head; the other 7 from the tail.
    assert truncate(ids, 10, "head+tail") == [1, 2, 3, 14, 15, 16, 17, 18, 19, 20]
    # Sun et al.'s split of BERT's 510 content tokens: 128 + 382.
    long = list(range(1000))
    kept = truncate(long, 510, "head+tail")
    assert kept[:128] == long[:128] and kept[128:] == long[-382:]
    for mode in TRUNCATIONS:
        assert truncate(ids, 20, mode) == ids and truncate(ids[:3], 10, mode) == [1, 2, 3]  # short: unchanged
        assert truncate(ids, 0, mode) == [] and truncate(ids, -1, mode) == []
    assert truncate(ids, 1, "tail") == [20] and truncate(ids, 1, "head+tail") == [1]
    with pytest.raises(ValueError, match="unknown truncation 'middle'"):
        truncate(ids, 10, "middle")
    from pipeline.cli import build_parser

    required = ["--model", "m", "--train", "t", "--validation", "v", "--output", "o"]
    for mode in TRUNCATIONS:  # the CLI spells the choices out; they are these
        args = build_parser().parse_args(["finetune", "classify", *required, "--truncation", mode])
        assert args.truncation == mode and args.test is None


def test_framing_keeps_cls_and_sep_and_cuts_the_longer_text_of_a_pair():
    special = SpecialIds(cls=101, sep=102)
    ids = list(range(1, 21))
    single = frame(ids, None, 12, special, "head+tail")  # 10 tokens between [CLS] and [SEP]
    assert single.input_ids == [101, 1, 2, 3, 14, 15, 16, 17, 18, 19, 20, 102]
    assert single.token_type_ids == [0] * 12 and single.truncated
    assert frame(ids, None, 12, special, "tail").input_ids == [101, *range(11, 21), 102]
    short = frame([1, 2], [3], 12, special, "tail")
    assert short.input_ids == [101, 1, 2, 102, 3, 102] and short.token_type_ids == [0, 0, 0, 0, 1, 1]
    assert not short.truncated
    # A pair of 20 + 4 in 13 (10 content tokens): the longer text keeps 6, the shorter all 4.
    pair = frame(ids, [31, 32, 33, 34], 13, special, "tail")
    assert pair.input_ids == [101, 15, 16, 17, 18, 19, 20, 102, 31, 32, 33, 34, 102]
    assert pair.token_type_ids == [0] * 8 + [1] * 5 and pair.truncated
    both = frame(ids, list(range(31, 51)), 13, special, "head+tail")  # 20 + 20: 5 each, head 2 + tail 3
    assert both.input_ids == [101, 1, 2, 18, 19, 20, 102, 31, 32, 48, 49, 50, 102]


def test_pair_lengths_are_the_tokenizers_longest_first():
    assert pair_lengths(3, 4, 10) == (3, 4)
    assert pair_lengths(20, 4, 10) == (6, 4) and pair_lengths(4, 20, 10) == (4, 6)
    assert pair_lengths(20, 20, 9) == (4, 5) and pair_lengths(21, 20, 9) == (5, 4) and pair_lengths(6, 7, 9) == (4, 5)


def test_head_truncation_is_the_tokenizers_own(tokenizer):
    """Every pair of lengths (and every single text) up to 9 tokens, cut to 9 by the tokenizer's longest_first
    truncation and by `encode_texts`: the same tokens, segments and truncated flags."""
    words = ["use", "os", "path", "join", "to", "the", "module", "os", "use"]
    examples = [TextExample(" ".join(words[:a]), None, "x", a) for a in range(1, 10)]
    examples += [
        TextExample(" ".join(words[:a]), " ".join(words[::-1][:b]), "x", 0) for a in range(1, 10) for b in range(10)
    ]
    tokenizer.enable_truncation(9, strategy="longest_first")
    reference = [tokenizer.encode(e.text, e.text_pair) for e in examples]
    tokenizer.no_truncation()
    for example, expected, got in zip(examples, reference, encode_texts(tokenizer, examples, 9), strict=True):
        assert (got.input_ids, got.token_type_ids) == (expected.ids, expected.type_ids), example
        assert got.truncated == bool(expected.overflowing), example


def test_classification_truncation_option_and_truncated_counts(tokenizer, tmp_path):
    from pipeline.finetune.classify import ClassificationTask

    rows = [{"text": "use os path join to the module", "label": "a"}, {"text": "the module", "label": "b"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dev.jsonl").write_text(json.dumps(rows[0]) + "\n")
    firsts = {}
    for mode in TRUNCATIONS:
        task = ClassificationTask(TaskOptions(max_seq_length=6, truncation=mode))
        data = task.prepare(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", tokenizer)
        assert data.counts["truncated_examples"] == 2  # the long text in train and in validation
        firsts[mode] = data.train[0]["input_ids"]
    assert firsts["head"] == ids(tokenizer, "[CLS]", "use", "os", "path", "join", "[SEP]")
    assert firsts["tail"] == ids(tokenizer, "[CLS]", "join", "to", "the", "module", "[SEP]")
    assert firsts["head+tail"] == ids(tokenizer, "[CLS]", "use", "to", "the", "module", "[SEP]")
    assert data.train[1]["input_ids"] == ids(tokenizer, "[CLS]", "the", "module", "[SEP]")  # short: whole


def test_collate_pads_tokens_and_per_token_labels():
    features = [
        {"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "labels": [IGNORE_INDEX, 4, IGNORE_INDEX]},
        {"input_ids": [2, 5, 6, 7, 3], "token_type_ids": [0, 0, 1, 1, 1], "labels": [IGNORE_INDEX, 1, 2, 0, 0]},
    ]
    batch = collate_features(features, pad_id=0, max_length=128)
    assert batch["input_ids"].shape == (2, 8)  # longest 5, rounded up to a multiple of 8
    assert batch["input_ids"][0].tolist() == [2, 5, 3, 0, 0, 0, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 4] + [IGNORE_INDEX] * 6
    scalar = collate_features([{"input_ids": [2], "token_type_ids": [0], "labels": 3}], 0, 4)
    assert scalar["labels"].tolist() == [3] and scalar["input_ids"].shape == (1, 4)
    assert torch.equal(scalar["attention_mask"], torch.tensor([[1, 0, 0, 0]]))


# -- NER -----------------------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- O O

Use VB O
os.path.join() NN B-FUNC
. . O

the DT O
os NN B-MOD
module NN O
"""


def test_conll_reading_and_writing(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL)
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [("Use", "os.path.join()", "."), ("the", "os", "module")]
    assert [s.tags for s in sentences] == [("O", "B-FUNC", "O"), ("O", "B-MOD", "O")]
    assert sentences[1].first_line == 7
    out = tmp_path / "predictions.conll"
    write_predictions(out, sentences, [["O", "B-FUNC", "O"], ["O", "O", "O"]])
    assert out.read_text().splitlines()[:4] == ["Use VB O O", "os.path.join() NN B-FUNC B-FUNC", ". . O O", ""]
    # Read back, the last column (the prediction) is the tag.
    assert [s.tags for s in read_conll(out)] == [("O", "B-FUNC", "O"), ("O", "O", "O")]


def test_conll_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("Use O\nlonely\n")
    with pytest.raises(DataError, match=r"bad.conll:2: expected a token and its tag"):
        read_conll(bad)
    bad.write_text("Use O\nos X-MOD\n")
    with pytest.raises(DataError, match=r"bad.conll:2: the last column 'X-MOD' is not a BIO tag"):
        read_conll(bad)
    bad.write_text("-DOCSTART- O\n\n")
    with pytest.raises(DataError, match="holds no sentences"):
        read_conll(bad)


def test_word_labels_go_on_first_sub_tokens(tokenizer):
    assert align_labels([None, 0, 0, 1, 2, 2, 2, None], [3, 0, 5]) == [
        IGNORE_INDEX,
        3,
        IGNORE_INDEX,
        0,
        5,
        IGNORE_INDEX,
        IGNORE_INDEX,
        IGNORE_INDEX,
    ]
    assert word_predictions([None, 0, 0, 1, None], [9, 1, 2, 3, 9], words=3) == [1, 3, None]
    # With the real tokenizer: "os.path.join()" is one word of seven pieces, "paths" two.
    encoding = tokenizer.encode(["Use", "os.path.join()", "paths"], is_pretokenized=True)
    assert encoding.tokens == ["[CLS]", "use", "os", ".", "path", ".", "join", "(", ")", "path", "##s", "[SEP]"]
    labels = align_labels(encoding.word_ids, [0, 1, 0])
    assert labels == [IGNORE_INDEX, 0, 1] + [IGNORE_INDEX] * 6 + [0, IGNORE_INDEX, IGNORE_INDEX]


def test_ner_task_truncates_long_sentences_and_counts_them(tokenizer, tmp_path):
    from pipeline.finetune.ner import NerTask

    (tmp_path / "train.conll").write_text(CONLL)
    (tmp_path / "dev.conll").write_text("use O\nos.path.join() B-FUNC\nthe O\nos B-MOD\nmodule O\n")
    task = NerTask(TaskOptions(max_seq_length=6))
    data = task.prepare(tmp_path / "train.conll", tmp_path / "dev.conll", tokenizer)
    assert data.id2label == {0: "O", 1: "B-FUNC", 2: "B-MOD"}
    assert data.counts["truncated_sentences"] == 2  # "Use os.path.join() ." and the validation sentence
    dev = data.validation[0]
    assert len(dev["input_ids"]) == 6
    assert dev["labels"] == [IGNORE_INDEX, 0, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    # Words cut off are predicted O and still scored: the MOD entity counts as missed.
    logits = torch.full((1, 6, 3), -5.0)
    logits[0, 1, 0] = logits[0, 2, 1] = 5.0
    outputs = task.outputs(type("Out", (), {"logits": logits})(), [6])
    metrics, predicted = task.score(outputs)
    assert predicted == [["O", "B-FUNC", "O", "O", "O"]]
    assert (metrics["precision"], metrics["recall"]) == (1.0, 0.5)


# -- QA ------------------------------------------------------------------------------------------------


def test_windows_and_token_spans():
    assert context_windows(10, room=4, doc_stride=3) == [Window(0, 4), Window(3, 4), Window(6, 4)]
    assert context_windows(3, room=4, doc_stride=3) == [Window(0, 3)]
    assert token_span([(0, 3), (4, 8), (8, 9), (10, 15)], 4, 9) == (1, 2)
    assert token_span([(0, 3), (4, 8)], 3, 4) is None  # the space between tokens


def test_an_answer_crossing_a_window_boundary_is_trained_where_it_is_whole():
    special = SpecialIds(cls=2, sep=3)
    context_ids = list(range(100, 110))
    offsets = [(2 * i, 2 * i + 1) for i in range(10)]  # token i covers character 2i
    # Answer: tokens 3..5 = characters [6, 11). Windows of 4 tokens, 3 apart: 0-3, 3-6, 6-9.
    features = build_features(7, [50, 51], context_ids, offsets, (6, 11), special, max_seq_length=9, doc_stride=3)
    assert len(features) == 3
    first, second, third = features
    assert second.input_ids == [2, 50, 51, 3, 103, 104, 105, 106, 3]
    assert second.token_type_ids == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert second.offsets[:4] == [None] * 4 and second.offsets[4] == (6, 7) and second.offsets[-1] is None
    assert (second.start_position, second.end_position, second.has_answer) == (4, 6, True)
    # The first window holds token 3 but not 4 and 5: it is trained towards [CLS], as is the third.
    assert (first.start_position, first.end_position, first.has_answer) == (0, 0, False)
    assert (third.start_position, third.end_position, third.has_answer) == (0, 0, False)
    # Token 3 is as central in window 0 as in window 1 (the first wins); 6 likewise goes to window 1.
    assert first.is_max_context[4:8] == [True, True, True, True]
    assert second.is_max_context[4:8] == [False, True, True, True]
    assert third.is_max_context[4:8] == [False, True, True, True]
    assert all(f.question_index == 7 for f in features)
    unanswerable = build_features(0, [50], context_ids[:2], offsets[:2], None, special, 9, 3)
    assert [(f.start_position, f.end_position) for f in unanswerable] == [(0, 0)]


def _feature(offsets, max_context=None) -> Feature:
    return Feature(0, [0] * len(offsets), [0] * len(offsets), offsets, max_context or [o is not None for o in offsets])


def test_best_answer_searches_valid_spans():
    context = "abc def ghi"
    offsets = [None, None, (0, 3), (4, 7), (8, 11), None]
    feature = _feature(offsets)
    starts = [0.0, 9.0, 1.0, 3.0, 2.0, 0.0]  # position 1 (the question) scores best but is not context
    ends = [0.0, 0.0, 1.0, 1.0, 5.0, 9.0]  # position 5 ([SEP]) likewise
    answer, candidates, null = best_answer(context, [feature], [starts], [ends])
    # spans (start, end): (3, 4) 3 + 5 = 8, (4, 4) 7, (2, 4) 6, (3, 3) 4, ...; (3, 2) ends before it starts
    assert answer == "def ghi" and candidates[0].score == 8.0
    assert [c.text for c in candidates[:3]] == ["def ghi", "ghi", "abc def ghi"]
    assert null == 0.0
    assert best_answer(context, [feature], [starts], [ends], max_answer_tokens=1)[0] == "ghi"
    # A start outside its max-context window is not proposed by that window.
    masked = _feature(offsets, [False, False, True, False, True, False])
    assert best_answer(context, [masked], [starts], [ends])[0] == "ghi"
    # Several windows: the best span over all of them.
    other = _feature([None, (0, 3), (4, 7), None])
    answer, _, _ = best_answer(context, [feature, other], [starts, [0, 9.0, 0, 0]], [ends, [0, 0, 9.0, 0]])
    assert answer == "abc def"  # 9 + 9 in the second window
    # SQuAD 2.0: [CLS] (start 0 + end 0) beats the best span by more than the threshold -> no answer.
    loud_starts, loud_ends = [20.0, *starts[1:]], [20.0, *ends[1:]]
    loud = ([feature], [loud_starts], [loud_ends])
    assert best_answer(context, *loud, allow_no_answer=True)[0] == ""
    assert best_answer(context, *loud, allow_no_answer=False)[0] == "def ghi"
    assert best_answer(context, *loud, allow_no_answer=True, null_threshold=40)[0] == "def ghi"  # 40 - 8 < 40


def test_squad_reading_skips_and_counts_misplaced_answers(tmp_path):
    document = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "The glob module finds pathnames.",
                        "qas": [
                            {"id": "ok", "question": "q", "answers": [{"text": "glob", "answer_start": 4}]},
                            {"id": "moved", "question": "q", "answers": [{"text": "glob", "answer_start": 9}]},
                            {
                                "id": "second",
                                "question": "q",
                                "answers": [{"text": "glob", "answer_start": 0}, {"text": "module", "answer_start": 9}],
                            },
                            {"id": "none", "question": "q", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(document))
    squad = read_squad(path)
    by_id = {q.id: q for q in squad.questions}
    assert squad.misaligned_answers == 1 and squad.unanswerable == 1
    assert by_id["ok"].answer_start == 4
    assert by_id["moved"].answer_start is None and by_id["moved"].answers == ("glob",)
    assert (by_id["second"].answer_start, by_id["second"].answer_text) == (9, "module")
    assert by_id["none"].answers == ()
    (tmp_path / "empty.json").write_text('{"data": []}')
    with pytest.raises(DataError, match="holds no questions"):
        read_squad(tmp_path / "empty.json")
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(DataError, match=r"broken\.json: not JSON"):
        read_squad(tmp_path / "broken.json")


def test_qa_task_needs_room_for_the_context(tokenizer, tmp_path):
    from pipeline.finetune.qa import QuestionAnsweringTask

    task = QuestionAnsweringTask(TaskOptions(max_seq_length=64, max_query_length=64))
    with pytest.raises(ValueError, match="--max-query-length 64 leaves no room"):
        task.prepare(Path("unused"), Path("unused"), tokenizer)


# -- a test file: encoded as validation is, scored once with its own gold labels -------------------------


def test_classification_scores_the_test_split_with_its_own_labels(tokenizer, tmp_path):
    from pipeline.finetune.classify import ClassificationTask

    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))

    write("train.jsonl", [("use os", "a"), ("the module", "b")])
    write("dev.jsonl", [("use os", "a")])
    write("test.jsonl", [("the module", "b"), ("", "a"), ("os", "b"), ("path", "a")])
    task = ClassificationTask(TaskOptions())
    data = task.prepare(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", tokenizer, tmp_path / "test.jsonl")
    assert [f["labels"] for f in data.test] == [1, 1, 0] and len(data.validation) == 1
    assert data.counts["test_examples"] == 3 and data.counts["empty_texts_skipped"] == 1
    # Without a test file the counts are as they always were.
    alone = ClassificationTask(TaskOptions()).prepare(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", tokenizer)
    assert alone.test is None and "test_examples" not in alone.counts
    assert list(alone.counts) == [
        "train_examples",
        "validation_examples",
        "empty_texts_skipped",
        "truncated_examples",
        "labels",
    ]

    logits = [np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0])]  # always "b"
    metrics, predictions = task.score([{"logits": row} for row in logits], TEST)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert predictions == [
        {"line": 1, "label": "b", "predicted": "b"},
        {"line": 3, "label": "b", "predicted": "b"},
        {"line": 4, "label": "a", "predicted": "b"},
    ]
    assert task.score([{"logits": logits[0]}], VALIDATION)[0]["accuracy"] == 0.0  # validation's gold is "a"
    assert task.predictions_name(VALIDATION) == "predictions.jsonl"
    assert task.predictions_name(TEST) == "test_predictions.jsonl"
    unseen = tmp_path / "unseen.jsonl"
    write("unseen.jsonl", [("os", "zzz")])
    with pytest.raises(DataError, match=r"unseen\.jsonl has labels the training data never has: \['zzz'\]"):
        task.prepare(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", tokenizer, unseen)


def test_ner_writes_the_test_predictions_under_the_test_sentences(tokenizer, tmp_path):
    from pipeline.finetune.ner import NerTask

    (tmp_path / "train.conll").write_text(CONLL)
    (tmp_path / "dev.conll").write_text("use O\nos B-MOD\n")
    (tmp_path / "test.conll").write_text("the O\nmodule O\nos B-MOD\n\nuse O\n")
    task = NerTask(TaskOptions())
    data = task.prepare(tmp_path / "train.conll", tmp_path / "dev.conll", tokenizer, tmp_path / "test.conll")
    assert data.counts["test_sentences"] == 2 and data.counts["validation_sentences"] == 1
    assert "_word_ids" not in data.test[0]
    # Token logits that tag every word B-MOD: on the test split, one of two predicted entities is right.
    b_mod = task.labels.names.index("B-MOD")
    outputs = [{"predicted": np.full(len(f["input_ids"]), b_mod)} for f in data.test]
    metrics, tags = task.score(outputs, TEST)
    assert tags == [["B-MOD", "B-MOD", "B-MOD"], ["B-MOD"]]
    assert (metrics["precision"], metrics["recall"]) == (0.25, 1.0)
    task.write_predictions(tags, tmp_path / task.predictions_name(TEST), TEST)
    written = (tmp_path / "test_predictions.conll").read_text().splitlines()
    assert written == ["the O B-MOD", "module O B-MOD", "os B-MOD B-MOD", "", "use O B-MOD", ""]


def test_the_best_epochs_metrics_are_reported_with_the_test_ones_beside_them():
    from pipeline.finetune.trainer import final_record, reported_metrics, summary_line

    best = {"value": 0.8, "epoch": 2, "step": 20, "metrics": {"accuracy": 0.8, "macro_f1": 0.75}}
    test = {"accuracy": 0.7, "macro_f1": 0.65}
    assert reported_metrics(best["metrics"], None) == {"eval_accuracy": 0.8, "eval_macro_f1": 0.75}
    assert reported_metrics(best["metrics"], test) == {
        "eval_accuracy": 0.8,
        "eval_macro_f1": 0.75,
        "test_accuracy": 0.7,
        "test_macro_f1": 0.65,
    }
    record = final_record(best, test)
    assert record["step"] == 20 and record["best_epoch"] == 2 and "epoch" not in record
    assert record["test_accuracy"] == 0.7 and record["eval_accuracy"] == 0.8
    summary = {"task": "classify", "best_epoch": 2, "evaluation": best["metrics"], "exported": "out/model"}
    assert summary_line(summary) == "classify: best epoch 2 (accuracy 0.8000, macro_f1 0.7500) -> out/model"
    assert summary_line({**summary, "test": test, "registered": "m/1"}) == (
        "classify: best epoch 2 (accuracy 0.8000, macro_f1 0.7500; test accuracy 0.7000, macro_f1 0.6500) "
        "-> out/model; registered m/1"
    )
