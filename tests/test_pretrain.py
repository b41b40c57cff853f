"""Real pretraining runs on CPU: DeepSpeed's CPU accelerator, gloo between ranks, the deepspeed launcher
driven by launch/pretrain.sh, shards made by the Beam job. Each run takes tens of seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pretrain_runs import (
    PRETRAIN_SH,
    ROOT,
    cpu_env,
    fingerprints,
    free_port,
    metrics,
    rank_processes,
    run_launcher,
    run_single,
    start_launcher,
    status,
    training_steps,
    wait_for_step,
)

from pipeline.training.checkpointing import latest_tag, load_tensors_only
from pipeline.training.weights import model_config_of

DEMO_CONFIG = ROOT / "launch" / "configs" / "demo"  # the tiny preset, AdamW 2e-3
pytestmark = pytest.mark.slow

STEPS = 30
# Two loader workers per rank, so a resume also has to pick up the worker rotation where it was.
RUN = ("--set", f"train_steps={STEPS}", "--set", "checkpoint_every=5", "--set", "loader_workers=2")
RUN += ("--set", "record_batch_fingerprints=true", "--set", "eval_every=10")
# From BERT's zero output bias the loss has far to fall in a few steps, which shows the updates land;
# the default start (the targets' prior) is already at the unigram loss, tested on its own below.
RUN += ("--set", "mlm_bias_init=zeros")
# 400 steps of 64 sequences of 64 tokens, the demo's config (dropout 0): 0.537, 0.377 and 0.456 nat below the
# unigram guess with seeds 12345 (the config's), 1 and 2 (2-core AMD EPYC; 0.466 with seed 12345 and sequences of
# 128 tokens). From BERT's start the gain stays under 0.1 nat for 500 such steps (launch/configs/README.md).
LEARNING_STEPS = 400
LOCAL_GAIN = 0.3


@pytest.fixture(scope="module")
def reference_run(pretraining_dataset, tmp_path_factory):
    """An uninterrupted 2-rank ZeRO-2 run of the tiny config."""
    output = tmp_path_factory.mktemp("reference") / "run"
    code, log = run_launcher(pretraining_dataset, output, *RUN)
    assert code == 0, log[-3000:]
    return output


def test_two_ranks_zero2_loss_falls_and_checkpoints_appear(reference_run):
    steps = training_steps(reference_run)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    first, last = [r["loss"] for r in steps[:5]], [r["loss"] for r in steps[-5:]]
    assert sum(last) / 5 < sum(first) / 5 - 0.5, (first, last)
    evaluations = [r for r in metrics(reference_run) if "eval_mlm_loss" in r]
    assert [r["step"] for r in evaluations] == [10, 20, 30]
    assert evaluations[-1]["eval_mlm_loss"] < evaluations[0]["eval_mlm_loss"]
    assert all(0 <= r["eval_nsp_accuracy"] <= 1 and r["eval_masked_tokens"] > 0 for r in evaluations)
    # the same held-out positions each time: the unigram guess and the NSP majority do not move
    assert len({r["eval_mask_unigram_loss"] for r in evaluations}) == 1
    assert len({r["eval_nsp_majority"] for r in evaluations}) == 1 and evaluations[0]["eval_nsp_majority"] >= 0.5
    for r in evaluations:
        assert r["eval_mask_gain"] == pytest.approx(r["eval_mask_unigram_loss"] - r["eval_mask_loss"])
        assert 0 < r["eval_mask_tokens"] < r["eval_masked_tokens"]
    checkpoints = reference_run / "checkpoints"
    assert latest_tag(checkpoints) == "step00000030"
    kept = sorted(p.name for p in checkpoints.iterdir() if p.is_dir())
    assert kept == ["step00000020", "step00000025", "step00000030"]  # keep_checkpoints = 3
    for rank in (0, 1):
        assert (checkpoints / "step00000030" / f"trainer_state_rank{rank}.pt").is_file()
    assert status(reference_run) == {
        "state": "finished",
        "step": 30,
        "checkpoint": "step00000030",
        "message": "registered models:/bert-tiny/1 (champion)",
    }
    config = json.loads((reference_run / "run_config.json").read_text())
    assert config["world_size"] == 2 and config["deepspeed"]["zero_optimization"]["stage"] == 2


def test_the_launch_log_announces_each_phase_before_it_begins_and_holds_no_engine_noise(reference_run):
    log = reference_run.with_suffix(".log").read_text()
    # (what is announced, what shows that the phase then happened), in the order a run goes through them
    phases = [
        ("pretrain.sh: starting 2 ranks on this machine, 1 CPU thread each:", "joining the other ranks (2 in all)"),
        ("counting the training targets", "building the model"),
        ("building the model", "starting the data loader"),
        ("opening the MLflow run", "MLflow: run"),
        ("training from step 0 to 30", "step 10: evaluating"),
        ("step 10: evaluating on", "step 10 evaluation: at [MASK] loss"),
        ("step 30: exporting and registering the checkpoint", "registered bert-tiny version 1"),
    ]
    positions = []
    for announced, happened in phases:
        assert log.count(announced) == 1, announced  # said once, by rank 0
        assert log.index(announced) < log.index(happened), (announced, happened)
        positions.append(log.index(announced))
    assert positions == sorted(positions)
    assert "step 30/30 (100%)" in log  # the progress as a line: the log is a file, not a terminal
    noise = ["\r", "all_gather_into_tensor", "[INFO] [launch.py", "Downloading artifacts", "Add type hints"]
    noise += ["Processing zero checkpoint", "Loading checkpoint shards", "UserWarning", "FutureWarning"]
    noise += ["built successfully", "mlflow.store.db.utils"]
    for text in noise:
        assert text not in log, text


def test_sigkill_of_one_rank_then_resume_sees_the_same_batches(reference_run, pretraining_dataset, tmp_path):
    output = tmp_path / "run"
    launcher = start_launcher(pretraining_dataset, output, *RUN)
    wait_for_step(launcher, output, 17)  # the step-15 checkpoint is complete before step 16 starts
    ranks = rank_processes(launcher)
    assert sorted(ranks) == [0, 1]
    ranks[1].send_signal(signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    killed_at = max(r["step"] for r in training_steps(output))
    assert killed_at < STEPS
    resumed_from = latest_tag(output / "checkpoints")
    assert resumed_from in ("step00000015", "step00000020")
    failed = status(output)  # rank 0 lost its peer: the status says so, with the checkpoint to resume from
    assert failed["state"] == "failed" and failed["checkpoint"] == resumed_from and failed["message"], failed
    said = output.with_suffix(".log").read_text().splitlines()[-1]  # and so does the launcher's last line
    assert said.startswith("pretrain.sh: the run failed at step ") and said.endswith(
        f"continue from {resumed_from} with --resume auto"
    ), said
    mlflow = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("bert-pretraining").experiment_id])

    code, log = run_launcher(pretraining_dataset, output, *RUN, "--resume", "auto")
    assert code == 0, log[-3000:]
    assert f"resumed from {resumed_from}" in log
    for rank in (0, 1):
        assert fingerprints(output, rank) == fingerprints(reference_run, rank), f"rank {rank}"
    # One history in the metrics file: every step once, the repeated ones replaced.
    assert [r["step"] for r in training_steps(output)] == list(range(1, STEPS + 1))
    # Bit-exact: every step's loss and every evaluation equal the uninterrupted run's (dropout included).
    assert [r["loss"] for r in training_steps(output)] == [r["loss"] for r in training_steps(reference_run)]
    evaluations = [r for r in metrics(output) if "eval_mlm_loss" in r]
    assert evaluations and evaluations == [r for r in metrics(reference_run) if "eval_mlm_loss" in r]
    assert status(output)["state"] == "finished"
    # The same MLflow run goes on: its id was in the checkpoint; the steps after it were logged again.
    (resumed,) = mlflow.search_runs([run.info.experiment_id])
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_at_step"] == str(int(resumed_from.removeprefix("step")))
    history = mlflow.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # one value per step


def test_sigterm_writes_a_checkpoint_and_the_launcher_exits_zero(pretraining_dataset, tmp_path):
    output = tmp_path / "run"
    launcher = start_launcher(pretraining_dataset, output, "--set", "train_steps=400", "--set", "checkpoint_every=1000")
    wait_for_step(launcher, output, 3)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=120) == 0, (output.with_suffix(".log")).read_text()[-3000:]
    state = status(output)
    assert state["state"] == "interrupted" and 3 <= state["step"] < 400
    assert state["checkpoint"] == latest_tag(output / "checkpoints") == f"step{state['step']:08d}"
    assert "continue with --resume auto" in output.with_suffix(".log").read_text()


def test_a_signal_that_reaches_one_rank_stops_every_rank_at_the_same_step(pretraining_dataset, tmp_path):
    """Over ssh the ranks get a stop signal at different moments, or one of them only. The ranks agree on a stop
    once per micro-batch and act on that agreement alone: a rank that acted on its own signal at the step boundary,
    the others having agreed to go on, waited in the checkpoint's collectives while they waited in the next step's
    (seen once in two runs of the ssh test: rank 0 in `save_checkpoint`'s barrier, rank 1 in the next agreement).
    Whether a signal lands in that window is a matter of timing, so this run shows the stop reaching every rank
    from one, not the window itself."""
    output = tmp_path / "run"
    launcher = start_launcher(pretraining_dataset, output, "--set", "train_steps=400", "--set", "checkpoint_every=1000")
    wait_for_step(launcher, output, 3)
    rank_processes(launcher)[1].send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=120) == 0, (output.with_suffix(".log")).read_text()[-3000:]
    state = status(output)  # written by rank 0, which learnt of the signal from rank 1
    assert state["state"] == "interrupted" and state["message"] == "stopped by a signal on another rank"
    assert state["checkpoint"] == latest_tag(output / "checkpoints") == f"step{state['step']:08d}"


def test_two_nodes_without_ssh_share_one_hostfile(pretraining_dataset, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    output = tmp_path / "run"
    port = str(free_port())
    nodes = []
    for node_rank in (0, 1):
        command = [str(PRETRAIN_SH), "--phase", "tiny", "--no-ssh", "--node-rank", str(node_rank)]
        command += ["--master-addr", "127.0.0.1", "--master-port", port, "--dataset", str(pretraining_dataset)]
        command += ["--output", str(output), "--set", "train_steps=6"]
        log = (tmp_path / f"node{node_rank}.log").open("w")
        env = cpu_env(HOSTFILE=str(hostfile))
        nodes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    assert [node.wait(timeout=300) for node in nodes] == [0, 0], (tmp_path / "node0.log").read_text()[-3000:]
    assert json.loads((output / "run_config.json").read_text())["world_size"] == 2
    assert status(output)["state"] == "finished"
    assert [r["step"] for r in training_steps(output)] == list(range(1, 7))


def test_zero3_run_completes(pretraining_dataset, tmp_path):
    config = tmp_path / "ds.json"
    ds = json.loads((ROOT / "launch/configs/tiny/deepspeed.json").read_text())
    ds["zero_optimization"] = {"stage": 3}
    ds.update(train_batch_size=64)  # 16 per rank x 2 ranks x gradient accumulation 2 (derived)
    del ds["gradient_accumulation_steps"]
    config.write_text(json.dumps(ds))
    output = tmp_path / "run"
    code, log = run_launcher(pretraining_dataset, output, "--set", "train_steps=8", "--deepspeed-config", str(config))
    assert code == 0, log[-3000:]
    steps = training_steps(output)
    assert len(steps) == 8 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert status(output)["checkpoint"] == "step00000008"
    resolved = json.loads((output / "run_config.json").read_text())["deepspeed"]
    assert resolved["gradient_accumulation_steps"] == 2 and resolved["train_micro_batch_size_per_gpu"] == 16
    assert all(r["sequences_per_s"] > 0 for r in steps)


def test_bf16_run_completes(pretraining_dataset, tmp_path):
    config = tmp_path / "ds.json"
    ds = json.loads((ROOT / "launch/configs/tiny/deepspeed.json").read_text())
    ds["bf16"] = {"enabled": True}
    ds["zero_optimization"] = {"stage": 1}
    config.write_text(json.dumps(ds))
    output = tmp_path / "run"
    result = run_single(
        pretraining_dataset,
        output,
        "--set",
        "train_steps=8",
        "--set",
        "mlm_bias_init=zeros",
        "--deepspeed-config",
        str(config),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = training_steps(output)
    assert len(steps) == 8 and steps[-1]["loss"] < steps[0]["loss"]
    assert json.loads((output / "run_config.json").read_text())["deepspeed"]["bf16"]["enabled"] is True


def test_init_from_a_run_starts_phase_two_with_its_weights_and_a_fresh_optimizer(
    reference_run, pretraining_dataset, tmp_path
):
    output = tmp_path / "phase2"
    result = run_single(pretraining_dataset, output, "--init-from", str(reference_run), "--set", "train_steps=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"initial weights from DeepSpeed checkpoint {reference_run}/checkpoints/step00000030" in result.stderr
    steps = training_steps(output)
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert steps[0]["lr"] == pytest.approx(1e-3 / 4)  # the schedule starts over: warmup step 1 of 4
    assert adam_step_count(output) == 8  # and Adam's moments with it
    fresh_loss = training_steps(reference_run)[0]["loss"]
    trained_loss = training_steps(reference_run)[-1]["loss"]
    assert steps[0]["loss"] < fresh_loss - 0.5 and abs(steps[0]["loss"] - trained_loss) < 0.5


def test_a_record_over_several_steps_holds_their_mean_loss_and_pooled_accuracy(pretraining_dataset, tmp_path):
    """With log_every 4 the records at steps 4 and 8 average the losses of the four steps each covers."""
    every_step, every_fourth = tmp_path / "every-step", tmp_path / "every-fourth"
    for output, log_every in ((every_step, 1), (every_fourth, 4)):
        result = run_single(pretraining_dataset, output, "--set", "train_steps=8", "--set", f"log_every={log_every}")
        assert result.returncode == 0, result.stderr[-3000:]
    single = training_steps(every_step)
    pooled = training_steps(every_fourth)
    assert [r["step"] for r in pooled] == [4, 8]
    for record, covered in zip(pooled, (single[:4], single[4:]), strict=True):
        for name in ("loss", "mlm_loss", "nsp_loss"):
            assert record[name] == pytest.approx(sum(r[name] for r in covered) / 4, rel=1e-5), name
        assert (
            min(r["mlm_accuracy"] for r in covered) <= record["mlm_accuracy"] <= max(r["mlm_accuracy"] for r in covered)
        )
    for record in single + pooled:  # one rank: the real and padded rates come from the same interval
        assert 0 < record["padding_share"] < 1 and 0 <= record["data_wait_share"] <= 1
        assert record["tokens_per_s"] / record["padded_tokens_per_s"] == pytest.approx(1 - record["padding_share"])


def test_the_default_output_bias_starts_at_the_unigram_loss(reference_run, pretraining_dataset, tmp_path):
    """Before any update the model scores the unigram guess's loss at the held-out [MASK] positions (a run
    whose one step has learning rate 0 evaluates its initial weights); from BERT's zero bias the first loss
    is far above it."""
    output = tmp_path / "run"
    frozen = ("--set", "train_steps=1", "--set", "warmup_steps=0", "--set", "deepspeed.optimizer.params.lr=0")
    result = run_single(pretraining_dataset, output, *frozen)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = [r for r in metrics(output) if "eval_mask_unigram_loss" in r][-1]
    unigram = evaluation["eval_mask_unigram_loss"]
    # the rest of the network adds small random logits to the bias: a little above, never far
    assert 0 <= evaluation["eval_mask_loss"] - unigram < 0.1, (evaluation["eval_mask_loss"], unigram)
    from_zeros = training_steps(reference_run)[0]["mlm_loss"]  # the same data from BERT's zero bias
    assert from_zeros > unigram + 1.0, (from_zeros, unigram)


def test_attention_that_starts_local_learns_from_the_context(demo_corpus_dataset, tmp_path):
    """After a short run from the default start (model/local_attention_init.py) the held-out [MASK] loss is
    well below the unigram guess at the same positions."""
    output = tmp_path / "run"
    settings = (f"train_steps={LEARNING_STEPS}", "register_on_best_eval=false", "loader_workers=0")
    settings += (f"eval_every={LEARNING_STEPS}", f"checkpoint_every={LEARNING_STEPS}")
    overrides = (arg for setting in settings for arg in ("--set", setting))
    ds_config = json.loads((DEMO_CONFIG / "deepspeed.json").read_text())
    ds_config["train_micro_batch_size_per_gpu"] = 64  # the demo's global batch, in one process
    (tmp_path / "deepspeed.json").write_text(json.dumps(ds_config))
    overrides = (*overrides, "--deepspeed-config", str(tmp_path / "deepspeed.json"))
    # The one process may use every core (the launcher's runs keep one thread per rank): ~1 min on 2 cores;
    # under pytest-xdist, its worker's share (conftest.py).
    threads = os.environ.get("OMP_NUM_THREADS") or str(min(4, os.cpu_count() or 1))
    result = run_single(
        demo_corpus_dataset, output, *overrides, config=DEMO_CONFIG, timeout=900, OMP_NUM_THREADS=threads
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gain = [r for r in metrics(output) if "eval_mask_gain" in r][-1]["eval_mask_gain"]
    assert gain > LOCAL_GAIN, gain


def test_a_packed_run_trains_as_the_padded_run_does_on_fewer_padded_tokens(pretraining_dataset, tmp_path):
    """Without dropout (whose masks depend on the layout) packing changes nothing the optimizer sees: the
    same instances per step, the same losses, so the same weights step after step, on fewer rows. The packed
    run also recomputes its activations in the backward pass (activation_checkpointing), which changes nothing
    either. `dropout=0` turns dropout off for the training only: the checkpoints keep the model's own, for
    fine-tuning."""
    runs = {}
    for packing in (False, True):
        output = tmp_path / f"packing-{packing}"
        settings = ("train_steps=6", f"packing={str(packing).lower()}", "dropout=0", "eval_every=0")
        settings += (f"activation_checkpointing={str(packing).lower()}",)
        result = run_single(pretraining_dataset, output, *(arg for s in settings for arg in ("--set", s)))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[packing] = training_steps(output)
    assert [r["step"] for r in runs[True]] == [r["step"] for r in runs[False]] == list(range(1, 7))
    for padded, packed in zip(runs[False], runs[True], strict=True):
        for name in ("loss", "mlm_loss", "nsp_loss"):
            assert packed[name] == pytest.approx(padded[name], abs=1e-4), (packed["step"], name)
        assert packed["sequences_per_s"] > 0 and packed["padding_share"] <= padded["padding_share"]
    # a batch of long pairs only packs one per row; over the steps, rows hold fewer padding tokens
    assert sum(r["padding_share"] for r in runs[True]) < sum(r["padding_share"] for r in runs[False])
    saved = model_config_of(output)
    assert (saved.hidden_dropout_prob, saved.attention_probs_dropout_prob) == (0.1, 0.1)


def adam_step_count(output: Path) -> int:
    """The step count Adam's bias correction has reached, from the newest checkpoint's optimizer partition."""
    tag_dir = output / "checkpoints" / latest_tag(output / "checkpoints")
    (partition,) = tag_dir.glob("*_optim_states.pt")
    state = load_tensors_only(partition)["optimizer_state_dict"]["base_optimizer_state"]["state"]
    return int(next(iter(state.values()))["step"])


def test_init_optimizer_state_carries_the_moments_into_the_next_phase(reference_run, pretraining_dataset, tmp_path):
    """As NVIDIA's phase 2 starts: phase 1's weights and Adam state, this phase's own steps and schedule."""
    phase1, phase2 = tmp_path / "phase1", tmp_path / "phase2"
    result = run_single(pretraining_dataset, phase1, "--set", "train_steps=4", "--set", "eval_every=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert adam_step_count(phase1) == 4
    carry = ("--set", "init_optimizer_state=true", "--set", "train_steps=5", "--set", "eval_every=0")
    result = run_single(pretraining_dataset, phase2, "--init-from", str(phase1), *carry)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "initial weights and optimizer state from DeepSpeed checkpoint" in result.stderr
    steps = training_steps(phase2)
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    assert steps[0]["lr"] == pytest.approx(1e-3 / 4)  # this phase's schedule: warmup step 1 of 4
    assert adam_step_count(phase2) == 4 + 5  # the moments' bias correction went on from phase 1's
    # a model directory (phase 1's registered export) has weights and no optimizer state: refused before any work
    exported = phase1 / "exports" / "step00000004"
    assert (exported / "config.json").is_file()
    result = run_single(pretraining_dataset, tmp_path / "from-weights", "--init-from", str(exported), *carry)
    assert result.returncode != 0 and "a model directory holds weights only" in result.stderr
    assert not (tmp_path / "from-weights" / "checkpoints").exists()
    # the reference run's optimizer is split over 2 ranks; one rank cannot take it, and says so
    result = run_single(pretraining_dataset, tmp_path / "one-rank", "--init-from", str(reference_run), *carry)
    assert result.returncode != 0
    assert "holds the optimizer state of 2 ranks in ZeRO partitions and this run has 1" in result.stderr
