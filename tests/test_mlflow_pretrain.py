"""2-rank CPU pretraining runs tracked by a real `mlflow server` on 127.0.0.1: params, metrics and tags land,
the final checkpoint is registered with its aliases, another process loads `models:/bert-tiny@champion`, and a
server killed mid-run costs neither the run nor the metrics of the gap."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from mlflow import MlflowClient

from pipeline.handoff.registry import directory_digests
from tests.pretrain_runs import ROOT, cpu_env, free_port, start_launcher, status, training_steps, wait_for_step

pytestmark = pytest.mark.slow

STEPS = 30
RUN = ("--set", f"train_steps={STEPS}", "--set", "eval_every=10", "--set", "checkpoint_every=10")


def the_run(client: MlflowClient):
    runs = client.search_runs([client.get_experiment_by_name("bert-pretraining").experiment_id])
    assert len(runs) == 1
    return runs[0]


def logged_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted({metric.step for metric in client.get_metric_history(run_id, key)})


def test_run_logs_registers_and_another_process_loads_the_champion(pretraining_dataset, tmp_path, servers):
    server = servers(tmp_path / "store", free_port())
    output = tmp_path / "run"
    launcher = start_launcher(pretraining_dataset, output, *RUN, MLFLOW_TRACKING_URI=server.uri)
    assert launcher.wait(timeout=300) == 0, output.with_suffix(".log").read_text()[-4000:]

    client = MlflowClient(server.uri)
    run = the_run(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["model.hidden_size"] == "128" and params["train.train_steps"] == str(STEPS)
    assert params["deepspeed.zero_optimization.stage"] == "2" and params["world_size"] == "2"
    assert params["batch.global"] == "32" and params["dataset.train_samples"].isdigit()
    assert "code.git_commit" in params or "code.bertpipe" in params
    tags = run.data.tags
    assert tags["world_size"] == "2" and tags["nodes"] == "1" and len(tags["dataset_sha256"]) == 64
    assert params["dataset.manifest_sha256"] == tags["dataset_sha256"]
    assert logged_steps(client, run.info.run_id, "loss") == list(range(1, STEPS + 1))
    assert logged_steps(client, run.info.run_id, "eval_mlm_loss") == [10, 20, 30]
    for key in ("mlm_accuracy", "nsp_loss", "lr", "grad_norm", "sequences_per_s", "tokens_per_s"):
        assert key in run.data.metrics, key
    assert "system/cpu_utilization_percentage" in run.data.metrics

    # The final checkpoint is version 1, the champion, tagged with where it came from.
    version = client.get_model_version_by_alias("bert-tiny", "champion")
    assert version.version == "1" and version.run_id == run.info.run_id
    eval_loss = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()][-1]
    assert version.tags["bertpipe.step"] == "30"
    assert float(version.tags["bertpipe.eval_mlm_loss"]) == eval_loss["eval_mlm_loss"]
    assert version.tags["bertpipe.dataset_manifest_sha256"] == tags["dataset_sha256"]
    assert len(version.tags["bertpipe.tokenizer_vocab_sha256"]) == 64
    assert status(output)["message"] == "registered models:/bert-tiny/1 (champion)"

    # Another process, knowing only the tracking URI and the model name.
    script = textwrap.dedent(
        """
        import json, sys, torch, transformers
        from model import BertForPreTraining
        from pipeline.handoff.model_source import resolve_model
        from pipeline.handoff.registry import directory_digests

        resolved = resolve_model("models:/bert-tiny@champion")
        theirs, info = transformers.BertForPreTraining.from_pretrained(resolved.path, output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.path)
        ours = BertForPreTraining.from_pretrained(resolved.path).eval()
        batch = tokenizer(["a list is [MASK] ."], ["tuples are not ."], return_tensors="pt")
        with torch.no_grad():
            a, b = ours(**batch), theirs.eval()(**batch)
        print(json.dumps({
            "version": resolved.registry_version,
            "problems": {k: list(v) for k, v in info.items() if v},
            "mlm_diff": (a.mlm_logits - b.prediction_logits).abs().max().item(),
            "nsp_diff": (a.nsp_logits - b.seq_relationship_logits).abs().max().item(),
            "digests": directory_digests(resolved.path),
        }))
        """
    )
    env = cpu_env(MLFLOW_TRACKING_URI=server.uri, BERTPIPE_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["version"] == "bert-tiny/1" and loaded["problems"] == {}
    assert loaded["mlm_diff"] < 1e-4 and loaded["nsp_diff"] < 1e-4
    assert loaded["digests"] == directory_digests(output / "exports" / "step00000030")  # every file intact


def test_server_killed_mid_run_costs_no_metrics(pretraining_dataset, tmp_path, servers):
    port, store = free_port(), tmp_path / "store"
    server = servers(store, port)
    output = tmp_path / "run"
    log = tmp_path / "run.log"
    launcher = start_launcher(pretraining_dataset, output, *RUN, log=log, MLFLOW_TRACKING_URI=server.uri)
    try:
        wait_for_step(launcher, output, 3)
        server.kill(signal.SIGKILL)
        wait_for_step(launcher, output, 12)
        assert launcher.poll() is None
        server = servers(store, port)  # back on the same store before the run's final wait runs out
        assert launcher.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    text = log.read_text()
    assert "stopped answering" in text and "logging resumed" in text
    assert len(training_steps(output)) == STEPS  # training never waited for the server

    client = MlflowClient(server.uri)
    run = the_run(client)
    assert run.info.status == "FINISHED"
    assert logged_steps(client, run.info.run_id, "loss") == list(range(1, STEPS + 1))  # the gap included
    assert logged_steps(client, run.info.run_id, "eval_mlm_loss") == [10, 20, 30]
