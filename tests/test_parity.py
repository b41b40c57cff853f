"""Our encoder against `transformers.BertModel` on real pretrained weights."""

from __future__ import annotations

import itertools

import pytest
import torch
import transformers
from tokenizers import Tokenizer

from model import BertForPreTraining, BertModel

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Apache Beam turns a raw corpus into tokenized shards.",
    "BERT is pretrained with masked language modelling and next sentence prediction.",
    "Short one.",
    "DeepSpeed partitions optimizer states, gradients and parameters across data-parallel ranks, "
    "which lets much larger models fit in the same memory.",
]


@pytest.fixture(scope="module")
def real_batch(reference_bert_dir) -> dict[str, torch.Tensor]:
    """The sentences tokenized with the reference model's own vocabulary, padded to the longest."""
    tokenizer = Tokenizer.from_file(str(reference_bert_dir / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch([*itertools.pairwise(SENTENCES), SENTENCES[3]])
    batch = {
        "input_ids": torch.tensor([e.ids for e in encodings]),
        "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
    }
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max(), "the batch must contain padding to test the mask"
    return batch


def test_encoder_matches_transformers_on_real_weights(reference_bert_dir, real_batch):
    ours = BertModel.from_pretrained(reference_bert_dir).eval()
    theirs = transformers.BertModel.from_pretrained(reference_bert_dir).eval()
    with torch.no_grad():
        hidden, pooled = ours(**real_batch)
        reference = theirs(**real_batch)
    assert hidden.shape == reference.last_hidden_state.shape
    valid = real_batch["attention_mask"].bool()
    print("max abs diff at real tokens:", (hidden - reference.last_hidden_state)[valid].abs().max().item())
    assert (hidden - reference.last_hidden_state)[valid].abs().max().item() <= 1e-5
    # Padding rows are not compared: their values are never used, and the two attention kernels round
    # them differently (about 4e-5 apart).
    assert (pooled - reference.pooler_output).abs().max().item() <= 1e-5


def test_bare_encoder_checkpoint_loads_into_pretraining_model(reference_bert_dir, real_batch):
    """The reference checkpoint's keys lack `bert.`; the heads are reported as newly initialised."""
    encoder = BertModel.from_pretrained(reference_bert_dir).eval()
    model = BertForPreTraining.from_pretrained(reference_bert_dir).eval()
    with torch.no_grad():
        expected, _ = encoder(**real_batch)
        hidden, _ = model.bert(**real_batch)
    assert torch.equal(hidden, expected)

    fresh = BertForPreTraining(model.config)
    from model.checkpoint import load_weights

    report = fresh.load_pretrained_state(load_weights(reference_bert_dir))
    assert sorted(report.initialized) == sorted(
        k
        for k in fresh.state_dict()
        if k.startswith("cls.") and k != "cls.predictions.decoder.weight" and k != "cls.predictions.decoder.bias"
    )
    assert report.ignored == []
