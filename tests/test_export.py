"""`bertpipe export`: DeepSpeed checkpoints of ZeRO stage 2 and 3 -> Hugging Face directories whose weights
equal the live model's, which `transformers` loads with no missing or unexpected keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model import BertConfig, BertForPreTraining
from model.checkpoint import CheckpointError
from tests.pretrain_runs import ROOT, cpu_env

pytestmark = pytest.mark.slow


def bertpipe(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def live_run(request, pretraining_dataset, tmp_path_factory) -> Path:
    """Two DeepSpeed steps at the stage, a trainer checkpoint, and the live weights gathered beside it."""
    output = tmp_path_factory.mktemp(f"live_zero{request.param}")
    script = ROOT / "tests" / "live_weights_run.py"
    command = [sys.executable, str(script), str(pretraining_dataset), str(output), str(request.param)]
    result = subprocess.run(command, cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def exported(live_run) -> Path:
    out = live_run / "hf"
    result = bertpipe("export", "--checkpoint", str(live_run), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"-> {out}" in result.stdout
    return out


def test_exported_weights_equal_the_live_model(live_run, exported):
    live = load_file(str(live_run / "live_weights.safetensors"))
    saved = load_file(str(exported / "model.safetensors"))
    # The MLM decoder is tied to the word embeddings: Hugging Face stores the pair once.
    missing = set(live) - set(saved) - {"cls.predictions.decoder.weight"}
    assert not missing, f"not exported: {sorted(missing)}"
    for name, tensor in live.items():
        if name in saved:
            assert saved[name].dtype == torch.float32
            assert torch.equal(saved[name], tensor), name
    info = json.loads((exported / "export_info.json").read_text())
    assert info["tag"] == "step00000002" and info["step"] == 2 and info["zero_stage"] in (2, 3)


def test_transformers_loads_it_with_no_missing_keys_and_the_same_logits(exported):
    import transformers

    theirs, loading = transformers.BertForPreTraining.from_pretrained(exported, output_loading_info=True)
    assert {kind: list(keys) for kind, keys in loading.items() if keys} == {}  # missing, unexpected, mismatched
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    config = BertConfig.from_pretrained(exported)
    assert tokenizer.model_max_length == config.max_position_embeddings
    assert tokenizer.cls_token == "[CLS]" and tokenizer.mask_token == "[MASK]" and tokenizer.pad_token == "[PAD]"

    ours = BertForPreTraining.from_pretrained(exported).eval()
    theirs.eval()
    encoded = tokenizer(
        ["The list type is mutable.", "Use a dictionary for fast lookups by key."],
        ["Tuples are not.", "Sets hold unique elements."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = theirs(**encoded)
        got = ours(**encoded)
    torch.testing.assert_close(got.mlm_logits, expected.prediction_logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.nsp_logits, expected.seq_relationship_logits, atol=2e-5, rtol=1e-4)


def test_export_refuses_what_it_cannot_do(live_run, exported, tmp_path):
    result = bertpipe("export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "is not a checkpoint of this trainer" in result.stderr

    result = bertpipe("export", "--checkpoint", str(live_run), "--tag", "step00000007", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "no checkpoint tag 'step00000007'" in result.stderr and "step00000002" in result.stderr

    before = (exported / "model.safetensors").read_bytes()
    result = bertpipe("export", "--checkpoint", str(live_run), "--out", str(exported))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (exported / "model.safetensors").read_bytes() == before

    result = bertpipe("export", "--checkpoint", str(live_run), "--out", str(tmp_path / "y"), "--tokenizer", "/nope")
    assert result.returncode == 2 and "--tokenizer" in result.stderr
    assert not (tmp_path / "y").exists()

    result = bertpipe("export", "--checkpoint", str(live_run), "--out", str(exported), "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (exported / "model.safetensors").read_bytes() == before  # same checkpoint, same bytes
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".hf.")]  # no staging left behind


class RunsACommand:
    """A pickle that, unpickled without `weights_only`, creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("victim", ["mp_rank_00_model_states.pt", "optim_states.pt", "trainer_state_rank0.pt"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(live_run, tmp_path, victim):
    import shutil

    from pipeline.training import checkpointing
    from pipeline.training.weights import load_initial_weights, model_config_of

    crafted = tmp_path / "crafted"
    shutil.copytree(live_run / "checkpoints", crafted / "checkpoints")
    tag_dir = crafted / "checkpoints" / "step00000002"
    target = next(p for p in sorted(tag_dir.glob("*.pt")) if p.name.endswith(victim))
    marker = tmp_path / "code_ran"
    torch.save({"module": RunsACommand(marker), "ds_version": "0"}, target)

    result = bertpipe("export", "--checkpoint", str(crafted), "--out", str(tmp_path / "hf"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"refusing to load {target}" in result.stderr and "it names posix.system" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "hf").exists()

    # The same check guards --init-from / finetune --model (in this process) and --resume (vet_checkpoint).
    with pytest.raises(CheckpointError, match="refusing to load"):
        if victim.startswith("mp_rank"):
            model_config_of(crafted)
        else:
            load_initial_weights(BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=64)), crafted)
    with pytest.raises(CheckpointError, match="refusing to load"):
        checkpointing.vet_checkpoint(tag_dir)
    assert not marker.exists()


def test_the_trainers_own_checkpoint_files_load_as_tensors_only(live_run):
    from pipeline.training import checkpointing

    tag_dir = live_run / "checkpoints" / "step00000002"
    assert [p.name for p in tag_dir.glob("trainer_state_rank*.pt")] == ["trainer_state_rank0.pt"]
    checkpointing.vet_checkpoint(tag_dir)  # raises on any object outside deepspeed_safe_types
    state = checkpointing.load_tensors_only(tag_dir / "trainer_state_rank0.pt")
    assert state["rng"]["numpy"]["keys"].shape == (624,)
