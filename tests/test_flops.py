"""The FLOP count behind MFU."""

from __future__ import annotations

import pytest

from model import BertConfig, BertForPreTraining
from model.flops import encoder_forward_flops, pretraining_heads_forward_flops, pretraining_step_flops


def test_exact_count_on_a_small_config():
    config = BertConfig(vocab_size=10, hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    # seq 2: projections 2*2*(4*16 + 2*4*8) = 512, attention 2*2*2*2*4 = 64, pooler 2*16 = 32
    assert encoder_forward_flops(config, seq_len=2) == 608
    # one masked token: 2*(16 + 40) = 112, NSP 2*4*2 = 16
    assert pretraining_heads_forward_flops(config, masked_positions=1) == 128
    assert pretraining_step_flops(config, seq_len=2, masked_positions=1) == 3 * (608 + 128)


def test_large_agrees_with_the_six_n_rule():
    """Without attention and heads, 6 x (encoder weights) x tokens is the textbook estimate."""
    import torch

    config = BertConfig.from_preset("large")
    with torch.device("meta"):
        model = BertForPreTraining(config)
    weights = sum(p.numel() for n, p in model.bert.encoder.named_parameters() if n.endswith("weight") and p.dim() == 2)
    tokens = 128
    estimate = 6 * weights * tokens
    counted = 3 * encoder_forward_flops(config, tokens)
    assert counted == pytest.approx(estimate, rel=0.03)  # attention adds ~2% at seq 128
