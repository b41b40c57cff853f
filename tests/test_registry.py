"""The registry hand-off and the model resolver on an embedded sqlite store: champion rules, every kind of
model name, `bertpipe register`, and the logged MLflow model served by `mlflow.pyfunc`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.handoff.model_source import ModelSourceError, resolve_model
from pipeline.handoff.registry import beats, directory_digests, register_export
from tests.pretrain_runs import ROOT, busy_cpu, cpu_env, run_single


def test_champion_rule():
    assert beats(5.0, None) and beats(4.0, 5.0)
    assert not beats(5.0, 5.0) and not beats(6.0, 5.0)
    assert not beats(None, 5.0) and not beats(None, None) and not beats(math.nan, None)
    # Fine-tuned models: a higher accuracy or F1 wins.
    assert beats(0.8, 0.7, higher_is_better=True) and not beats(0.7, 0.7, higher_is_better=True)
    assert beats(0.1, None, higher_is_better=True) and not beats(0.6, 0.7, higher_is_better=True)


@pytest.fixture(scope="module")
def finished_run(pretraining_dataset, tmp_path_factory):
    """One process, 6 steps, checkpoints at 3 and 6, evaluation at both, not registered by the trainer."""
    output = tmp_path_factory.mktemp("registry") / "run"
    settings = ["train_steps=6", "eval_every=3", "checkpoint_every=3", "register=false", "eval_samples=64"]
    result = run_single(pretraining_dataset, output, *[arg for s in settings for arg in ("--set", s)])
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.mark.slow
def test_the_name_models_registered_earlier_import_still_holds():
    """A registered model stores its pyfunc file (MLflow's model from code) as it was; those written before
    pipeline/ had subpackages import HF_ARTIFACT from `pipeline.registry`."""
    from pipeline import registry
    from pipeline.handoff.registry import HF_ARTIFACT

    assert registry.HF_ARTIFACT == HF_ARTIFACT


def test_register_moves_champion_only_on_a_better_evaluation(finished_run, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTPIPE_CACHE", str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "register", "--checkpoint", str(finished_run), "--tag", "step00000003"],
        cwd=ROOT,
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{finished_run.resolve() / 'mlflow.db'}"
    assert f"registered models:/bert-tiny/1 (aliases: champion) at {uri}" in result.stdout
    exported = finished_run / "exports" / "step00000003"

    second = register_export(exported, uri, "bert-tiny", eval_metrics={"eval_mlm_loss": 1e9})
    third = register_export(exported, uri, "bert-tiny", eval_metrics={"eval_mlm_loss": 0.5})
    fourth = register_export(exported, uri, "bert-tiny")  # no evaluation: never champion
    assert (second.champion, third.champion, fourth.champion) == (False, True, False)
    assert third.aliases == ("champion",)

    champion = resolve_model("models:/bert-tiny@champion", uri)
    assert champion.kind == "registry" and champion.registry_version == "bert-tiny/3"
    assert directory_digests(champion.path) == directory_digests(exported)  # every file intact
    assert resolve_model("models:/bert-tiny/1", uri).registry_version == "bert-tiny/1"
    assert resolve_model("models:/bert-tiny/latest", uri).registry_version == "bert-tiny/4"
    assert resolve_model("models:/bert-tiny@latest", uri).registry_version == "bert-tiny/4"
    assert resolve_model(str(exported)).kind == "huggingface"
    checkpoint = resolve_model(str(finished_run))
    assert checkpoint.kind == "deepspeed" and checkpoint.path.name == "step00000006"
    assert checkpoint.config() == champion.config()

    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    served = mlflow.pyfunc.load_model("models:/bert-tiny@champion")
    predictions = served.predict(["a [MASK] is mutable and a [MASK] is not .", "no mask here"])
    assert [len(p) for p in predictions] == [2, 0] and all(isinstance(t, str) for t in predictions[0])


def test_resolver_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelSourceError, match="MLFLOW_TRACKING_URI"):
        resolve_model("models:/bert-tiny@champion")
    with pytest.raises(ModelSourceError, match="models:/NAME@ALIAS"):
        resolve_model("models:/bert-tiny/1/extra")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(ModelSourceError, match="neither a Hugging Face style directory"):
        resolve_model(str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ModelSourceError, match="not found at"):
        resolve_model("models:/nothing@champion", uri)


@pytest.mark.slow
def test_best_evaluations_are_registered_during_the_run(pretraining_dataset, tmp_path):
    """On a machine kept busy by other processes, where creating the MLflow store and run takes seconds: the
    first registration waits for the run rather than being skipped."""
    from mlflow import MlflowClient

    output = tmp_path / "run"
    settings = [
        "train_steps=6",
        "eval_every=2",
        "checkpoint_every=100",
        "register_on_best_eval=true",
        "eval_samples=64",
    ]
    with busy_cpu():
        result = run_single(pretraining_dataset, output, *[arg for s in settings for arg in ("--set", s)])
    assert result.returncode == 0, result.stderr[-3000:]
    evaluations = [
        r for r in map(json.loads, (output / "metrics.jsonl").read_text().splitlines()) if "eval_mlm_loss" in r
    ]
    best, improved = math.inf, []
    for record in evaluations:
        if record["eval_mlm_loss"] < best and record["step"] < 6:
            improved.append(record["step"])
        best = min(best, record["eval_mlm_loss"])
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    versions = sorted(client.search_model_versions("name = 'bert-tiny'"), key=lambda v: int(v.version))
    # Each improving evaluation before the end, then the final checkpoint.
    assert [int(v.tags["bertpipe.step"]) for v in versions] == [*improved, 6]
    assert sorted(p.name for p in (output / "exports").iterdir()) == [f"step{s:08d}" for s in [*improved, 6]]
    champion = client.get_model_version_by_alias("bert-tiny", "champion")
    best_step = min(evaluations, key=lambda r: r["eval_mlm_loss"])["step"]
    assert champion.tags["bertpipe.step"] == str(best_step)


@pytest.mark.slow
def test_a_run_directory_is_a_model_to_fine_tune(pretraining_dataset, tmp_path):
    """`--model` given a DeepSpeed checkpoint: exported first, the result named after the run's model."""
    output = tmp_path / "run"
    settings = ["--set", "train_steps=2", "--set", "warmup_steps=1", "--set", "eval_every=0"]
    result = run_single(pretraining_dataset, output, *settings, "--tracking-uri", "off")
    assert result.returncode == 0, result.stderr[-3000:]
    tasks = Path(__file__).parent / "data" / "pydocs" / "tasks"
    tuned = tmp_path / "tuned"
    command = [sys.executable, "-m", "pipeline.cli", "finetune", "classify", "--model", str(output)]
    command += [
        "--train",
        str(tasks / "classify_validation.jsonl"),
        "--validation",
        str(tasks / "classify_validation.jsonl"),
    ]
    command += ["--output", str(tuned), "--epochs", "1", "--max-seq-length", "32"]
    with busy_cpu():  # the registration at the end waits for the MLflow run however slow the machine
        result = subprocess.run(command, env=cpu_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tuned / "base_model" / "export_info.json").read_text())["tag"] == "step00000002"
    summary = json.loads((tuned / "finetune_summary.json").read_text())
    assert summary["registered"].startswith("models:/bert-tiny-classify/1")


@pytest.mark.slow
def test_no_password_reaches_a_log_line_a_parameter_or_a_cache_path(
    finished_run, servers, tmp_path, monkeypatch, caplog
):
    """A tracking URI with credentials (a real server on 127.0.0.1 that ignores them): the password is in none
    of what the tracker logs and records, nor in the registry cache's directory names."""
    import logging

    from mlflow import MlflowClient

    from pipeline.handoff.export import export_checkpoint
    from pipeline.handoff.tracking import RunTracker
    from tests.pretrain_runs import free_port

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("BERTPIPE_CACHE", str(tmp_path / "cache"))
    port = free_port()
    server = servers(tmp_path / "store", port)
    secret_uri = f"http://alice:s3cr3t@127.0.0.1:{port}"

    tracker = RunTracker(secret_uri, system_metrics_interval_s=None, flush_interval_s=0.2, retry_max_s=1.0)
    tracker.start("credentials", run_name="redacted", tags={"source": secret_uri})
    tracker.log_params({"tracking": {"uri": secret_uri}})
    tracker.log_metrics(1, {"loss": 1.0})
    assert tracker.finish(timeout_s=60) == 0
    run = MlflowClient(server.uri).get_run(tracker.run_id)
    assert run.data.params == {"tracking.uri": f"http://alice:***@127.0.0.1:{port}"}
    assert run.data.tags["source"] == f"http://alice:***@127.0.0.1:{port}"

    exported = export_checkpoint(finished_run, tmp_path / "exported", tag="step00000003")
    registered = register_export(exported, secret_uri, "bert-tiny")
    resolved = resolve_model(f"models:/bert-tiny/{registered.version}", secret_uri)
    assert resolved.kind == "registry" and (resolved.path / "config.json").is_file()
    cached = [str(p) for p in (tmp_path / "cache").rglob("*")]
    assert cached and not [p for p in cached if "s3cr3t" in p]
    with pytest.raises(ModelSourceError) as error:
        resolve_model("models:/nothing@champion", secret_uri)
    assert "alice:***@" in str(error.value) and "s3cr3t" not in str(error.value)

    logged = [record.getMessage() for record in caplog.records]
    assert any("alice:***@" in message for message in logged)
    assert not [message for message in logged if "s3cr3t" in message]
