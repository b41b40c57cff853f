"""The MLM/NSP heads and the pure loss/accuracy functions."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from helpers import perturb_parameters, random_batch

from model import IGNORE_INDEX, BertConfig, BertForPreTraining, cross_entropy_and_counts, gather_positions


def test_gather_positions_picks_rows_per_sequence():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    picked = gather_positions(hidden, torch.tensor([[3, 0], [1, 1]]))
    assert picked.tolist() == [[[9, 10, 11], [0, 1, 2]], [[15, 16, 17], [15, 16, 17]]]


def test_gather_positions_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(batch=2, slots\)"):
        gather_positions(torch.zeros(2, 4, 3), torch.zeros(3, dtype=torch.long))


def test_cross_entropy_and_counts_exact_values():
    # Row 0: uniform over 2 classes -> loss ln 2, argmax 0 == label 0 (correct).
    # Row 1: logits (0, ln 3) -> p(label 0) = 1/4 -> loss ln 4, argmax 1 != 0 (wrong).
    # Row 2: ignored.
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [5.0, -5.0]])
    result = cross_entropy_and_counts(logits, torch.tensor([0, 0, IGNORE_INDEX]))
    assert result.loss.item() == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)
    assert result.correct.item() == 1
    assert result.count.item() == 2


def test_cross_entropy_with_no_labels_is_zero_not_nan():
    result = cross_entropy_and_counts(torch.randn(3, 5), torch.full((3,), IGNORE_INDEX))
    assert result.loss.item() == 0.0 and result.count.item() == 0


def masked_batch(config: BertConfig):
    inputs = random_batch(config.vocab_size, batch=4, seq_len=32, pad_lengths=[32, 30, 20, 11])
    lengths = inputs["attention_mask"].sum(dim=1)
    generator = torch.Generator().manual_seed(3)
    slots = 5
    positions = torch.zeros(4, slots, dtype=torch.long)
    labels = torch.full((4, slots), IGNORE_INDEX)
    for row, length in enumerate(lengths.tolist()):
        count = 2 + row  # 2..5 masked tokens: padding slots in every row but the last
        chosen = 1 + torch.randperm(length - 2, generator=generator)[:count]
        positions[row, :count] = chosen
        labels[row, :count] = torch.randint(1, config.vocab_size, (count,), generator=generator)
    dense_labels = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
    for row in range(4):
        keep = labels[row] != IGNORE_INDEX
        dense_labels[row, positions[row][keep]] = labels[row][keep]
    return inputs, positions, labels, dense_labels


def test_sparse_mlm_head_equals_dense_head_at_masked_positions():
    config = BertConfig.from_preset("tiny", vocab_size=500, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config).eval()
    perturb_parameters(model)
    inputs, positions, labels, dense_labels = masked_batch(config)
    nsp_label = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        sparse = model(**inputs, masked_lm_positions=positions, masked_lm_labels=labels, next_sentence_label=nsp_label)
        dense = model(**inputs, masked_lm_labels=dense_labels, next_sentence_label=nsp_label)
    assert sparse.mlm_logits.shape == (4, 5, 500)
    assert dense.mlm_logits.shape == (4, 32, 500)
    gathered = gather_positions(dense.mlm_logits, positions)
    keep = labels != IGNORE_INDEX
    assert (sparse.mlm_logits[keep] - gathered[keep]).abs().max().item() <= 1e-5
    assert sparse.mlm_loss.item() == pytest.approx(dense.mlm_loss.item(), abs=1e-5)
    assert sparse.mlm_count.item() == dense.mlm_count.item() == 2 + 3 + 4 + 5
    assert sparse.mlm_correct.item() == dense.mlm_correct.item()
    assert sparse.loss.item() == pytest.approx(sparse.mlm_loss.item() + sparse.nsp_loss.item(), abs=1e-6)
    assert sparse.nsp_count.item() == 4


def test_losses_match_transformers(tmp_path):
    config = BertConfig.from_preset("tiny", vocab_size=500)
    ours = BertForPreTraining(config).eval()
    perturb_parameters(ours)
    ours.tie_weights()
    ours.save_pretrained(tmp_path)
    theirs = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    inputs, positions, labels, dense_labels = masked_batch(config)
    nsp_label = torch.tensor([1, 0, 1, 1])
    with torch.no_grad():
        sparse = ours(**inputs, masked_lm_positions=positions, masked_lm_labels=labels, next_sentence_label=nsp_label)
        reference = theirs(**inputs, labels=dense_labels, next_sentence_label=nsp_label)
    assert sparse.loss.item() == pytest.approx(reference.loss.item(), abs=1e-5)
    keep = labels != IGNORE_INDEX
    reference_at_masks = gather_positions(reference.prediction_logits, positions)
    assert (sparse.mlm_logits[keep] - reference_at_masks[keep]).abs().max().item() <= 1e-5


def test_gradients_reach_the_tied_embedding_from_both_uses():
    config = BertConfig.from_preset("tiny", vocab_size=300)
    model = BertForPreTraining(config)
    inputs, positions, labels, _ = masked_batch(config)
    model(**inputs, masked_lm_positions=positions, masked_lm_labels=labels).loss.backward()
    grad = model.bert.embeddings.word_embeddings.weight.grad
    unseen_rows = torch.ones(300, dtype=torch.bool)
    unseen_rows[inputs["input_ids"].unique()] = False
    # Tokens absent from the input still get a gradient through the tied decoder.
    assert grad[unseen_rows].abs().sum() > 0
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias


def test_the_output_bias_can_start_at_the_targets_log_prior():
    config = BertConfig.from_preset("tiny", vocab_size=6)
    model = BertForPreTraining(config)
    prior = torch.log(torch.tensor([0.0, 0.0, 0.5, 0.25, 0.125, 0.125]))
    model.cls.predictions.init_bias_to_prior(prior)
    bias = model.cls.predictions.bias
    assert model.cls.predictions.decoder.bias is bias  # still shared with the decoder
    # the finite part keeps its differences and is centred; ids without mass start log(6) below the rarest
    centre = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125])).mean()
    floor = math.log(0.125) - math.log(6)
    expected = torch.tensor([floor, floor, math.log(0.5), math.log(0.25), math.log(0.125), math.log(0.125)])
    assert torch.allclose(bias, expected - centre, atol=1e-6)
    # with the decoder's weights at zero the model's guess at any position is the prior, up to those ids
    with torch.no_grad():
        model.cls.predictions.decoder.weight.zero_()
    guess = model.cls.predictions(torch.randn(1, 3, config.hidden_size)).softmax(-1)[0, 1]
    assert torch.allclose(guess[2:] / guess[2:].sum(), prior.exp()[2:], atol=1e-6)
    assert guess[:2].sum() < guess[5]


def test_a_prior_of_the_wrong_size_or_without_mass_is_refused():
    head = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=6)).cls.predictions
    with pytest.raises(ValueError, match="shape"):
        head.init_bias_to_prior(torch.zeros(5))
    with pytest.raises(ValueError, match="no token"):
        head.init_bias_to_prior(torch.full((6,), -math.inf))
