"""The BERT encoder: embeddings, bidirectional self-attention blocks and the [CLS] pooler.

Module and parameter names follow Hugging Face's `BertModel` one for one, so a state dict moves
between the two without renaming.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from model.config import BertConfig
from model.pretrained import PreTrainedMixin

AttentionMask = torch.Tensor | BlockMask | None  # a boolean SDPA mask (True: may attend), a FlexAttention one, or none


def activation(name: str):
    """The feed-forward activation named in the config (Hugging Face's names)."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported activation {name!r}")


def check_inputs(input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, config: BertConfig) -> None:
    """Raise a ValueError for inputs that would otherwise crash inside an embedding lookup."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, sequence), got {tuple(input_ids.shape)}")
    seq_len = input_ids.shape[1]
    if seq_len > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_position_embeddings={config.max_position_embeddings}; "
            f"truncate or window the inputs to at most {config.max_position_embeddings} tokens"
        )
    if token_type_ids is not None and token_type_ids.shape != input_ids.shape:
        raise ValueError(
            f"token_type_ids shape {tuple(token_type_ids.shape)} differs from input_ids shape {tuple(input_ids.shape)}"
        )
    if torch.compiler.is_compiling() or input_ids.numel() == 0:
        return  # value checks need a host sync, which would break a compiled graph
    # One device-to-host transfer for all four bounds: this runs at every step.
    bounds = [*torch.aminmax(input_ids)]
    if token_type_ids is not None:
        bounds += [*torch.aminmax(token_type_ids)]
    values = torch.stack(bounds).tolist()
    if values[0] < 0 or values[1] >= config.vocab_size:
        raise ValueError(
            f"token ids must lie in [0, {config.vocab_size}) (vocab_size), got ids from {values[0]} to {values[1]}; "
            f"was the data tokenized with a different vocabulary?"
        )
    if token_type_ids is not None and (values[2] < 0 or values[3] >= config.type_vocab_size):
        raise ValueError(
            f"token_type_ids must lie in [0, {config.type_vocab_size}) (type_vocab_size), got "
            f"{values[2]} to {values[3]}"
        )


class BertEmbeddings(nn.Module):
    """Token + learned absolute position + segment embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if position_ids is None:  # one sequence per row: 0, 1, 2, ...
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if token_type_ids is None:
            # All tokens in segment A: row 0 of the segment table, broadcast over the sequence.
            embeddings = embeddings + self.token_type_embeddings.weight[0]
        else:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention under a boolean mask (True: may attend), or over every key."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden: torch.Tensor, key_mask: AttentionMask) -> torch.Tensor:
        batch, seq_len, _ = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, seq_len, self.num_heads, self.head_size).transpose(1, 2)

        query, key, value = heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        dropout = self.dropout_p if self.training else 0.0
        if isinstance(key_mask, BlockMask):
            if dropout:
                raise ValueError("FlexAttention has no attention dropout; give a boolean mask when training with it")
            context = compiled_flex_attention(query, key, value, key_mask)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=dropout)
        return context.transpose(1, 2).reshape(batch, seq_len, -1)


class BertResidualOutput(nn.Module):
    """Projection, dropout, residual add and post-LayerNorm: the tail of both sub-blocks."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, key_mask: AttentionMask) -> torch.Tensor:
        return self.output(self.self(hidden, key_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, key_mask: AttentionMask) -> torch.Tensor:
        attended = self.attention(hidden, key_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        # Activation checkpointing: keep each layer's input only and recompute the layer in the backward pass
        # (about a third more compute for memory that no longer grows with the layers' activations).
        self.checkpoint_activations = False

    def forward(self, hidden: torch.Tensor, key_mask: AttentionMask) -> torch.Tensor:
        for layer in self.layer:
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                # the recomputation replays the dropout masks of the first pass (the RNG state is kept)
                hidden = torch.utils.checkpoint.checkpoint(layer, hidden, key_mask, use_reentrant=False)
            else:
                hidden = layer(hidden, key_mask)
        return hidden


class BertPooler(nn.Module):
    """Dense + tanh on the [CLS] hidden state: position 0 of each row, or each packed instance's [CLS]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, cls_positions: torch.Tensor | None = None) -> torch.Tensor:
        if cls_positions is None:
            return torch.tanh(self.dense(hidden[:, 0]))
        index = cls_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return torch.tanh(self.dense(torch.gather(hidden, 1, index)))  # (batch, instances, hidden)


def attention_key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, seq) 1/0 padding mask -> boolean (batch, 1, 1, seq) mask that SDPA broadcasts."""
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


@functools.cache
def _compiled_flex_attention():
    return torch.compile(flex_attention)


def compiled_flex_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_mask: BlockMask
) -> torch.Tensor:
    """FlexAttention under a block mask, compiled once per process (its eager form is a slow reference)."""
    return _compiled_flex_attention()(query, key, value, block_mask=block_mask)


def document_block_mask(sequence_ids: torch.Tensor) -> BlockMask:
    """The FlexAttention form of `packed_attention_mask`: blocks of 128 x 128 tokens that lie wholly between two
    instances are skipped, not computed and masked."""
    batch, length = sequence_ids.shape

    def same_instance(b, h, q, k):
        return sequence_ids[b, q] == sequence_ids[b, k]

    return create_block_mask(same_instance, batch, None, length, length, device=sequence_ids.device)


def packed_attention(sequence_ids: torch.Tensor, flex: bool) -> AttentionMask:
    """The attention mask of packed rows: FlexAttention's block mask where `flex` (it has no attention dropout),
    else SDPA's dense boolean one."""
    return document_block_mask(sequence_ids) if flex else packed_attention_mask(sequence_ids)


def packed_attention_mask(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(batch, seq) instance ids of packed rows (0: padding) -> boolean (batch, 1, seq, seq): a token attends
    only to the tokens of its own instance. Padding attends to padding, so that no query row is empty (an
    empty one would give NaN); nothing reads the padding's outputs."""
    return (sequence_ids[:, :, None] == sequence_ids[:, None, :]).unsqueeze(1)


class BertModel(PreTrainedMixin, nn.Module):
    """Embeddings, encoder and (optionally) pooler; returns (sequence_output, pooled_output)."""

    hf_architecture = "BertModel"
    initializable_prefixes = ("pooler.",)

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        cls_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Packed rows (pipeline/data/packing.py) come with `position_ids`, `sequence_ids` (which replace the
        padding mask) and `cls_positions`, and pool (batch, instances, hidden) instead of (batch, hidden)."""
        check_inputs(input_ids, token_type_ids, self.config)
        if sequence_ids is not None:
            # On a GPU FlexAttention skips the blocks between instances; it has no attention dropout, so only
            # where none is asked for.
            no_dropout = not self.training or self.config.attention_probs_dropout_prob == 0
            mask = packed_attention(sequence_ids, flex=sequence_ids.is_cuda and no_dropout)
        else:
            mask = attention_key_mask(attention_mask)
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids, position_ids), mask)
        pooled = self.pooler(hidden, cls_positions) if self.pooler is not None else None
        return hidden, pooled
