"""Config presets, validation and Hugging Face config.json I/O."""

from __future__ import annotations

import json

import pytest
import transformers

from model import BertConfig, ConfigError


@pytest.mark.parametrize(
    ("preset", "layers", "hidden", "heads", "ffn"),
    [
        ("tiny", 2, 128, 2, 512),
        ("mini", 4, 256, 4, 1024),
        ("base", 12, 768, 12, 3072),
        ("large", 24, 1024, 16, 4096),
    ],
)
def test_presets(preset, layers, hidden, heads, ffn):
    config = BertConfig.from_preset(preset)
    assert (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    ) == (
        layers,
        hidden,
        heads,
        ffn,
    )
    assert (config.vocab_size, config.max_position_embeddings, config.type_vocab_size) == (30522, 512, 2)


def test_preset_overrides_and_unknown_names():
    assert BertConfig.from_preset("tiny", vocab_size=8000).vocab_size == 8000
    with pytest.raises(
        ConfigError, match=r"unknown model preset 'huge'; choose one of \['base', 'large', 'mini', 'tiny'\]"
    ):
        BertConfig.from_preset("huge")
    with pytest.raises(ConfigError, match=r"unknown BERT config key\(s\) \['hiden_size'\]"):
        BertConfig.from_preset("tiny", hiden_size=64)


def test_heads_must_divide_hidden_size():
    with pytest.raises(ConfigError, match=r"hidden_size=768 is not divisible by num_attention_heads=10.*for example 8"):
        BertConfig(hidden_size=768, num_attention_heads=10)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
        ({"hidden_dropout_prob": 1.0}, r"hidden_dropout_prob must be in \[0, 1\)"),
        ({"pad_token_id": 30522}, r"pad_token_id=30522 is outside the vocabulary \(vocab_size=30522\)"),
        ({"hidden_act": "swish"}, "hidden_act='swish' is not supported"),
        ({"id2label": {0: "a", 2: "b"}}, "id2label must map the ids 0..N-1"),
    ],
)
def test_impossible_values_name_what_clashes(changes, message):
    with pytest.raises(ConfigError, match=message):
        BertConfig(**changes)


def test_hf_config_round_trip(tmp_path):
    ours = BertConfig.from_preset("mini", vocab_size=8000, id2label={0: "neg", 1: "pos", 2: "neutral"})
    ours.save_pretrained(tmp_path, architecture="BertForSequenceClassification")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert theirs.model_type == "bert"
    assert (theirs.hidden_size, theirs.num_hidden_layers, theirs.vocab_size) == (256, 4, 8000)
    assert theirs.id2label == {0: "neg", 1: "pos", 2: "neutral"} and theirs.num_labels == 3
    assert BertConfig.from_pretrained(tmp_path) == ours

    theirs.save_pretrained(tmp_path / "hf")
    assert BertConfig.from_pretrained(tmp_path / "hf") == ours


def test_hf_config_with_another_architecture_is_refused(tmp_path):
    values = transformers.BertConfig(position_embedding_type="relative_key").to_dict()
    with pytest.raises(ConfigError, match="position_embedding_type='relative_key'"):
        BertConfig.from_hf_dict(values)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ConfigError, match="model_type='roberta'"):
        BertConfig.from_pretrained(tmp_path)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        BertConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BertConfig.from_pretrained(tmp_path)
