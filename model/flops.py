"""Model FLOPs of BERT pretraining, for MFU.

Counted: the matrix multiplications the model needs (2 FLOPs per multiply-add), with the MLM
vocabulary projection at the masked positions only, since that is all pretraining needs; a
backward pass costs twice the forward. Layer norms, softmax, activations and the embedding
lookups are left out (under 1% for BERT-Base and larger). An implementation that projects every
position onto the vocabulary does more work than this count and gets no credit for it.
"""

from __future__ import annotations

from model.config import BertConfig

# Dense bf16 tensor-core peak, FLOP/s, by device name (vendor datasheets, without sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def encoder_forward_flops(config: BertConfig, seq_len: int) -> int:
    """Forward FLOPs of the encoder and pooler for one sequence of `seq_len` tokens."""
    h, ffn = config.hidden_size, config.intermediate_size
    projections = 2 * seq_len * (4 * h * h + 2 * h * ffn)  # Q, K, V, output; two FFN matrices
    attention = 2 * 2 * seq_len * seq_len * h  # QK^T and attention x V over all heads
    return config.num_hidden_layers * (projections + attention) + 2 * h * h  # + pooler on [CLS]


def pretraining_heads_forward_flops(config: BertConfig, masked_positions: int) -> int:
    """Forward FLOPs of the MLM head at `masked_positions` tokens and the NSP head."""
    h = config.hidden_size
    return 2 * masked_positions * (h * h + h * config.vocab_size) + 2 * h * 2


def pretraining_step_flops(config: BertConfig, seq_len: int, masked_positions: int) -> int:
    """Forward + backward FLOPs of one pretraining sequence."""
    forward = encoder_forward_flops(config, seq_len) + pretraining_heads_forward_flops(config, masked_positions)
    return 3 * forward


def peak_bf16_flops(device_name: str) -> float | None:
    """The datasheet peak of a GPU named like `torch.cuda.get_device_name()`, None when unknown."""
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)
