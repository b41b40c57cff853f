"""The fine-tuning jobs end to end on the shipped Python-docs tasks: a tiny BERT registered in a real MLflow
store is fine-tuned from `models:/bert-tiny@champion` by `bertpipe finetune` (one process) and by
`launch/finetune.sh` (two CPU ranks, ZeRO-2); the result is registered and loads in `transformers` with
the same logits as in our model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.pretrain_runs import ROOT, cpu_env, free_port, metrics

TASKS = ROOT / "tests" / "data" / "pydocs" / "tasks"
CORPUS = ROOT / "tests" / "data" / "pydocs" / "corpus.txt"
FINETUNE_SH = ROOT / "launch" / "finetune.sh"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict[str, str]:
    """A tiny BERT (random weights, a 3000-token vocabulary trained on the corpus) registered as bert-tiny,
    champion, in a sqlite MLflow store; model caches under the test's directory."""
    from model import BertConfig, BertForPreTraining
    from pipeline.handoff.export import tokenizer_config
    from pipeline.handoff.registry import register_export
    from preprocessing.tokenizer import TOKENIZER_CONFIG, tokenizer_files, train_wordpiece

    root = tmp_path_factory.mktemp("finetune")
    base = root / "base"
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = BertConfig.from_preset("tiny", vocab_size=3000, max_position_embeddings=128)
    torch.manual_seed(0)
    BertForPreTraining(config).save_pretrained(base)
    files = tokenizer_files(train_wordpiece(lines, vocab_size=3000, lowercase=True))
    files[TOKENIZER_CONFIG] = tokenizer_config(config, files[TOKENIZER_CONFIG])
    for name, data in files.items():
        (base / name).write_bytes(data)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    registration = register_export(base, uri, "bert-tiny", tags={"step": 1}, eval_metrics={"eval_mlm_loss": 8.0})
    assert registration.champion
    return {"uri": uri, "root": str(root), "cache": str(root / "cache")}


def finetune(
    registry: dict[str, str],
    task: str,
    output: Path,
    *args: str,
    launcher: bool = False,
    ranks: int = 1,
    validation: Path | None = None,
):
    files = {"classify": "classify_{}.jsonl", "ner": "ner_{}.conll", "qa": "qa_{}.json"}[task]
    validation = validation or TASKS / files.format("validation")
    common = ["--model", "models:/bert-tiny@champion", "--tracking-uri", registry["uri"], "--output", str(output)]
    common += ["--train", str(TASKS / files.format("train")), "--validation", str(validation)]
    if launcher:
        command = [str(FINETUNE_SH), task, "--gpus-per-node", str(ranks), "--master-port", str(free_port())]
    else:
        command = [sys.executable, "-m", "pipeline.cli", "finetune", task]
    env = cpu_env(BERTPIPE_CACHE=registry["cache"])
    return subprocess.run([*command, *common, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def registered(registry: dict[str, str], name: str):
    from mlflow import MlflowClient

    client = MlflowClient(registry["uri"])
    return client, client.search_model_versions(f"name = '{name}'")


def same_logits_in_transformers(model_dir: Path, ours_class, auto_name: str, batch: dict[str, torch.Tensor]):
    import transformers

    theirs = getattr(transformers, auto_name).from_pretrained(model_dir).eval()
    ours = ours_class.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = theirs(**batch)
        got = ours(**batch)
    return expected, got


def batch_of(model_dir: Path, texts: list[str] | list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    from pipeline.finetune.task import collate_features
    from preprocessing.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    tokenizer.enable_truncation(64)
    encoded = tokenizer.encode_batch(texts)
    features = [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encoded]
    return collate_features(features, tokenizer.token_to_id("[PAD]"), 64)


def test_classification_from_the_registry_learns_and_registers(registry, tmp_path, monkeypatch):
    from model import BertForSequenceClassification
    from pipeline.handoff.model_source import resolve_model

    output = tmp_path / "classify"
    args = ["--epochs", "8", "--max-seq-length", "64", "--batch-size", "16", "--learning-rate", "5e-4"]
    result = finetune(registry, "classify", output, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((output / "finetune_summary.json").read_text())
    evaluations = [r for r in records(output) if "eval_accuracy" in r]
    assert [r["epoch"] for r in evaluations] == [1, 2, 3, 4, 5, 6, 7, 8]
    best = max(evaluations, key=lambda r: r["eval_accuracy"])
    assert summary["best_epoch"] == best["epoch"] and summary["evaluation"]["accuracy"] == best["eval_accuracy"]
    # Balanced validation set (80 tutorial and 80 C-API paragraphs from files training never saw): chance is
    # 0.5 with a standard deviation of 0.04; this seed reaches 0.79 (a random-weight base, 240 steps).
    assert summary["evaluation"]["accuracy"] >= 0.72, summary["evaluation"]
    assert summary["counts"]["train_examples"] == 480 and summary["counts"]["validation_examples"] == 160
    assert summary["base_registry_version"] == "bert-tiny/1"
    predictions = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 160
    assert sum(p["label"] == p["predicted"] for p in predictions) / 160 == pytest.approx(best["eval_accuracy"])
    assert not (output / "checkpoints").exists()  # removed once exported (--keep-checkpoint keeps it)

    client, versions = registered(registry, "bert-tiny-classify")
    assert [str(v.version) for v in versions] == ["1"]
    tags = versions[0].tags
    assert tags["bertpipe.task"] == "classify" and tags["bertpipe.base_registry_version"] == "bert-tiny/1"
    assert float(tags["bertpipe.eval_accuracy"]) == pytest.approx(best["eval_accuracy"])
    assert str(client.get_model_version_by_alias("bert-tiny-classify", "champion").version) == "1"
    run = client.get_run(versions[0].run_id)
    assert run.data.params["task"] == "classify" and run.data.tags["base_model"] == "models:/bert-tiny@champion"
    history = client.get_metric_history(run.info.run_id, "eval_accuracy")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [r["eval_accuracy"] for r in evaluations]

    # The registered model, as another user gets it, in transformers and in ours.
    resolved = resolve_model("models:/bert-tiny-classify@champion", registry["uri"])
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["id2label"] == {"0": "c-api", "1": "tutorial"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    texts = [p["text"] for p in map(json.loads, (TASKS / "classify_validation.jsonl").read_text().splitlines()[:8])]
    batch = batch_of(resolved.path, texts)
    expected, got = same_logits_in_transformers(
        resolved.path, BertForSequenceClassification, "AutoModelForSequenceClassification", batch
    )
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
    # Served by MLflow's pyfunc: label names, the argmax of the same logits.
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    served = mlflow.pyfunc.load_model("models:/bert-tiny-classify@champion").predict(texts)
    names = config["id2label"]
    single = [batch_of(resolved.path, [text]) for text in texts]
    with torch.no_grad():
        ours = BertForSequenceClassification.from_pretrained(resolved.path).eval()
        assert served == [names[str(int(ours(**b).logits[0].argmax()))] for b in single]


def test_a_test_file_is_scored_once_with_the_epoch_validation_chose(registry, tmp_path):
    """--test: the best epoch is still chosen on --validation; its weights, loaded back from its checkpoint,
    are scored on the test file, whose metrics and predictions are recorded beside the validation ones."""
    from pipeline.finetune.classification_data import Columns, encode_texts, read_examples
    from pipeline.finetune.task import collate_features
    from preprocessing.tokenizer import load_tokenizer

    rows = [json.loads(line) for line in (TASKS / "classify_validation.jsonl").read_text().splitlines()]
    validation, test = tmp_path / "dev.jsonl", tmp_path / "test.jsonl"
    # Validation with its labels swapped prefers the early, untrained epochs, so the epoch it picks is not the
    # last one (the weights in memory at the end): the test file must be scored with the reloaded checkpoint.
    swapped = {"c-api": "tutorial", "tutorial": "c-api"}
    validation.write_text("".join(json.dumps({**r, "label": swapped[r["label"]]}) + "\n" for r in rows[::2]))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[1::2]))
    output = tmp_path / "classify-test"
    args = ["--epochs", "3", "--max-seq-length", "64", "--batch-size", "16", "--learning-rate", "5e-4"]
    args += ["--test", str(test), "--truncation", "head+tail", "--name", "bert-tiny-classify-tested"]
    result = finetune(registry, "classify", output, *args, validation=validation)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((output / "finetune_summary.json").read_text())
    written = records(output)
    epochs = [r for r in written if "epoch" in r and "eval_accuracy" in r]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    best = max(epochs, key=lambda r: r["eval_accuracy"])  # the first of equals, as the loop keeps it
    assert summary["best_epoch"] == best["epoch"] and summary["evaluation"]["accuracy"] == best["eval_accuracy"]
    assert best["epoch"] < 3  # this seed learns by epoch 3 (0.78 on the true labels), so swapped labels drop
    final = written[-1]  # one record of the run's result, after the per-epoch ones
    assert final["best_epoch"] == best["epoch"] and final["step"] == best["step"]
    assert final["eval_accuracy"] == best["eval_accuracy"] and final["test_accuracy"] == summary["test"]["accuracy"]
    assert sum("test_accuracy" in r for r in written) == 1
    assert summary["counts"]["test_examples"] == 80 and summary["counts"]["validation_examples"] == 80

    test_predictions = [json.loads(line) for line in (output / "test_predictions.jsonl").read_text().splitlines()]
    assert len(test_predictions) == 80 and [p["line"] for p in test_predictions] == list(range(1, 81))
    correct = sum(p["label"] == p["predicted"] for p in test_predictions) / 80
    assert summary["test"]["accuracy"] == pytest.approx(correct)
    assert summary["test_predictions"] == str(output / "test_predictions.jsonl")
    dev_predictions = (output / "predictions.jsonl").read_text().splitlines()
    assert len(dev_predictions) == 80
    # The test predictions are the exported (best) model's, on inputs cut as in training (head+tail).
    model_dir = output / "model"
    examples, _ = read_examples(test, Columns())
    tokenizer = load_tokenizer(model_dir)
    encoded = encode_texts(tokenizer, examples, 64, "head+tail")
    batch = collate_features([{"input_ids": e.input_ids, "token_type_ids": e.token_type_ids} for e in encoded], 0, 64)
    from model import BertForSequenceClassification

    with torch.no_grad():
        logits = BertForSequenceClassification.from_pretrained(model_dir).eval()(**batch).logits
    names = json.loads((model_dir / "config.json").read_text())["id2label"]
    assert [p["predicted"] for p in test_predictions] == [names[str(int(i))] for i in logits.argmax(-1)]
    assert "; test accuracy" in result.stdout

    client, versions = registered(registry, "bert-tiny-classify-tested")
    tags = versions[0].tags
    assert float(tags["bertpipe.test_accuracy"]) == pytest.approx(summary["test"]["accuracy"])
    assert float(tags["bertpipe.eval_accuracy"]) == pytest.approx(best["eval_accuracy"])
    run = client.get_run(versions[0].run_id)
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [(m.step, m.value) for m in history] == [(best["step"], summary["test"]["accuracy"])]
    assert run.data.params["options.truncation"] == "head+tail"
    assert run.data.params["data.test_sha256"] and run.data.params["data.test_examples"] == "80"


def test_ner_on_two_ranks_with_zero2_writes_conll_predictions(registry, tmp_path, monkeypatch):
    from model import BertForTokenClassification
    from pipeline.finetune.conll import read_conll

    config = tmp_path / "deepspeed.json"
    config.write_text(
        json.dumps(
            {
                "train_batch_size": 16,
                "gradient_clipping": 1.0,
                "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01}},
                "zero_optimization": {"stage": 2},
            }
        )
    )
    output = tmp_path / "ner"
    args = ["--epochs", "2", "--max-seq-length", "64", "--deepspeed-config", str(config), "--keep-checkpoint"]
    args += ["--test", str(TASKS / "ner_validation.conll")]  # the same file: the reloaded best epoch scores alike
    result = finetune(registry, "ner", output, *args, launcher=True, ranks=2)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads((output / "finetune_summary.json").read_text())
    assert summary["counts"]["validation_sentences"] == 100 and summary["counts"]["test_sentences"] == 100
    assert set(summary["evaluation"]) == {"precision", "recall", "f1"}
    assert summary["test"] == summary["evaluation"]  # ZeRO-2 partitions on two ranks, loaded back
    assert (output / "test_predictions.conll").read_text() == (output / "predictions.conll").read_text()
    assert (output / "checkpoints").is_dir()
    # Every validation line comes back with a prediction appended; read back, the predictions are the tags.
    lines = (TASKS / "ner_validation.conll").read_text().splitlines()
    source = [line for line in lines if line and "DOCSTART" not in line]
    written = [line for line in (output / "predictions.conll").read_text().splitlines() if line]
    assert [line.rsplit(" ", 1)[0] for line in written] == source
    predicted = read_conll(output / "predictions.conll")
    assert [s.words for s in predicted] == [s.words for s in read_conll(TASKS / "ner_validation.conll")]
    assert {tag for s in predicted for tag in s.tags} <= {"O", "B-FUNC", "B-CLASS", "B-MOD"}

    _, versions = registered(registry, "bert-tiny-ner")
    assert len(versions) == 1 and versions[0].tags["bertpipe.task"] == "ner"
    model_dir = output / "model"
    config_json = json.loads((model_dir / "config.json").read_text())
    assert config_json["id2label"] == {"0": "O", "1": "B-CLASS", "2": "B-FUNC", "3": "B-MOD"}
    texts = ["Use os.path.join() to build paths.", "The glob module finds pathnames."]
    expected, got = same_logits_in_transformers(
        model_dir, BertForTokenClassification, "AutoModelForTokenClassification", batch_of(model_dir, texts)
    )
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    tagged = mlflow.pyfunc.load_model("models:/bert-tiny-ner/1").predict(texts)
    assert [[word for word, _ in sentence] for sentence in tagged] == [text.split() for text in texts]
    assert {tag for sentence in tagged for _, tag in sentence} <= set(config_json["id2label"].values())


def test_qa_v2_writes_squad_predictions_and_registers(registry, tmp_path, monkeypatch):
    from model import BertForQuestionAnswering

    output = tmp_path / "qa"
    args = ["--epochs", "1", "--max-seq-length", "96", "--max-query-length", "32", "--doc-stride", "32"]
    result = finetune(registry, "qa", output, *args, "--name", "docs-cloze")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((output / "finetune_summary.json").read_text())
    counts = summary["counts"]
    assert counts["validation_questions"] == 90 and counts["unanswerable_questions"] == 130
    assert counts["validation_windows"] > counts["validation_questions"]  # long paragraphs are windowed
    predictions = json.loads((output / "predictions.json").read_text())
    validation = json.loads((TASKS / "qa_validation.json").read_text())
    contexts = {q["id"]: p["context"] for a in validation["data"] for p in a["paragraphs"] for q in p["qas"]}
    assert set(predictions) == set(contexts)
    assert all(answer in contexts[qid] for qid, answer in predictions.items())  # spans of their own context
    assert 0 <= summary["evaluation"]["exact_match"] <= summary["evaluation"]["f1"] <= 100
    _, versions = registered(registry, "docs-cloze")
    assert len(versions) == 1 and versions[0].tags["bertpipe.task"] == "qa"
    model_dir = output / "model"
    pairs = [("what is _____?", "The glob module finds pathnames.")]
    expected, got = same_logits_in_transformers(
        model_dir, BertForQuestionAnswering, "AutoModelForQuestionAnswering", batch_of(model_dir, pairs)
    )
    torch.testing.assert_close(got.start_logits, expected.start_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.end_logits, expected.end_logits, rtol=1e-5, atol=1e-5)
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    context = " ".join(contexts.values())  # long: answered over several windows
    [answer] = mlflow.pyfunc.load_model("models:/docs-cloze/1").predict([{"question": "what?", "context": context}])
    assert answer in context


def test_bad_input_stops_with_a_clear_error(registry, tmp_path):
    validation = tmp_path / "dev.jsonl"
    validation.write_text(json.dumps({"text": "A paragraph about sockets.", "label": "howto"}) + "\n")
    command = [sys.executable, "-m", "pipeline.cli", "finetune", "classify", "--model", "models:/bert-tiny@champion"]
    command += ["--tracking-uri", registry["uri"], "--train", str(TASKS / "classify_train.jsonl")]
    command += ["--validation", str(validation), "--output", str(tmp_path / "out"), "--epochs", "1"]
    command += ["--max-seq-length", "1000"]  # more than the model's 128 positions: cut to fit, with a warning
    env = cpu_env(BERTPIPE_CACHE=registry["cache"])
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "labels the training data never has: ['howto']" in result.stderr
    assert "--map-unseen-label" in result.stderr
    assert "--max-seq-length 1000 exceeds the model's 128 positions; inputs are cut at 128" in result.stderr


def test_sigterm_keeps_the_best_epoch_that_ended_and_says_so(registry, tmp_path):
    """Two ranks under launch/finetune.sh; SIGTERM to the launcher after the first epoch's evaluation: every
    rank stops at the same micro-batch, the best epoch so far is exported (not registered: the run was cut
    short on purpose), the status says `interrupted` and names the export, and the launcher exits 0."""
    import signal
    import time

    output = tmp_path / "stopped"
    files = ["--train", str(TASKS / "classify_train.jsonl"), "--validation", str(TASKS / "classify_validation.jsonl")]
    command = [str(FINETUNE_SH), "classify", "--gpus-per-node", "2", "--master-port", str(free_port())]
    command += ["--model", "models:/bert-tiny@champion", "--tracking-uri", registry["uri"], "--output", str(output)]
    command += [
        *files,
        "--epochs",
        "50",
        "--max-seq-length",
        "64",
        "--batch-size",
        "16",
        "--name",
        "bert-tiny-classify-stopped",
    ]
    log = tmp_path / "stopped.log"
    with log.open("w") as handle:
        launcher = subprocess.Popen(
            command, cwd=ROOT, env=cpu_env(BERTPIPE_CACHE=registry["cache"]), stdout=handle, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 300
    while not any("eval_accuracy" in r for r in metrics(output)):
        assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=180) == 0, log.read_text()[-3000:]
    status = json.loads((output / "run_status.json").read_text())
    summary = json.loads((output / "finetune_summary.json").read_text())
    epochs = [r["epoch"] for r in records(output) if "eval_accuracy" in r]
    assert status["state"] == "interrupted" and status["checkpoint"] == str(output / "model"), status
    assert status["message"].startswith("stopped by SIGTERM at step ") and len(epochs) < 50
    assert summary["stopped"].startswith("stopped by SIGTERM") and summary["registered"] is None
    assert summary["best_epoch"] in epochs and (output / "model" / "model.safetensors").is_file()
    assert log.read_text().splitlines()[-1] == f"finetune.sh: {status['message']} ({output / 'model'})"
    _, versions = registered(registry, "bert-tiny-classify-stopped")
    assert versions == []
