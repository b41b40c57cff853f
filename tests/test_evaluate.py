"""The held-out metrics: masked-LM figures split by what the input holds, the unigram baseline, NSP majority."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.heads import IGNORE_INDEX
from pipeline.training.evaluate import KINDS, PER_KIND, masked_lm_sums, result_from_sums, unigram_log_probs

MASK = 4


def test_unigram_log_probs_are_add_one_smoothed_and_skip_special_tokens():
    counts = np.array([50, 0, 0, 0, 0, 3, 1, 0])
    log_probs = unigram_log_probs(counts, special_ids=[0, 4])
    # 6 ordinary ids: 3+1 counts + 6 pseudo-counts = 10
    assert log_probs[5].item() == pytest.approx(math.log(4 / 10))
    assert log_probs[6].item() == pytest.approx(math.log(2 / 10))
    assert log_probs[7].item() == pytest.approx(math.log(1 / 10))
    assert log_probs[0].item() == -math.inf and log_probs[MASK].item() == -math.inf
    assert log_probs.exp().sum().item() == pytest.approx(1.0)


def test_masked_lm_sums_split_by_what_the_input_holds():
    vocab = 8
    labels = torch.tensor([[5, 6, 7, IGNORE_INDEX], [5, 5, IGNORE_INDEX, IGNORE_INDEX]])
    # row 0: [MASK] at slot 0, kept token at slot 1, random token (5 instead of 7) at slot 2
    inputs = torch.tensor([[MASK, 6, 5, 0], [MASK, MASK, 0, 0]])
    logits = torch.zeros(2, 4, vocab)
    logits[0, 0, 5] = 2.0  # right at the first [MASK]
    logits[1, 0, 6] = 2.0  # wrong at the second and third
    logits[1, 1, 7] = 2.0
    logits[0, 1, 6] = 3.0  # the kept token is copied
    logits[0, 2, 5] = 3.0  # the random token is copied: wrong
    unigram = torch.log(torch.full((vocab,), 1 / vocab))
    unigram[0] = -math.inf  # [PAD]: the target of the unused slots, which must not turn the sums into NaN
    sums = masked_lm_sums(logits, labels, inputs, MASK, unigram).view(len(KINDS), PER_KIND)

    def nll(row, slot, label):
        return -torch.log_softmax(logits[row, slot], -1)[label].item()

    mask_loss = nll(0, 0, 5) + nll(1, 0, 5) + nll(1, 1, 5)
    assert sums[0].tolist() == pytest.approx([mask_loss, 1, 3, 3 * math.log(vocab)])
    assert sums[1].tolist() == pytest.approx([nll(0, 1, 6), 1, 1, math.log(vocab)])
    assert sums[2].tolist() == pytest.approx([nll(0, 2, 7), 0, 1, math.log(vocab)])


def test_result_pools_the_kinds_and_reports_the_gain_and_nsp_majority():
    mlm = torch.tensor([30.0, 2, 10, 50.0, 1.0, 2, 2, 10.0, 4.0, 0, 2, 10.0], dtype=torch.float64)
    result = result_from_sums(mlm, torch.tensor([7.0, 10, 3], dtype=torch.float64))
    assert result.mask_loss == 3.0 and result.kinds["mask"].unigram_loss == 5.0
    assert result.mask_gain == 2.0
    assert result.masked_tokens == 14
    assert result.mlm_loss == pytest.approx(35 / 14)
    assert result.mlm_accuracy == pytest.approx(4 / 14)
    assert result.kinds["keep"].accuracy == 1.0 and result.kinds["random"].accuracy == 0.0
    assert result.nsp_accuracy == 0.7 and result.nsp_majority == 0.7
    metrics = result.as_metrics()
    assert metrics["eval_mask_gain"] == 2.0 and metrics["eval_mask_tokens"] == 10


def test_an_empty_kind_reports_zero_rather_than_nan():
    result = result_from_sums(torch.zeros(len(KINDS) * PER_KIND), torch.zeros(3))
    assert result.mask_loss == 0.0 and result.nsp_majority == 1.0 and result.masked_tokens == 0
