"""Bad input and faults of `bertpipe pretrain`, each caused for real: missing or mismatched datasets,
batch sizes that do not divide, damaged shards, a diverged model, a checkpoint that cannot be written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from pretrain_runs import ROOT, run_launcher, run_single, status, training_steps

from model import BertConfig, BertForPreTraining
from pipeline.data.data_plan import shard_order
from pipeline.data.dataset_check import check_init_tokenizer, load_manifest
from pipeline.training.checkpointing import latest_tag
from preprocessing.tokenizer import build_wordpiece, tokenizer_files


def test_missing_dataset_directory_is_a_clear_error(tmp_path):
    result = run_single(tmp_path / "nowhere", tmp_path / "run")
    assert result.returncode == 2
    assert f"dataset directory {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_dataset_without_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    result = run_single(tmp_path / "data", tmp_path / "run")
    assert result.returncode == 2 and "has no manifest.json" in result.stderr


def test_vocabulary_mismatch_names_both_sizes_before_any_compute(pretraining_dataset, tmp_path):
    result = run_single(pretraining_dataset, tmp_path / "run", "--set", 'model_overrides={"vocab_size": 5000}')
    assert result.returncode == 2
    assert "vocabulary has 3000 tokens but the model's vocab_size is 5000" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change", ["cased", "other words"])
def test_init_from_weights_of_another_tokenizer_is_refused_before_any_compute(change, pretraining_dataset, tmp_path):
    """Same vocabulary size, so every shape fits: only the tokenizer files tell that each id means another word."""
    model_dir = tmp_path / "model"
    BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=3000)).save_pretrained(model_dir)
    vocab = (pretraining_dataset / "vocab.txt").read_text().splitlines()
    lowercase = True
    if change == "cased":
        lowercase = False
    else:
        vocab = [*vocab[:-2], "zzzunseen", "zzzother"]
    tokenizer = build_wordpiece({token: i for i, token in enumerate(vocab)}, lowercase=lowercase)
    for name, data in tokenizer_files(tokenizer).items():
        (model_dir / name).write_bytes(data)
    result = run_single(pretraining_dataset, tmp_path / "run", "--init-from", str(model_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    expected = "it is cased and the dataset uncased" if change == "cased" else "its vocabulary (3000 tokens) is not"
    assert f"--init-from {model_dir} was trained with another tokenizer" in result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()

    # the dataset's own tokenizer beside the same weights passes the check
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(pretraining_dataset / name, model_dir / name)
    assert check_init_tokenizer(load_manifest(pretraining_dataset), model_dir) is None


def test_existing_run_is_not_overwritten_without_resume(pretraining_dataset, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    result = run_single(pretraining_dataset, output)
    assert result.returncode == 2 and "pass --resume auto" in result.stderr
    assert (output / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'


@pytest.mark.slow
def test_batch_size_that_does_not_divide_by_the_world_size(pretraining_dataset, tmp_path):
    config = tmp_path / "ds.json"
    ds = json.loads((ROOT / "launch/configs/tiny/deepspeed.json").read_text())
    ds.update(train_batch_size=30, train_micro_batch_size_per_gpu=4)
    del ds["gradient_accumulation_steps"]  # to be derived: 30 / (4 x 2) is not whole
    config.write_text(json.dumps(ds))
    code, log = run_launcher(pretraining_dataset, tmp_path / "run", "--deepspeed-config", str(config))
    assert code != 0
    assert "train_batch_size 30 does not divide by train_micro_batch_size_per_gpu 4 x world size 2 = 8" in log


def damaged_copy(dataset, tmp_path, shard: str, damage) -> object:
    copy = tmp_path / "dataset"
    shutil.copytree(dataset, copy)
    path = copy / shard
    path.write_bytes(damage(path.read_bytes()))
    return copy


@pytest.mark.slow
def test_truncated_shard_stops_the_run_naming_it_or_is_skipped_and_counted(pretraining_dataset, tmp_path):
    first = int(shard_order(7, seed=12345, epoch=0)[0])  # the tiny config's seed: read first in epoch 0
    name = f"train-{first:06d}.tar"
    dataset = damaged_copy(pretraining_dataset, tmp_path, name, lambda data: data[: len(data) // 2])
    steps = ("--set", "train_steps=20", "--set", "checkpoint_every=100", "--set", "loader_workers=1")
    result = run_single(dataset, tmp_path / "strict", *steps)
    assert result.returncode == 1
    assert f"shard {dataset}/{name}" in result.stderr and "Traceback" not in result.stderr

    result = run_single(dataset, tmp_path / "lenient", *steps, "--skip-bad-shards")
    assert result.returncode == 0, result.stderr[-3000:]
    records = training_steps(tmp_path / "lenient")
    assert len(records) == 20 and records[-1]["bad_shards_skipped"] == 1
    assert "skipping a bad shard" in result.stderr and name in result.stderr


@pytest.mark.slow
def test_non_finite_loss_aborts_after_k_batches_naming_the_step(pretraining_dataset, tmp_path):
    config = BertConfig.from_preset("tiny", vocab_size=3000)
    model = BertForPreTraining(config)
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "diverged")
    output = tmp_path / "run"
    result = run_single(
        pretraining_dataset, output, "--init-from", str(tmp_path / "diverged"), "--set", "max_nonfinite_steps=3"
    )
    assert result.returncode == 1
    assert "the loss was not finite for 3 consecutive micro-batches, the last at step 1" in result.stderr
    assert status(output)["state"] == "failed" and "step 1" in status(output)["message"]


@pytest.mark.slow
def test_failed_checkpoint_write_leaves_the_previous_one_usable(pretraining_dataset, tmp_path):
    output = tmp_path / "run"
    (output / "checkpoints").mkdir(parents=True)
    blocker = output / "checkpoints" / "step00000006"
    blocker.write_text("a file where the step-6 checkpoint directory would go")
    steps = ("--set", "train_steps=6", "--set", "checkpoint_every=3")
    result = run_single(pretraining_dataset, output, *steps)
    assert result.returncode == 1
    assert latest_tag(output / "checkpoints") == "step00000003"
    assert status(output)["state"] == "failed" and "step00000003" in status(output)["message"]

    blocker.unlink()
    result = run_single(pretraining_dataset, output, *steps, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step00000003 at step 3" in result.stderr
    assert latest_tag(output / "checkpoints") == "step00000006"
    assert [r["step"] for r in training_steps(output)] == [1, 2, 3, 4, 5, 6]
    assert status(output)["state"] == "finished"

    # A failure before the first step (here a checkpoint that no longer loads) must not leave that status.
    states = output / "checkpoints" / "step00000006" / "mp_rank_00_model_states.pt"
    states.write_bytes(states.read_bytes()[:100])
    result = run_single(pretraining_dataset, output, "--set", "train_steps=9", "--resume", "auto")
    assert result.returncode != 0
    assert status(output)["state"] == "failed" and status(output)["checkpoint"] == "step00000006"
    assert f"cannot read {states}" in status(output)["message"] and "cut short or damaged" in result.stderr
    assert "Traceback" not in result.stderr
