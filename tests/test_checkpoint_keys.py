"""Key normalisation rules for checkpoints of every origin (pure functions over names)."""

from __future__ import annotations

import torch

from model.checkpoint import canonical_state_dict, normalize_keys

T = torch.zeros(1)


def test_bare_encoder_keys_gain_the_prefix_but_heads_do_not():
    state = normalize_keys(
        {"embeddings.word_embeddings.weight": T, "pooler.dense.bias": T, "cls.predictions.bias": T},
        expected=["bert.embeddings.word_embeddings.weight", "cls.predictions.bias"],
    )
    assert sorted(state) == [
        "bert.embeddings.word_embeddings.weight",
        "bert.pooler.dense.bias",
        "cls.predictions.bias",
    ]


def test_prefixed_keys_lose_the_prefix_for_a_bare_encoder():
    state = normalize_keys(
        {"bert.encoder.layer.0.output.dense.weight": T}, expected=["encoder.layer.0.output.dense.weight"]
    )
    assert list(state) == ["encoder.layer.0.output.dense.weight"]


def test_buffers_and_tensorflow_names_are_normalised():
    state = normalize_keys(
        {
            "bert.embeddings.position_ids": T,
            "bert.embeddings.LayerNorm.gamma": T,
            "bert.embeddings.LayerNorm.beta": T,
            "cls.predictions.decoder.bias": T,
        },
        expected=["bert.embeddings.LayerNorm.weight", "cls.predictions.bias"],
    )
    assert sorted(state) == [
        "bert.embeddings.LayerNorm.bias",
        "bert.embeddings.LayerNorm.weight",
        "cls.predictions.bias",
        "cls.predictions.decoder.bias",
    ]


def test_canonical_state_dict_drops_tied_aliases():
    state = {
        "cls.predictions.decoder.weight": T,
        "cls.predictions.decoder.bias": T,
        "cls.predictions.bias": T,
    }
    assert list(canonical_state_dict(state)) == ["cls.predictions.bias"]
