"""An initialisation under which attention starts local, so that pretraining does not sit on the bag-of-words
plateau; the architecture (and so the Hugging Face export) is unchanged.

With BERT's initialisation every attention row starts uniform: a `[MASK]` position receives 1/length of each
neighbour's value, so the value path gets almost no bigram signal, and without that signal the attention
scores get almost no gradient towards the neighbours. The model learns the document's bag of words instead
and stays there for thousands of steps. Two changes break that symmetry from the first step:

- the position embeddings start as sinusoids (Vaswani et al. 2017), whose dot products fall with distance,
  at an amplitude that makes position a large part of each token's normalised embedding;
- each layer's key projection starts equal to its query projection (mimetic initialisation, Trockman & Kolter
  2023), so a token's score for another is the similarity of the two, which position makes local.

The heads of the last layer can keep BERT's start (the trainer's default leaves all of them): next-sentence
prediction and classifiers read the [CLS] position, and a local [CLS] sees only its first neighbours, not
the pair's topic; the layers below keep the local start that breaks the plateau.
"""

from __future__ import annotations

import math

import torch

from model.encoder import BertModel

# Position embeddings at this multiple of `initializer_range` (the word embeddings' standard deviation).
POSITION_SCALE = 3.0
# A token's attention score for itself at initialisation (for a unit-variance hidden state): measured on the
# demo's corpus, 10 puts about 0.1 of each row on each direct neighbour in the first layer.
SELF_SCORE = 10.0


def sinusoidal_positions(num_positions: int, width: int) -> torch.Tensor:
    """The Transformer's sinusoid table, `num_positions` x `width`, scaled to a standard deviation of 1."""
    if width % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {width}")
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(0, width, 2, dtype=torch.float64) / width)
    table = torch.zeros(num_positions, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies)
    return (table / table.std()).float()


def mimetic_std(hidden_size: int, head_size: int, self_score: float) -> float:
    """The standard deviation of W_q (= W_k) for which a unit-variance token scores `self_score` on itself:
    q.q / sqrt(head_size) = head_size * std^2 * hidden_size / sqrt(head_size)."""
    return math.sqrt(self_score / (hidden_size * math.sqrt(head_size)))


@torch.no_grad()
def init_local_attention(
    bert: BertModel, position_scale: float = POSITION_SCALE, self_score: float = SELF_SCORE, global_heads: int = 0
) -> None:
    """Re-initialise `bert`'s position embeddings and query/key projections as the module docstring says. The
    last `global_heads` heads of the last layer keep BERT's initialisation: near-uniform rows, through which
    [CLS] (read by next-sentence prediction and by classifiers) sees the whole sequence from the first step."""
    config = bert.config
    if not 0 <= global_heads <= config.num_attention_heads:
        raise ValueError(f"global_heads must be in 0..{config.num_attention_heads}, got {global_heads}")
    table = bert.embeddings.position_embeddings.weight
    table.copy_(sinusoidal_positions(*table.shape) * position_scale * config.initializer_range)
    std = mimetic_std(config.hidden_size, config.head_size, self_score)
    last = len(bert.encoder.layer) - 1
    for index, layer in enumerate(bert.encoder.layer):
        local_heads = config.num_attention_heads - (global_heads if index == last else 0)
        local_rows = local_heads * config.head_size  # heads are row blocks of W_q and W_k
        attention = layer.attention.self
        attention.query.weight[:local_rows].normal_(0.0, std)
        attention.key.weight[:local_rows].copy_(attention.query.weight[:local_rows])
