"""model/local_attention_init.py: sinusoidal positions and W_k = W_q make the first layer's attention local
from the first step, where BERT's initialisation spreads it evenly over the sequence."""

from __future__ import annotations

import math

import pytest
import torch

from model import BertConfig, BertForPreTraining
from model.local_attention_init import init_local_attention, mimetic_std, sinusoidal_positions


def test_the_sinusoid_table_has_unit_spread_and_similarity_that_falls_with_distance():
    table = sinusoidal_positions(128, 64)
    assert table.shape == (128, 64)
    assert table.std().item() == pytest.approx(1.0, abs=1e-6)
    scale = 1 / table[0, 1].item()  # row 0 is (sin 0, cos 0, ...) = (0, 1, 0, 1, ...) before scaling
    assert torch.allclose(table[0] * scale, torch.tensor([0.0, 1.0] * 32), atol=1e-6)
    assert table[5, 0].item() * scale == pytest.approx(math.sin(5.0), abs=1e-6)
    similarity = table[40] @ table.T
    assert similarity[40] > similarity[41] > similarity[42] > similarity[44]
    assert torch.allclose(similarity[39], similarity[41], atol=1e-4)  # depends on the distance only
    with pytest.raises(ValueError, match="even width"):
        sinusoidal_positions(8, 5)


def test_the_query_scale_gives_the_stated_self_score():
    assert mimetic_std(128, 64, 10.0) == pytest.approx(math.sqrt(10.0 / (128 * 8)))
    generator = torch.Generator().manual_seed(0)
    std = mimetic_std(768, 64, 10.0)
    weight = torch.randn(64, 768, generator=generator) * std
    tokens = torch.randn(2000, 768, generator=generator)  # unit variance, as after LayerNorm
    queries = tokens @ weight.T
    self_scores = (queries * queries).sum(-1) / math.sqrt(64)
    assert self_scores.mean().item() == pytest.approx(10.0, rel=0.05)


def neighbour_attention(model: BertForPreTraining, input_ids: torch.Tensor) -> float:
    """The first layer's mean attention from a position to each of its two direct neighbours."""
    with torch.no_grad():
        hidden = model.bert.embeddings(input_ids)
        attention = model.bert.encoder.layer[0].attention.self
        batch, length, _ = hidden.shape
        heads = attention.num_heads

        def split(x):
            return x.view(batch, length, heads, attention.head_size).transpose(1, 2)

        scores = split(attention.query(hidden)) @ split(attention.key(hidden)).transpose(-1, -2)
        probabilities = (scores / math.sqrt(attention.head_size)).softmax(-1)
        left = probabilities.diagonal(offset=-1, dim1=-2, dim2=-1).mean().item()
        right = probabilities.diagonal(offset=1, dim1=-2, dim2=-1).mean().item()
    return (left + right) / 2


def test_attention_starts_local_and_the_architecture_is_unchanged():
    torch.manual_seed(0)
    config = BertConfig.from_preset("tiny", vocab_size=1000)
    bert_init = BertForPreTraining(config)
    local = BertForPreTraining(config)
    local.load_state_dict(bert_init.state_dict())
    init_local_attention(local.bert)

    assert local.state_dict().keys() == bert_init.state_dict().keys()
    for layer in local.bert.encoder.layer:
        assert torch.equal(layer.attention.self.key.weight, layer.attention.self.query.weight)
        assert layer.attention.self.query.weight.std().item() == pytest.approx(mimetic_std(128, 64, 10.0), rel=0.02)
    positions = local.bert.embeddings.position_embeddings.weight
    assert positions.std().item() == pytest.approx(3 * config.initializer_range, rel=1e-4)

    input_ids = torch.randint(5, 1000, (8, 128), generator=torch.Generator().manual_seed(1))
    uniform = 1 / 128
    assert neighbour_attention(bert_init, input_ids) == pytest.approx(uniform, rel=0.1)
    assert neighbour_attention(local, input_ids) > 5 * uniform  # 0.060 measured: 7.7x


def test_the_last_layers_global_heads_keep_berts_start_and_every_other_head_starts_local():
    torch.manual_seed(0)
    config = BertConfig.from_preset("tiny", vocab_size=1000)  # 2 layers of 2 heads of 64
    model = BertForPreTraining(config)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    init_local_attention(model.bert, global_heads=1)
    for index, layer in enumerate(model.bert.encoder.layer):
        query, key = layer.attention.self.query.weight, layer.attention.self.key.weight
        prefix = f"bert.encoder.layer.{index}.attention.self"
        assert torch.equal(query[:64], key[:64])  # the first head: local in every layer
        if index == 0:
            assert torch.equal(query[64:], key[64:])  # below the last layer every head is local
        else:
            assert torch.equal(query[64:], before[f"{prefix}.query.weight"][64:])  # the global head: untouched
            assert torch.equal(key[64:], before[f"{prefix}.key.weight"][64:])

    input_ids = torch.randint(5, 1000, (8, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = model.bert.embeddings(input_ids)  # the last layer's rows, on the embeddings' states
        attention = model.bert.encoder.layer[-1].attention.self
        split = lambda x: x.view(8, 128, 2, 64).transpose(1, 2)  # noqa: E731
        scores = split(attention.query(hidden)) @ split(attention.key(hidden)).transpose(-1, -2)
        rows = (scores / 8.0).softmax(-1)
    neighbour = rows.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, 2))  # per head
    assert neighbour[0] > 5 / 128 and neighbour[1] == pytest.approx(1 / 128, rel=0.1)
    first_row = rows[:, :, 0, :]  # what [CLS] (position 0) attends to
    assert first_row[:, 1, 64:].sum(-1).mean() > 0.45  # the global head: half its weight on the second half


def test_every_head_of_the_last_layer_may_start_global_and_no_more():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=1000))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    init_local_attention(model.bert, global_heads=2)
    first, last = model.bert.encoder.layer
    assert torch.equal(first.attention.self.query.weight, first.attention.self.key.weight)
    for name in ("query", "key"):
        key = f"bert.encoder.layer.1.attention.self.{name}.weight"
        assert torch.equal(getattr(last.attention.self, name).weight, before[key])
    with pytest.raises(ValueError, match=r"global_heads must be in 0\.\.2"):
        init_local_attention(model.bert, global_heads=3)
