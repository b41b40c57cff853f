"""`make demo`'s entry point at its small size: every step runs for real (Beam, DeepSpeed on 2 CPU ranks, a
sqlite MLflow registry, fine-tuning from the pretrained model and from random weights on two fractions of the
labelled data) and the report is checked against the files behind it. The pure parts (the task split, the
subsets, the aggregation over seeds, the report's layout) are tested in test_demo_downstream.py."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import tarfile
import time

import msgpack
import pytest
from mlflow import MlflowClient

from pipeline.demo.__main__ import main as demo_main
from pipeline.demo.downstream import epochs_for_subset, percent, plan_runs, subset_size
from pipeline.demo.layout import CLASSIFY_TRAIN, FOLDS, SIZES, DemoLayout
from pipeline.demo.layout import ROOT as ROOT_DIR
from pipeline.demo.steps import (
    FINETUNE_BATCH_SIZE,
    Step,
    StepFailed,
    StepProgress,
    evaluation_lines,
    progress_line,
    run_step,
    step_environment,
)

SMALL = SIZES["small"]
RUNS = plan_runs(SMALL.finetune_fractions, SMALL.finetune_seeds, SMALL.finetune_learning_rates)
STEP_LOGS = ["vocabulary", "preprocess", "pretrain", *(run.name for run in RUNS)]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.demo", "--size", "small", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return DemoLayout(output), result.stdout


@pytest.mark.slow
def test_small_demo_writes_every_artefact_and_a_report_that_matches_them(small_demo):
    layout, stdout = small_demo
    summary = json.loads(layout.summary_json.read_text())
    table = layout.summary_markdown.read_text()
    lines = table.splitlines()
    assert table in stdout
    assert f"MLflow UI: `{summary['mlflow_ui']}`" in table and f"sqlite:///{layout.mlflow}" in summary["mlflow_ui"]
    assert sorted(p.stem for p in layout.logs.glob("*.log")) == sorted(STEP_LOGS)
    assert list(summary["timings_s"]) == STEP_LOGS
    for number, name in enumerate(STEP_LOGS, 1):
        assert f"[{number}/{len(STEP_LOGS)}] " in stdout and f"{name}.log)" in stdout

    # Pretraining: the last held-out evaluation is at the last step, on every validation sequence; the
    # headline is the gain at [MASK] positions over the unigram guess there.
    held_out = summary["pretraining"]["held_out"]
    assert summary["pretraining"]["steps"] == held_out["step"] == SMALL.pretrain_steps
    assert held_out["eval_sequences"] == summary["dataset"]["validation_sequences"] > 0
    assert 0 < held_out["eval_mask_tokens"] <= held_out["eval_masked_tokens"]
    for key in ("mask", "keep", "random", "nsp", "mlm"):
        assert 0 <= held_out[f"eval_{key}_accuracy"] <= 1
    assert held_out["eval_mask_unigram_loss"] > 0 and held_out["eval_mask_loss"] > 0
    assert held_out["eval_mask_gain"] == pytest.approx(held_out["eval_mask_unigram_loss"] - held_out["eval_mask_loss"])
    metrics = [json.loads(line) for line in (layout.pretrain / "metrics.jsonl").read_text().splitlines()]
    assert held_out == [r for r in metrics if "eval_mask_gain" in r][-1]
    assert (
        f"| **gain over the unigram guess at [MASK] positions, nats** | **{held_out['eval_mask_gain']:.3f}** | 0 |"
        in lines
    )
    assert (
        f"| loss at [MASK] positions ({held_out['eval_mask_tokens']:,} tokens) | {held_out['eval_mask_loss']:.3f} | "
        f"{held_out['eval_mask_unigram_loss']:.3f} (unigram guess) |" in lines
    )
    assert any(
        "kept-token positions" in line and "copyable" in line and f"| {held_out['eval_keep_accuracy']:.3f} |" in line
        for line in lines
    )
    assert not any("masked-LM accuracy" in line for line in lines)

    # The NSP baseline, recounted from the validation shards with tarfile and msgpack alone.
    labels = []
    for shard in sorted(layout.dataset.glob("validation-*.tar")):
        with tarfile.open(shard) as tar:
            labels += [msgpack.unpackb(tar.extractfile(m).read())["next_sentence_label"] for m in tar.getmembers()]
    assert len(labels) == held_out["eval_sequences"]
    assert held_out["eval_nsp_majority"] == pytest.approx(max(labels.count(0), labels.count(1)) / len(labels))
    assert (
        f"| next-sentence accuracy ({held_out['eval_sequences']:,} pairs) | {held_out['eval_nsp_accuracy']:.3f} | "
        f"{held_out['eval_nsp_majority']:.3f} (majority share) |" in lines
    )

    # The task: the labelled file dealt into folds; seed 0 tests on fold 0, chooses on 20% of the other folds and
    # trains on the rest; the subset of a fraction below 1 is drawn from the training part.
    source = [line for line in CLASSIFY_TRAIN.read_text().splitlines() if line.strip()]
    train, validation, test = (
        path.read_text().splitlines() for path in (layout.task_train(0), layout.task_validation(0), layout.task_test(0))
    )
    assert sorted(train + validation + test) == sorted(source) and not set(train) & set(validation + test)
    assert len(test) == len(source) // FOLDS
    assert [json.loads(line)["label"] for line in test].count("c-api") == len(test) // 2
    tuning = summary["finetuning"]
    test_labels = [json.loads(line)["label"] for line in test]
    assert tuning["examples"]["labelled"] == len(source) and tuning["examples"]["folds"] == FOLDS
    assert tuning["examples"]["train"][0] == len(train) and tuning["examples"]["validation"][0] == len(validation)
    assert tuning["examples"]["test"][0] == len(test_labels)
    assert tuning["test_majority_share"] == 0.5  # balanced
    assert tuning["fractions"] == list(SMALL.finetune_fractions) and tuning["seeds"] == [0]
    texts = [json.loads(line)["text"] for line in source]
    assert not any(text in line for line in layout.corpus.read_text().splitlines() for text in texts)

    # Every run: the epoch chosen on validation, then the test file scored once; the report's figures are
    # the runs' own.
    client = MlflowClient(layout.tracking_uri, registry_uri=layout.tracking_uri)
    champion = client.get_model_version_by_alias("bert-demo", "champion")
    assert [(r["arm"], r["fraction"], r["seed"]) for r in tuning["runs"]] == [(r.arm, r.fraction, r.seed) for r in RUNS]
    for run, figures in zip(RUNS, tuning["runs"], strict=True):
        directory = layout.finetune_run(run)
        own = json.loads((directory / "finetune_summary.json").read_text())
        records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        assert own["model"] == "models:/bert-demo@champion" and own["from_scratch"] == (run.arm == "scratch")
        assert own["base_registry_version"] == f"bert-demo/{champion.version}"
        assert own["counts"]["train_examples"] == figures["train_examples"] == subset_size(len(train), run.fraction)
        assert own["counts"]["validation_examples"] == len(validation)
        assert own["counts"]["test_examples"] == len(test_labels)
        assert figures["test_accuracy"] == own["test"]["accuracy"] == records[-1]["test_accuracy"]
        assert figures["best_epoch"] == own["best_epoch"] == records[-1]["best_epoch"]
        by_epoch = figures["validation_accuracy_by_epoch"]
        epochs = epochs_for_subset(figures["train_examples"], len(train), SMALL.finetune_epochs, FINETUNE_BATCH_SIZE)
        assert epochs == (2 if run.fraction == 0.5 else 1)  # half the examples: twice the epochs, as many updates
        assert len(by_epoch) == epochs and figures["validation_accuracy"] == max(by_epoch)
        assert 0 <= figures["test_accuracy"] <= 1
        assert (own["registered"] is not None) == run.registered
        assert (directory / "model" / "model.safetensors").is_file()
    for row in tuning["by_fraction"]:
        arms = {r["arm"]: r["test_accuracy"] for r in tuning["runs"] if r["fraction"] == row["fraction"]}
        assert row["pretrained"] == {"mean": arms["pretrained"], "std": None, "n": 1}  # one seed: no spread
        assert row["scratch"] == {"mean": arms["scratch"], "std": None, "n": 1}
        assert row["gap_points"]["mean"] == pytest.approx(100 * (arms["pretrained"] - arms["scratch"]))
        assert row["gap_exceeds_twice_std"] is None
        assert row["train_examples"] == subset_size(len(train), row["fraction"])
        assert (
            f"| {percent(row['fraction'])}% ({row['train_examples']}) | {arms['pretrained']:.3f} | "
            f"{arms['scratch']:.3f} | {row['gap_points']['mean']:+.1f} |" in lines
        )
    assert tuning["verdict"] in lines and "one seed" in tuning["verdict"]

    # The registry: the pretrained champion, and the one classifier registered from it.
    assert summary["pretraining"]["champion"]["version"] == int(champion.version)
    assert int(champion.tags["bertpipe.step"]) == summary["pretraining"]["champion"]["step"]
    assert (layout.pretrain / "exports" / f"step{summary['pretraining']['champion']['step']:08d}").is_dir()
    classifier = client.get_model_version_by_alias("bert-demo-classify", "champion")
    assert [v.version for v in client.search_model_versions("name = 'bert-demo-classify'")] == [classifier.version]
    registered = tuning["registered_run"]
    assert (registered["arm"], registered["fraction"], registered["seed"]) == ("pretrained", 1.0, 0)
    assert registered["registered"].startswith(f"models:/bert-demo-classify/{classifier.version}")

    # The PNG: a real image of the size the report draws (20 x 4.5 inches at 100 dpi).
    png = layout.loss_curves.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (2000, 450)


@pytest.mark.slow
def test_a_second_demo_into_the_same_directory_is_refused_without_overwrite(small_demo, capsys):
    layout, _ = small_demo
    before = layout.summary_json.stat().st_mtime_ns
    assert demo_main(["--size", "small", "--output", str(layout.root)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert layout.summary_json.stat().st_mtime_ns == before


def test_ctrl_c_stops_the_demo_with_a_message_and_exit_code_130(tmp_path):
    """SIGINT to the demo's process group (Ctrl-C in a terminal) ends it and the step it was running."""
    output = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.demo", "--size", "small", "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A shell without job control starts background commands with SIGINT ignored, and Python keeps
        # that; the demo must see SIGINT as a terminal's Ctrl-C delivers it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (output / "logs" / "vocabulary.log").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert re.search(r"demo: interrupted during '[\w-]+'; run again with --overwrite", stderr), stderr[-2000:]
    assert "Traceback" not in stderr


def test_the_demo_refuses_to_start_beside_a_default_hostfile(tmp_path, monkeypatch, capsys):
    import pipeline.demo.__main__ as demo

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-001 slots=8\n")
    monkeypatch.setattr(demo, "DEFAULT_HOSTFILE", hostfile)
    assert demo.main(["--size", "small", "--output", str(tmp_path / "demo")]) == 2
    assert f"demo: {hostfile} exists" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_the_demo_outside_a_checkout_says_what_it_needs(tmp_path):
    """The packages alone, as an installed copy has them (no tests/data, no launch/): a clear refusal, exit 2,
    and nothing written."""
    import shutil

    for package in ("model", "preprocessing", "pipeline"):
        shutil.copytree(ROOT_DIR / package, tmp_path / "site" / package, ignore=shutil.ignore_patterns("__pycache__"))
    output = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.demo", "--output", str(output)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("demo: the demo runs from a checkout of the repository")
    assert "tests/data/pydocs/demo_corpus.txt" in result.stderr and "launch/pretrain.sh" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


def test_overwrite_removes_the_demo_outputs_and_nothing_else(tmp_path):
    layout = DemoLayout(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "finetune" / "pretrained").mkdir(parents=True)
    layout.summary_json.write_text("{}")
    layout.logs.mkdir()
    assert {p.name for p in layout.existing_outputs()} == {"finetune", "summary.json", "logs"}
    layout.remove_outputs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_steps_run_on_cpu_on_this_machine_whatever_the_environment_says(tmp_path):
    base = {"PATH": "/usr/bin", "HOSTFILE": "hosts", "SLURM_JOB_NODELIST": "node[1-4]", "RANK": "3", "HOME": "/h"}
    env = step_environment(DemoLayout(tmp_path), base)
    assert not {"HOSTFILE", "SLURM_JOB_NODELIST", "RANK"} & set(env)
    assert env["DS_ACCELERATOR"] == "cpu" and env["BERTPIPE_PYTHON"] == sys.executable and env["HOME"] == "/h"
    assert env["BERTPIPE_CACHE"] == str(tmp_path / "cache") and env["PATH"].endswith(os.pathsep + "/usr/bin")


def test_a_failing_step_names_itself_and_shows_its_log(tmp_path):
    layout = DemoLayout(tmp_path)
    step = Step("broken", "a step that fails", [sys.executable, "-c", "print('what went wrong'); raise SystemExit(3)"])
    with pytest.raises(StepFailed, match=r"step 'broken' failed \(exit code 3\)") as error:
        run_step(step, layout, dict(os.environ))
    assert "what went wrong" in str(error.value) and str(layout.logs / "broken.log") in str(error.value)


def test_progress_shows_the_latest_step_and_each_evaluation_once(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    assert progress_line(metrics, 100) is None  # not written yet
    records = [
        {"step": 10, "loss": 7.5},
        {"step": 20, "loss": 6.25},
        {"step": 20, "eval_mlm_loss": 6.0, "eval_mlm_accuracy": 0.125, "eval_masked_tokens": 9},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert progress_line(metrics, 100) == "step 20/100, loss 6.250"
    assert evaluation_lines(metrics, 0) == ["held out (step 20): mlm loss 6.000, mlm accuracy 0.125"]
    assert evaluation_lines(metrics, 1) == []  # each evaluation is shown once


def test_progress_line_shows_a_pretraining_evaluation_against_its_baselines(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [
        {"step": 6, "loss": 7.5},
        {
            "step": 6,
            "eval_mlm_loss": 7.0,
            "eval_mask_loss": 7.25,
            "eval_mask_unigram_loss": 7.5,
            "eval_mask_gain": 0.25,
            "eval_mask_accuracy": 0.125,
            "eval_nsp_accuracy": 0.5,
            "eval_nsp_majority": 0.625,
        },
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert evaluation_lines(metrics, 0) == [
        "held out (step 6): [MASK] loss 7.250 (unigram guess 7.500, gain 0.250 nats), "
        "[MASK] accuracy 0.125, NSP accuracy 0.500 (majority 0.625)"
    ]


def test_a_running_step_shows_its_announcements_progress_and_evaluations_each_once(tmp_path):
    log, metrics = tmp_path / "step.log", tmp_path / "metrics.jsonl"
    progress = StepProgress(log, metrics, total_steps=100, interval_s=20.0)
    assert progress.new_lines(0.0) == []  # nothing written yet
    log.write_text(
        "pretrain.sh: starting 2 ranks on this machine: python -m deepspeed.launcher.runner --num_gpus 2\n"
        "building DeepSpeed's CPU communication op (once per machine)\n"
        "2026-01-01 10:00:00,000 INFO pipeline.phase: building the model (1,000 parameters)\n"
        "2026-01-01 10:00:00,500 INFO pipeline.handoff.tracking: MLflow run abc at sqlite:///x\n"
        "[2026-01-01 10:00:01] [WARNING] [runner.py:214:fetch_hostfile] Unable to find hostfile\n"
        "2026-01-01 10:00:02,000 INFO pipeline.phase: training from step 0"  # not finished: not shown yet
    )
    assert progress.new_lines(1.0) == [
        "pretrain.sh: starting 2 ranks on this machine",
        "building DeepSpeed's CPU communication op (once per machine)",
        "building the model (1,000 parameters)",
    ]
    with log.open("a") as handle:
        handle.write(" to 100\n")
    metrics.write_text(json.dumps({"step": 10, "loss": 7.5}) + "\n")
    assert progress.new_lines(2.0) == ["training from step 0 to 100", "step 10/100, loss 7.500"]
    with metrics.open("a") as handle:
        handle.write(json.dumps({"step": 20, "loss": 7.0}) + "\n")
        handle.write(json.dumps({"step": 20, "eval_mlm_loss": 6.5, "eval_mlm_accuracy": 0.25}) + "\n")
    assert progress.new_lines(3.0) == ["held out (step 20): mlm loss 6.500, mlm accuracy 0.250"]  # within 20 s
    assert progress.new_lines(30.0) == ["step 20/100, loss 7.000"]
    assert progress.new_lines(60.0) == []  # nothing new


@pytest.mark.parametrize("flag", ["--pretrain-steps", "--finetune-epochs", "--finetune-seeds"])
def test_a_count_below_one_is_a_usage_error(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--output", str(tmp_path / "demo"), flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_the_corpus_builder_refuses_an_exclude_list_naming_unknown_files(tmp_path):
    sources = tmp_path / "_sources"
    (sources / "tutorial").mkdir(parents=True)
    (sources / "tutorial" / "intro.rst.txt").write_text("Intro\n=====\n\nSome text.\n")
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("tutorial/intro.rst.txt\nc-api/missing.rst.txt\n")
    script = ROOT_DIR / "tests" / "data" / "pydocs" / "build_corpus.py"
    result = subprocess.run(
        [sys.executable, str(script), str(sources), "--exclude-list", str(exclude), "--out", str(tmp_path / "c.txt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "names files that are not among the inputs: ['c-api/missing.rst.txt']" in result.stderr
    assert not (tmp_path / "c.txt").exists()
