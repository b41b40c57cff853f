"""Checkpoints move between our classes and their `transformers` counterparts unchanged."""

from __future__ import annotations

import pytest
import torch
import transformers
from helpers import perturb_parameters, random_batch

from model import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    CheckpointError,
)
from model.checkpoint import PYTORCH_NAME, SAFETENSORS_NAME

TASKS = [
    # our class, the transformers auto class, labels, name of the logits in both outputs
    (BertForSequenceClassification, transformers.AutoModelForSequenceClassification, 3),
    (BertForTokenClassification, transformers.AutoModelForTokenClassification, 5),
    (BertForQuestionAnswering, transformers.AutoModelForQuestionAnswering, 2),
]


def tiny_config(**changes) -> BertConfig:
    return BertConfig.from_preset("tiny", vocab_size=1000, max_position_embeddings=64, **changes)


def batch() -> dict[str, torch.Tensor]:
    return random_batch(1000, batch=3, seq_len=24, pad_lengths=[24, 17, 9])


def outputs_of(model, inputs) -> list[torch.Tensor]:
    """The logits of either implementation, in the same order."""
    with torch.no_grad():
        out = model(**inputs)
    for names in (
        ("mlm_logits", "nsp_logits"),
        ("prediction_logits", "seq_relationship_logits"),
        ("start_logits", "end_logits"),
        ("logits",),
    ):
        if all(getattr(out, name, None) is not None for name in names):
            return [getattr(out, name) for name in names]
    raise AssertionError(f"unknown output {type(out)}")


def assert_close_outputs(ours, theirs, inputs) -> None:
    mask = inputs["attention_mask"].bool()
    for a, b in zip(outputs_of(ours, inputs), outputs_of(theirs, inputs), strict=True):
        assert a.shape == b.shape
        if a.dim() >= 2 and a.shape[:2] == mask.shape:  # per-token outputs: real tokens only
            a, b = a[mask], b[mask]
        assert (a - b).abs().max().item() <= 1e-5


def load_hf(auto_class, directory):
    model, info = auto_class.from_pretrained(directory, output_loading_info=True)
    assert info["missing_keys"] in ([], set()), info
    assert info["unexpected_keys"] in ([], set()), info
    assert info["mismatched_keys"] in ([], set()), info
    return model.eval()


def test_pretraining_model_loads_in_transformers(tmp_path):
    ours = BertForPreTraining(tiny_config())
    perturb_parameters(ours)
    ours.tie_weights()
    ours.save_pretrained(tmp_path)
    theirs = load_hf(transformers.BertForPreTraining, tmp_path)
    assert_close_outputs(ours.eval(), theirs, batch())
    assert theirs.config.architectures == ["BertForPreTraining"]


def test_transformers_pretraining_model_loads_in_ours(tmp_path):
    theirs = transformers.BertForPreTraining(transformers.BertConfig(**tiny_config().to_hf_dict()))
    perturb_parameters(theirs)
    theirs.save_pretrained(tmp_path)
    ours = BertForPreTraining.from_pretrained(tmp_path)
    assert_close_outputs(ours.eval(), theirs.eval(), batch())
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize(("ours_class", "auto_class", "num_labels"), TASKS)
def test_task_model_round_trip(tmp_path, ours_class, auto_class, num_labels):
    labels = {i: f"tag{i}" for i in range(num_labels)}
    ours = ours_class(tiny_config(id2label=labels))
    perturb_parameters(ours)
    ours.save_pretrained(tmp_path / "ours")
    theirs = load_hf(auto_class, tmp_path / "ours")
    assert type(theirs).__name__ == ours_class.__name__
    assert theirs.config.id2label == labels
    assert_close_outputs(ours.eval(), theirs, batch())

    perturb_parameters(theirs, seed=1)
    theirs.save_pretrained(tmp_path / "theirs")
    back = ours_class.from_pretrained(tmp_path / "theirs")
    assert back.config.id2label == labels
    assert_close_outputs(back.eval(), theirs, batch())


def test_pytorch_model_bin_is_read(tmp_path):
    source = BertForPreTraining(tiny_config())
    perturb_parameters(source)
    source.tie_weights()
    tiny_config().save_pretrained(tmp_path, architecture="BertForPreTraining")
    torch.save(source.state_dict(), tmp_path / PYTORCH_NAME)  # with the tied aliases, as older HF did
    loaded = BertForPreTraining.from_pretrained(tmp_path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_task_model_from_pretraining_checkpoint_initialises_only_the_head(tmp_path):
    pretrained = BertForPreTraining(tiny_config())
    perturb_parameters(pretrained)
    pretrained.save_pretrained(tmp_path)
    classifier = BertForSequenceClassification.from_pretrained(tmp_path, id2label={0: "neg", 1: "pos", 2: "mixed"})
    assert classifier.config.num_labels == 3
    for key, value in classifier.bert.state_dict().items():
        assert torch.equal(value, pretrained.bert.state_dict()[key]), key

    report = BertForTokenClassification(tiny_config()).load_pretrained_state(pretrained.state_dict())
    assert report.initialized == ["classifier.weight", "classifier.bias"]
    assert "bert.pooler.dense.weight" in report.ignored and "cls.seq_relationship.weight" in report.ignored


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    BertForSequenceClassification(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as err:
        BertForSequenceClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b", 2: "c"})
    message = str(err.value)
    assert "classifier.weight" in message and "(2, 128)" in message and "(3, 128)" in message


def test_missing_encoder_weights_are_an_error(tmp_path):
    state = BertForPreTraining(tiny_config()).state_dict()
    del state["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"bert\.encoder\.layer\.1\.output\.dense\.weight"):
        BertForPreTraining(tiny_config()).load_pretrained_state(state)


def test_save_refuses_to_overwrite_without_flag(tmp_path):
    model = BertForPreTraining(tiny_config())
    model.save_pretrained(tmp_path)
    before = (tmp_path / SAFETENSORS_NAME).read_bytes()
    perturb_parameters(model)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / SAFETENSORS_NAME).read_bytes() == before
    model.save_pretrained(tmp_path, overwrite=True)
    assert (tmp_path / SAFETENSORS_NAME).read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        SAFETENSORS_NAME,
    ]  # no temp files left
