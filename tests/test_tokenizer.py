"""WordPiece training and loading, tokenizer facts, the masking rule of a vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocessing.tokenizer import (
    SPECIAL_TOKENS,
    TokenizerError,
    load_tokenizer,
    masking_rule,
    tokenizer_files,
    tokenizer_info,
    train_wordpiece,
)

CORPUS = Path(__file__).parent / "data" / "pydocs" / "corpus.txt"


@pytest.fixture(scope="module")
def trained():
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return train_wordpiece(lines, vocab_size=2000, lowercase=True)


def write(tokenizer, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in tokenizer_files(tokenizer).items():
        (directory / name).write_bytes(data)
    return directory


def test_trained_vocabulary(trained):
    info = tokenizer_info(trained)
    assert info.vocab_size == 2000
    assert info.special_token_ids == {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    assert info.lowercase is True
    encoding = trained.encode("Python modules", "Read the documentation")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens.count("[SEP]") == 2
    assert encoding.type_ids[-1] == 1 and encoding.type_ids[0] == 0
    assert any(t.startswith("##") for t in trained.get_vocab())


def test_training_gives_the_same_vocabulary_every_time(trained):
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    again = [tokenizer_files(train_wordpiece(iter(lines), vocab_size=2000, lowercase=True)) for _ in range(3)]
    assert again[0] == again[1] == again[2] == tokenizer_files(trained)


def test_the_vocabulary_holds_every_character_and_its_continuation(trained):
    vocab = trained.get_vocab()
    assert {"a", "##a", "z", "##z", "0", "##0", "_", ".", "("} <= set(vocab)
    assert not {"##.", "##(", "##_"} & set(vocab)  # punctuation stands alone, never continues a word
    assert sorted(token.content for token in trained.get_added_tokens_decoder().values()) == sorted(SPECIAL_TOKENS)
    assert trained.decode(trained.encode("zzz").ids) == "zzz"


def test_tokenizer_json_and_vocab_txt_load_the_same(trained, tmp_path):
    directory = write(trained, tmp_path / "full")
    from_json = load_tokenizer(directory)
    (tmp_path / "vocab_only").mkdir()
    (tmp_path / "vocab_only" / "vocab.txt").write_bytes((directory / "vocab.txt").read_bytes())
    from_vocab = load_tokenizer(tmp_path / "vocab_only")
    text = "The Zen of Python: explicit is better than implicit."
    ids = trained.encode(text, add_special_tokens=False).ids
    assert from_json.encode(text, add_special_tokens=False).ids == ids
    assert from_vocab.encode(text, add_special_tokens=False).ids == ids
    assert from_vocab.encode(text).ids == from_json.encode(text).ids  # the same [CLS] ... [SEP] template
    assert tokenizer_info(from_json) == tokenizer_info(from_vocab) == tokenizer_info(trained)


def test_cased_vocab_from_tokenizer_config(trained, tmp_path):
    directory = write(trained, tmp_path / "v")
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assert tokenizer_info(load_tokenizer(directory)).lowercase is False


def test_missing_special_token_is_named(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"]) + "\n")
    with pytest.raises(TokenizerError, match=r"lacks the special token\(s\) \['\[MASK\]'\]"):
        load_tokenizer(tmp_path)


def test_a_truncated_tokenizer_file_is_named(trained, tmp_path):
    directory = write(trained, tmp_path / "v")
    whole = (directory / "tokenizer.json").read_bytes()
    (directory / "tokenizer.json").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TokenizerError) as error:
        load_tokenizer(directory)
    message = str(error.value)
    assert message.startswith(f"{directory / 'tokenizer.json'} is not a readable tokenizer file (")
    assert "EOF while parsing" in message and "truncated" in message


def test_empty_directory_says_what_to_do(tmp_path):
    with pytest.raises(TokenizerError, match="bertpipe tokenizer train"):
        load_tokenizer(tmp_path)


def test_masking_rule_of_a_vocabulary(tmp_path):
    words = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]", "the", "##s", "cat"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    rule = masking_rule(load_tokenizer(tmp_path), 0.15, 20, whole_word=True)
    assert rule.mask_id == 5
    assert [words[i] for i in rule.replacements] == ["the", "##s", "cat"]
    assert [words[i] for i in range(len(words)) if rule.never_masked[i]] == ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
    assert [words[i] for i in range(len(words)) if rule.continues_word[i]] == ["##s"]
