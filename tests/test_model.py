"""Behaviour of the encoder and the model classes."""

from __future__ import annotations

import pytest
import torch
import transformers
from helpers import random_batch

from model import (
    PRESETS,
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)


def tiny(**changes) -> BertConfig:
    return BertConfig.from_preset(
        "tiny",
        vocab_size=400,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **changes,
    )


def test_attention_is_bidirectional():
    """Changing the last token changes the first position's output: no causal mask."""
    model = BertModel(tiny()).eval()
    inputs = random_batch(400, batch=1, seq_len=10)
    with torch.no_grad():
        before, _ = model(**inputs)
        inputs["input_ids"][0, -1] = (inputs["input_ids"][0, -1] % 399) + 1
        after, _ = model(**inputs)
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-4


def test_padding_is_invisible_to_real_tokens():
    model = BertModel(tiny()).eval()
    inputs = random_batch(400, batch=2, seq_len=12, pad_lengths=[12, 7])
    with torch.no_grad():
        padded, _ = model(**inputs)
        alone, _ = model(**{k: v[1:, :7] for k, v in inputs.items()})
        inputs["input_ids"][1, 7:] = 123  # garbage behind the mask
        garbage, _ = model(**inputs)
    assert (padded[1, :7] - alone[0]).abs().max().item() <= 1e-5
    assert (padded[1, :7] - garbage[1, :7]).abs().max().item() <= 1e-6


def test_too_long_sequence_is_a_clear_error():
    model = BertModel(tiny())
    with pytest.raises(ValueError, match=r"sequence length 33 exceeds max_position_embeddings=32"):
        model(torch.ones(1, 33, dtype=torch.long))


@pytest.mark.parametrize("bad_id", [400, 10_000, -1])
def test_token_id_outside_vocab_is_a_clear_error(bad_id):
    model = BertModel(tiny())
    ids = torch.ones(2, 5, dtype=torch.long)
    ids[1, 3] = bad_id
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 400\)"):
        model(ids)


def test_segment_id_outside_type_vocab_is_a_clear_error():
    model = BertModel(tiny())
    ids = torch.ones(1, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, 2\)"):
        model(ids, token_type_ids=torch.full_like(ids, 2))


def test_initialisation_follows_bert():
    config = BertConfig.from_preset("mini")
    model = BertForPreTraining(config)
    embedding = model.bert.embeddings.word_embeddings.weight
    assert embedding[config.pad_token_id].abs().sum().item() == 0.0
    assert embedding.std().item() == pytest.approx(config.initializer_range, rel=0.02)
    dense = model.bert.encoder.layer[0].intermediate.dense
    assert dense.weight.std().item() == pytest.approx(config.initializer_range, rel=0.02)
    assert dense.bias.abs().sum().item() == 0.0
    assert torch.equal(model.bert.encoder.layer[0].output.LayerNorm.weight, torch.ones(config.hidden_size))
    assert model.cls.predictions.bias.abs().sum().item() == 0.0


def test_dropout_only_in_training():
    model = BertForSequenceClassification(BertConfig.from_preset("tiny", vocab_size=400))
    inputs = random_batch(400, batch=2, seq_len=8)
    model.train()
    assert not torch.equal(model(**inputs).logits, model(**inputs).logits)
    model.eval()
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)


def test_task_heads_shapes_and_losses():
    config = tiny(id2label={0: "O", 1: "B-X", 2: "I-X"})
    inputs = random_batch(400, batch=2, seq_len=8)
    classification = BertForSequenceClassification(config)(**inputs, labels=torch.tensor([2, 0]))
    assert classification.logits.shape == (2, 3) and classification.count.item() == 2
    tags = torch.tensor([[-100, 0, 1, 2, 0, 0, 1, -100], [-100] * 8])
    tokens = BertForTokenClassification(config)(**inputs, labels=tags)
    assert tokens.logits.shape == (2, 8, 3) and tokens.count.item() == 6
    qa = BertForQuestionAnswering(config)(
        **inputs, start_positions=torch.tensor([1, 50]), end_positions=torch.tensor([3, 50])
    )
    assert qa.start_logits.shape == qa.end_logits.shape == (2, 8)
    # The second answer lies outside the window: only the first counts.
    expected = (
        torch.nn.functional.cross_entropy(qa.start_logits[:1], torch.tensor([1]))
        + torch.nn.functional.cross_entropy(qa.end_logits[:1], torch.tensor([3]))
    ) / 2
    assert qa.loss.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_count_equals_transformers(preset):
    config = BertConfig.from_preset(preset)
    with torch.device("meta"):
        ours = BertForPreTraining(config)
        theirs = transformers.BertForPreTraining(transformers.BertConfig(**config.to_hf_dict()))
    ours_count, theirs_count = ours.num_parameters(), theirs.num_parameters()
    assert abs(ours_count - theirs_count) / theirs_count <= 1e-3
    assert ours_count == theirs_count
    if preset == "large":
        assert 335_000_000 < ours_count < 337_000_000  # BERT-Large's published ~336M (340M with rounding)


def test_segment_ids_of_another_shape_are_a_clear_error():
    model = BertModel(tiny())
    with pytest.raises(ValueError, match=r"token_type_ids shape \(1, 4\) differs from input_ids shape \(1, 5\)"):
        model(torch.ones(1, 5, dtype=torch.long), token_type_ids=torch.zeros(1, 4, dtype=torch.long))
