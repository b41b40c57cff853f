"""Packed rows: the bin packing, the exact layout, and a model that gives every packed instance exactly what
it gives the same instance alone (logits, losses, gradients), with no attention across instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import CLS, MASK, PAD, SEP
from helpers import pair_sample as sample

from model import IGNORE_INDEX, BertConfig, BertForPreTraining
from model.encoder import packed_attention
from pipeline.data.collate import collate
from pipeline.data.packing import collate_packed, first_fit_decreasing
from preprocessing.shards import Sample


def random_samples(count: int, longest: int, vocab: int, seed: int) -> list[Sample]:
    """Instances of 6..longest tokens with 1-3 masked positions each, NSP labels of both kinds."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        size = int(rng.integers(6, longest + 1))
        a_len = int(rng.integers(1, size - 3))
        a = rng.integers(5, vocab, a_len).tolist()
        b = rng.integers(5, vocab, size - 3 - a_len).tolist()
        positions = sorted(rng.choice(np.arange(1, size - 1), size=int(rng.integers(1, 4)), replace=False).tolist())
        positions = [p for p in positions if p != a_len + 1] or [1]  # never the middle [SEP]
        samples.append(sample(a, b, positions, label=i % 2))
    return samples


def test_first_fit_decreasing_puts_the_longest_first_and_fills_the_first_row_with_room():
    assert first_fit_decreasing([5, 9, 3, 7, 2], capacity=10, max_per_row=4) == [[1], [3, 2], [0, 4]]
    assert first_fit_decreasing([2, 2, 2, 2], capacity=10, max_per_row=3) == [[0, 1, 2], [3]]
    assert first_fit_decreasing([10, 10], capacity=10, max_per_row=2) == [[0], [1]]
    with pytest.raises(ValueError, match="an instance of 11 tokens does not fit a row of 10"):
        first_fit_decreasing([11], capacity=10, max_per_row=2)


def test_collate_packed_exact_layout():
    first = sample([10, 11, 12], [20, 21], positions=[2, 5], label=1)  # 8 tokens
    second = sample([30], [40, 41, 42, 43, 44], positions=[7])  # 9 tokens
    third = sample([50], [60], positions=[1])  # 5 tokens
    batch = collate_packed([first, second, third], pad_id=PAD, max_predictions=3, capacity=16)
    # FFD: second (9) opens row 0, first (8) does not fit beside it and opens row 1, third (5) joins row 0
    assert batch["input_ids"].tolist() == [
        [CLS, 30, SEP, 40, 41, 42, 43, MASK, SEP, CLS, MASK, SEP, 60, SEP, PAD, PAD],
        [CLS, 10, MASK, 12, SEP, MASK, 21, SEP] + [PAD] * 8,
    ]
    assert batch["position_ids"].tolist() == [[*range(9), *range(5), 0, 0], [*range(8)] + [0] * 8]
    assert batch["sequence_ids"].tolist() == [[1] * 9 + [2] * 5 + [0, 0], [1] * 8 + [0] * 8]
    assert batch["token_type_ids"].tolist() == [
        [0] * 3 + [1] * 6 + [0] * 3 + [1] * 2 + [0, 0],
        [0] * 5 + [1] * 3 + [0] * 8,
    ]
    assert batch["attention_mask"].sum(dim=1).tolist() == [14, 8]
    assert batch["masked_lm_positions"].tolist() == [[7, 10], [2, 5]]
    assert batch["masked_lm_labels"].tolist() == [[44, 50], [11, 20]]
    assert batch["next_sentence_positions"].tolist() == [[0, 9], [0, 0]]
    assert batch["next_sentence_label"].tolist() == [[0, 0], [1, IGNORE_INDEX]]


@pytest.fixture(scope="module")
def model() -> BertForPreTraining:
    torch.manual_seed(0)
    config = BertConfig.from_preset("tiny", vocab_size=100, max_position_embeddings=64)
    return BertForPreTraining(config).eval()


def test_a_packed_batch_gives_each_instance_the_outputs_and_losses_it_gets_alone(model):
    samples = random_samples(24, longest=40, vocab=100, seed=7)
    padded = collate(samples, PAD, max_predictions=3)
    packed = collate_packed(samples, PAD, max_predictions=3, capacity=64)
    assert packed["input_ids"].shape[0] < len(samples) // 2  # it did pack
    with torch.no_grad():
        alone, together = model(**padded), model(**packed)
    for name in ("loss", "mlm_loss", "nsp_loss"):
        assert torch.allclose(getattr(alone, name), getattr(together, name), atol=1e-5), name
    assert alone.mlm_count == together.mlm_count == sum(len(s.masked_lm_positions) for s in samples)
    assert alone.nsp_count == together.nsp_count == len(samples)
    # instance by instance: where each sample sits in the packed rows
    rows = first_fit_decreasing([len(s.input_ids) for s in samples], 64, 8)
    for r, row in enumerate(rows):
        slot = 0
        for k, index in enumerate(row):
            count = len(samples[index].masked_lm_positions)
            expected = alone.mlm_logits[index, :count]
            assert torch.allclose(together.mlm_logits[r, slot : slot + count], expected, atol=1e-5)
            assert torch.allclose(together.nsp_logits[r, k], alone.nsp_logits[index], atol=1e-5)
            slot += count


def test_packing_gives_the_gradients_of_the_unpacked_batch(model):
    samples = random_samples(12, longest=30, vocab=100, seed=3)
    gradients = []
    for batch in (collate(samples, PAD, 3), collate_packed(samples, PAD, 3, capacity=64)):
        model.zero_grad()
        model(**batch).loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    model.zero_grad()
    assert torch.allclose(gradients[0], gradients[1], atol=1e-5)


def test_no_attention_crosses_instances(model):
    samples = random_samples(6, longest=20, vocab=100, seed=11)
    packed = collate_packed(samples, PAD, 3, capacity=64)
    changed = {k: v.clone() for k, v in packed.items()}
    second = changed["sequence_ids"][0] == 2  # every token of the first row's second instance
    changed["input_ids"][0, second] = torch.randint(5, 100, (int(second.sum()),))
    with torch.no_grad():
        hidden, _ = model.bert(
            packed["input_ids"], packed["token_type_ids"], None, packed["position_ids"], packed["sequence_ids"]
        )
        perturbed, _ = model.bert(
            changed["input_ids"], changed["token_type_ids"], None, changed["position_ids"], changed["sequence_ids"]
        )
    others = packed["sequence_ids"][0] != 2
    assert torch.equal(hidden[0, others], perturbed[0, others])
    assert not torch.allclose(hidden[0, second], perturbed[0, second])
    assert torch.equal(hidden[1:], perturbed[1:])


@pytest.mark.slow
def test_flex_attention_blocks_give_what_the_dense_packed_mask_gives(model):
    """The GPU path (FlexAttention's document mask), run here on CPU: the same hidden states as SDPA's mask."""
    samples = random_samples(16, longest=60, vocab=100, seed=5)
    packed = collate_packed(samples, PAD, 3, capacity=64)
    embedded = model.bert.embeddings(packed["input_ids"], packed["token_type_ids"], packed["position_ids"])
    with torch.no_grad():
        dense = model.bert.encoder(embedded, packed_attention(packed["sequence_ids"], flex=False))
        flex = model.bert.encoder(embedded, packed_attention(packed["sequence_ids"], flex=True))
    real = packed["sequence_ids"] > 0
    assert torch.allclose(dense[real], flex[real], atol=1e-5)
    attention = model.bert.encoder.layer[0].attention.self
    attention.train()
    try:
        with pytest.raises(ValueError, match="FlexAttention has no attention dropout"):
            attention(embedded, packed_attention(packed["sequence_ids"], flex=True))
    finally:
        attention.eval()


def test_activation_checkpointing_gives_the_same_loss_and_gradients_with_dropout_on():
    torch.manual_seed(1)
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=100, max_position_embeddings=64)).train()
    batch = collate_packed(random_samples(8, longest=30, vocab=100, seed=2), PAD, 3, capacity=64)
    results: list = []
    saved_bytes: list[int] = []
    for checkpointing in (False, True):
        model.bert.encoder.checkpoint_activations = checkpointing
        model.zero_grad()
        torch.manual_seed(9)  # the same dropout masks in both passes
        saved_bytes.append(0)

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            saved_bytes[-1] += tensor.nbytes
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    model.bert.encoder.checkpoint_activations = False
    assert torch.equal(results[0][0], results[1][0])
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
    assert saved_bytes[1] < saved_bytes[0] / 2, saved_bytes  # what the forward pass keeps for the backward
