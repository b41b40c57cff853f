"""The synthetic attention task: its batches, and that the model and an AdamW loop learn it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import BertConfig, BertForPreTraining
from pipeline.training.context_probe import copy_offset_batch

MASK = 4
FIRST = 5


def test_each_mask_hides_the_token_offset_positions_to_its_left():
    batch = copy_offset_batch(
        np.random.default_rng(0), batch=3, length=12, first_token=FIRST, vocab_size=50, offset=2, mask_id=MASK
    )
    positions = batch["masked_lm_positions"]
    assert positions[0].tolist() == [2, 3, 6, 7, 10, 11]  # odd blocks of 2
    assert (positions == positions[0]).all()
    inputs, labels = batch["input_ids"], batch["masked_lm_labels"]
    assert (torch.gather(inputs, 1, positions) == MASK).all()
    assert torch.equal(labels, torch.gather(inputs, 1, positions - 2))  # the sources are never masked
    unmasked = inputs[inputs != MASK]
    assert unmasked.min() >= FIRST and unmasked.max() < 50
    assert batch["attention_mask"].all() and not batch["token_type_ids"].any()


def test_an_offset_that_leaves_no_room_is_refused():
    with pytest.raises(ValueError, match="offset must be in"):
        copy_offset_batch(np.random.default_rng(0), 1, 8, FIRST, 50, 5, MASK)


def test_the_model_learns_to_copy_through_attention():
    """Context-free guessing scores 1/59 here; the copy can only be found by attending `offset` to the left."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab, steps = 64, 400
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=vocab, max_position_embeddings=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    accuracy = []
    for step in range(steps):
        batch = copy_offset_batch(rng, 32, 32, FIRST, vocab, 3, MASK)
        batch.pop("next_sentence_label")
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 20)
        out = model(**batch)
        optimizer.zero_grad()
        out.mlm_loss.backward()
        optimizer.step()
        accuracy.append((out.mlm_correct / out.mlm_count).item())
    assert max(accuracy[:20]) < 0.1
    assert np.mean(accuracy[-20:]) > 0.95, accuracy[::20]
