"""The benchmark scripts run and write what RESULTS.md quotes (small sizes; nothing is timed here)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_model_step_benchmark_writes_json(tmp_path, dtype):
    out = tmp_path / "model_step.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/model_step.py"),
            "--preset",
            "tiny",
            "--batch",
            "4",
            "--seq",
            "32",
            "--steps",
            "2",
            "--dtype",
            dtype,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["masked_per_sequence"] == 5  # round(0.15 * 32)
    assert set(result["results"]) == {"ours", "transformers"}
    for run in result["results"].values():
        assert len(run["step_s_all"]) == 2 and run["sequences_per_s"] > 0
    ratio = result["results"]["transformers"]["step_s_median"] / result["results"]["ours"]["step_s_median"]
    assert result["speedup_vs_transformers"] == pytest.approx(ratio)
    losses = result["initial_loss"]
    assert losses["ours"] == pytest.approx(losses["transformers"], rel=1e-4 if dtype == "fp32" else 5e-2)


@pytest.mark.slow
def test_preprocess_benchmark_writes_json(tmp_path):
    out = tmp_path / "preprocess.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/preprocess.py"), "--corpus-mb", "1", "--scale", "2", "--repeat", "1",
         "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text())
    one, two, scaled, scaled_one = result["runs"]
    assert (one["workers"], two["workers"], scaled["workers"], scaled_one["workers"]) == (1, 2, 2, 1)
    assert scaled["output_tokens"] == scaled_one["output_tokens"]
    assert one["output_tokens"] == two["output_tokens"] > 0  # same corpus, same dataset
    assert scaled["corpus_bytes"] >= 2 * one["corpus_bytes"] * 0.95
    assert all(run["peak_rss_bytes"] > 0 for run in result["runs"])
    assert result["speedup_2_workers"] == pytest.approx(two["tokens_per_s"] / one["tokens_per_s"])


@pytest.mark.slow
def test_loader_benchmark_writes_json(tmp_path):
    out = tmp_path / "loader.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/loader.py"), "--dupe-factor", "1", "--shard-mb", "0.1",
         "--samples", "2000", "--batch", "8", "--repeat", "1", "--work", str(tmp_path / "work"), "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = json.loads(out.read_text())
    dataset = result["dataset"]
    assert dataset["train_shards"] >= 2 and sum(dataset["shard_samples"]) == dataset["train_samples"] > 0
    assert result["max_seq_length"] == 128 and result["cores"] > 0 and result["cpu_model"]
    epochs = result["epochs_per_measurement"]
    assert epochs == -(-2000 // dataset["train_samples"])  # whole epochs, at least --samples
    assert result["samples_per_measurement"] == epochs * dataset["train_samples"] // 8 * 8
    assert set(result["results"]) == {
        "ours", "ours_no_checksum", "ours_remask", "webdataset",
        "floor_webdataset_members", "floor_our_shard_read", "floor_our_shard_read_no_checksum",
    }  # fmt: skip
    for run in result["results"].values():
        assert run["samples"] >= result["samples_per_measurement"] and run["samples_per_s"] > 0
        assert len(run["samples_per_s_all"]) == 1
    assert set(result["stages_us_per_sample"]) == {"plan", "decode", "collate", "remask"}
    assert all(us > 0 for us in result["stages_us_per_sample"].values())
    rates = {name: run["samples_per_s"] for name, run in result["results"].items()}
    assert result["ratio_ours_to_reference"] == pytest.approx(rates["ours"] / rates["webdataset"])
    assert result["ratio_ours_remask_to_reference"] == pytest.approx(rates["ours_remask"] / rates["webdataset"])


def _report():
    sys.path.insert(0, str(ROOT))
    from benchmarks import report

    return report


def test_results_md_tables_are_the_ones_the_shipped_json_gives():
    """RESULTS.md as committed is what `benchmarks/report.py` makes of benchmarks/results/."""
    report = _report()
    markdown = (ROOT / "benchmarks/RESULTS.md").read_text()
    assert report.render(markdown, ROOT / "benchmarks/results") == markdown


def test_report_fills_each_block_from_its_json_and_keeps_the_prose(tmp_path):
    report = _report()
    results = tmp_path / "results"
    results.mkdir()
    step = json.loads((ROOT / "benchmarks/results/model_step_cpu_mini.json").read_text())
    step["results"]["ours"]["step_s_median"] = 0.5
    step["results"]["ours"]["sequences_per_s"] = 64.0
    step["speedup_vs_transformers"] = 1.5  # under the 2x goal
    (results / "model_step_cpu_mini.json").write_text(json.dumps(step))
    blocks = "".join(f"prose {name}\n<!-- begin {name} -->\nstale\n<!-- end {name} -->\n" for name in report.BLOCKS)
    rendered = report.render(blocks, results)
    assert "stale" not in rendered and all(f"prose {name}\n" in rendered for name in report.BLOCKS)
    assert "| ours | 500.0 | 64.0 | 1.50x |" in rendered
    assert "Goal: >= 2x Hugging Face: **missed** (1.50x)." in rendered
    # No JSON for the others: the block says how to produce it.
    assert "Not measured yet: `python benchmarks/run_all.py --only loader`." in rendered
    assert "Not measured yet: `make bench on a machine with a GPU`." in rendered


def test_report_refuses_a_results_md_without_its_markers():
    report = _report()
    with pytest.raises(ValueError, match="lacks the markers <!-- begin model_step_cpu -->"):
        report.render("no markers here\n", ROOT / "benchmarks/results")


def _learning():
    sys.path.insert(0, str(ROOT))
    from benchmarks import learning

    return learning


def test_learning_time_per_step_leaves_out_start_up_and_evaluations():
    learning = _learning()
    # logged at steps 2, 4, 6 (2 s per step); an evaluation of 3 s after step 4 and one after step 6
    step_times = {2: 14.0, 4: 18.0, 6: 25.0}
    per_step = learning.training_seconds_per_step(step_times, {4: 3.0, 6: 5.0})
    assert per_step == pytest.approx(2.0)
    assert learning.startup_seconds(step_times, per_step) == pytest.approx(10.0)
    assert learning.training_seconds_per_step({6: 25.0}, {}) is None
    assert learning.evaluation_steps(6, 3) == [3, 6] and learning.evaluation_steps(7, 3) == [3, 6, 7]
    assert learning.logged_steps(7, 3) == [3, 6, 7]
    assert learning.log_every_for(10, 300) == 10 and learning.log_every_for(10, 3) == 1


def test_learning_aggregates_seeds_per_figure_and_per_shared_step():
    learning = _learning()
    assert learning.mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert learning.mean_std([4.0]) == {"mean": 4.0, "std": None, "n": 1}
    curves = [
        [{"step": 3, "mask_loss": 6.0, "wall_s": 10.0}, {"step": 6, "mask_loss": 5.0, "wall_s": 20.0}],
        [{"step": 3, "mask_loss": 7.0, "wall_s": 12.0}],  # a shorter curve: only the shared step counts
    ]
    (point,) = learning.aggregate_curves(curves)
    assert point["step"] == 3 and point["mask_loss"]["mean"] == 6.5 and point["wall_s"]["mean"] == 11.0
    assert learning.finite_or_none({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}
    assert learning.deepspeed_for_batch({"train_micro_batch_size_per_gpu": 32}, 64, 2) is None
    changed = learning.deepspeed_for_batch({"train_micro_batch_size_per_gpu": 32, "bf16": {}}, 16, 2)
    assert changed == {"train_batch_size": 16, "gradient_accumulation_steps": 1, "bf16": {}}


def downstream_run(seed: int, by_fraction_and_rate: dict[tuple[float, float], tuple[float, float]]) -> dict:
    """A benchmark run's fine-tunings: (fraction, rate) -> (validation accuracy, test accuracy)."""
    tunings = [
        {"fraction": fraction, "train_examples": int(256 * fraction), "learning_rate": rate,
         "accuracy_validation": validation, "accuracy_test": test}
        for (fraction, rate), (validation, test) in by_fraction_and_rate.items()
    ]  # fmt: skip
    return {"seed": seed, "downstream_by_rate": tunings}


def test_learning_gaps_pair_each_seed_with_random_weights_at_the_rates_validation_chose():
    learning = _learning()
    ours = [
        downstream_run(1, {(0.1, 1e-3): (0.7, 0.70), (0.1, 3e-4): (0.6, 0.90), (1.0, 1e-3): (0.9, 0.88)}),
        downstream_run(2, {(0.1, 1e-3): (0.8, 0.80), (0.1, 3e-4): (0.6, 0.95), (1.0, 1e-3): (0.9, 0.86)}),
    ]
    random_weights = [
        downstream_run(1, {(0.1, 1e-3): (0.5, 0.50), (0.1, 3e-4): (0.6, 0.55), (1.0, 1e-3): (0.9, 0.90)}),
        downstream_run(2, {(0.1, 1e-3): (0.5, 0.60), (0.1, 3e-4): (0.6, 0.60), (1.0, 1e-3): (0.9, 0.86)}),
    ]
    arms = {"ours": {"runs": ours}, "random": {"runs": random_weights}}
    (low, full) = learning.downstream_gaps(arms)["ours"]
    # 10%: ours at 1e-3 (validation 0.75 against 0.6), random at 3e-4 (0.6 against 0.5): gaps +15 and +20
    assert low["fraction"] == 0.1 and low["train_examples"] == 25
    assert low["learning_rates"] == {"ours": 1e-3, "random": 3e-4}
    assert low["pretrained"]["mean"] == pytest.approx(0.75) and low["random"]["mean"] == pytest.approx(0.575)
    assert low["gap_points"]["mean"] == pytest.approx(17.5) and low["gap_points"]["std"] == pytest.approx(5 / 2**0.5)
    assert low["gap_over_twice_std"] is True
    # 100%: -2 and 0 points, within twice their std
    assert full["gap_points"]["mean"] == pytest.approx(-1.0) and full["gap_over_twice_std"] is False
    assert learning.downstream_gaps({"ours": {"runs": ours}}) == {}  # nothing to compare with
    table = "\n".join(_report().downstream_by_fraction(learning.downstream_gaps(arms)))
    assert "| 10% (25) | 0.750 ± 0.071 (lr 0.001) | 0.575 ± 0.035 (lr 0.0003) | **+17.5 ± 3.5** |" in table
    assert "| 100% (256) | 0.870 ± 0.014 (lr 0.001) | 0.880 ± 0.028 (lr 0.001) | -1.0 ± 1.4 |" in table


def test_learning_task_files_hold_the_demos_subsets_for_the_seeds(tmp_path):
    learning = _learning()
    layout = learning.demo_split(tmp_path, (0.1, 1.0), (1, 2))
    for seed in (1, 2):
        subset, train = layout.task_subset(0.1, seed), layout.task_train(seed % 3)
        lines = set(subset.read_text().splitlines())
        assert len(lines) == 26 and lines <= set(train.read_text().splitlines())
    before = layout.corpus.stat().st_mtime_ns
    assert learning.demo_split(tmp_path, (0.1,), (2,)) == layout and layout.corpus.stat().st_mtime_ns == before
    learning.demo_split(tmp_path, (0.3,), (2,))  # a subset it lacks: written
    assert layout.task_subset(0.3, 2).is_file()


def test_learning_resume_reuses_finished_arms_only_from_the_same_inputs(tmp_path):
    learning = _learning()
    config, dataset = tmp_path / "config", tmp_path / "data"
    for directory, name in ((config, "train.json"), (config, "deepspeed.json")):
        directory.mkdir(exist_ok=True)
        (directory / name).write_text("{}")
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"inputs": [{"path": "/corpus.txt", "bytes": 10}]}')
    settings = learning.Settings(
        config=config, steps=6, eval_every=3, log_every=1, batch=64, finetune_epochs=1,
        finetune_learning_rates=(3e-4,), finetune_fractions=(1.0,), dataset=dataset, work=tmp_path / "work",
    )  # fmt: skip
    arms = ["ours", "random"]
    inputs = learning.seed_inputs(settings, arms)
    path = learning.seed_file(settings, 2)
    path.parent.mkdir(parents=True)
    assert learning.finished_arms(path, inputs) is None  # nothing finished yet
    learning.save_seed(path, inputs, {"ours": {"final": {"mask_loss": 4.5, "nsp_accuracy": float("nan")}}})
    assert learning.finished_arms(path, inputs) == {"ours": {"final": {"mask_loss": 4.5, "nsp_accuracy": None}}}
    # whatever changes a seed's results makes it run again
    assert learning.finished_arms(path, learning.seed_inputs(replace(settings, steps=7), arms)) is None
    # another set of arms keeps the finished ones: a seed run without the peer takes it on later
    with_peer = learning.seed_inputs(settings, ["ours", "peer", "random"])
    assert learning.finished_arms(path, with_peer) == {"ours": {"final": {"mask_loss": 4.5, "nsp_accuracy": None}}}
    (dataset / "manifest.json").write_text('{"inputs": [{"path": "/corpus.txt", "bytes": 11}]}')
    assert learning.finished_arms(path, learning.seed_inputs(settings, arms)) is None
    (dataset / "manifest.json").write_text('{"inputs": [{"path": "/corpus.txt", "bytes": 10}]}')
    (config / "deepspeed.json").write_text('{"optimizer": {"type": "AdamW"}}')
    assert learning.finished_arms(path, learning.seed_inputs(settings, arms)) is None
    # other fine-tuning settings keep the pretrained arms and drop only their downstream results
    (config / "deepspeed.json").write_text("{}")
    learning.save_seed(path, inputs, {"ours": {"final": {"mask_loss": 4.5}, "downstream_by_rate": [{"epochs": 1}]}})
    for changed in (replace(settings, finetune_epochs=2), replace(settings, finetune_learning_rates=(1e-3,))):
        pretrained_only = learning.finished_arms(path, learning.seed_inputs(changed, arms))
        assert pretrained_only == {"ours": {"final": {"mask_loss": 4.5}}}
    assert learning.finished_arms(path, learning.seed_inputs(replace(settings, batch=32), arms)) is None
    # a seed whose arms all finished runs nothing and saves nothing
    finished, saved = {"ours": {"final": {"mask_loss": 4.5}, "downstream_by_rate": [{"epochs": 1}]}}, []
    assert learning.run_seed(settings, 2, ["ours"], None, finished, saved.append) == finished and saved == []


def test_a_dataset_is_identified_by_its_contents_not_where_its_input_lay(tmp_path):
    learning = _learning()
    manifest = {
        "inputs": [{"path": "/tmp/a/demo/corpus.txt", "bytes": 10}],
        "tokenizer": {"vocab_sha256": "11"},
        "splits": {"train": {"shards": [{"name": "train-000000.tar", "sha256": "22"}]}},
    }

    def identity(name: str, **changes) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({**manifest, **changes}))
        return learning.dataset_identity(tmp_path / name)

    here = identity("here")
    assert identity("elsewhere", inputs=[{"path": "/work/b/demo/corpus.txt", "bytes": 10}]) == here
    assert identity("longer", inputs=[{"path": "/tmp/a/demo/corpus.txt", "bytes": 11}]) != here
    assert identity("other_vocabulary", tokenizer={"vocab_sha256": "12"}) != here
    assert identity("other_shard", splits={"train": {"shards": [{"name": "train-000000.tar", "sha256": "23"}]}}) != here


def test_learning_extends_only_a_result_made_with_the_same_inputs(tmp_path):
    learning = _learning()
    inputs = {"arms": ["ours", "random"], "steps": 6, "dataset": "ab12"}
    runs = {
        "ours": {"runs": [{"seed": 1, "final": {"mask_loss": 4.5}}, {"seed": 2, "final": {"mask_loss": 4.4}}]},
        "random": {"runs": [{"seed": 1, "final": {"mask_loss": 9.0}}, {"seed": 2, "final": {"mask_loss": 9.1}}]},
    }
    path = tmp_path / "learning.json"
    path.write_text(json.dumps({"seed_inputs": inputs, "arms": runs}))
    assert learning.seeds_of_result(path, inputs) == {
        1: {"ours": {"final": {"mask_loss": 4.5}}, "random": {"final": {"mask_loss": 9.0}}},
        2: {"ours": {"final": {"mask_loss": 4.4}}, "random": {"final": {"mask_loss": 9.1}}},
    }
    with pytest.raises(learning.ExtendError, match="other dataset, steps than this run"):
        learning.seeds_of_result(path, {**inputs, "steps": 7, "dataset": "cd34"})
    path.write_text(json.dumps({"arms": runs}))  # written before results recorded their inputs
    with pytest.raises(learning.ExtendError, match="does not record what its seeds depend on"):
        learning.seeds_of_result(path, inputs)
    with pytest.raises(learning.ExtendError, match="cannot read the result to extend"):
        learning.seeds_of_result(tmp_path / "absent.json", inputs)


@pytest.mark.slow
def test_learning_benchmark_writes_json_table_and_plot(tmp_path):
    learning, report = _learning(), _report()
    out = tmp_path / "results"
    command = [
        sys.executable, str(ROOT / "benchmarks/learning.py"), "--steps", "6", "--eval-every", "3", "--seeds", "1",
        "--finetune-epochs", "1", "--finetune-learning-rates", "3e-4", "--finetune-fractions", "1",
        "--dupe-factor", "1", "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip
    subprocess.run([*command, "--output-dir", str(out)], check=True, capture_output=True, text=True, timeout=900)
    result = json.loads((out / "learning.json").read_text())
    assert (out / "learning.png").stat().st_size > 0
    assert result["cores"] > 0 and result["cpu_model"] and result["sequences"] == 6 * 64
    assert result["seeds"] == [1] and set(result["arms"]) == {"ours", "peer", "random"}
    finals = {}
    for arm, steps in (("ours", [3, 6]), ("peer", [3, 6]), ("random", [0])):
        (run,) = result["arms"][arm]["runs"]
        assert [point["step"] for point in run["curve"]] == steps
        for point in run["curve"]:
            missing = [key for key in learning.HEADLINE if point[key] is None or not math.isfinite(point[key])]
            assert not missing, f"{arm} at step {point['step']}: {missing} not finite (null in the JSON)"
        finals[arm] = run["final"]
        downstream = run["downstream"]
        assert 0 <= downstream["accuracy_test"] <= 1 and 0 <= downstream["accuracy_validation"] <= 1
        assert len(downstream["accuracy_by_epoch"]) == 1 and downstream["learning_rate"] == 3e-4
        assert result["arms"][arm]["summary"]["finetune_learning_rate"] == 3e-4
        summary = result["arms"][arm]["summary"]
        assert summary["final"]["mask_loss"] == {"mean": run["final"]["mask_loss"], "std": None, "n": 1}
        if arm != "random":
            walls = [point["wall_s"] for point in run["curve"]]
            assert 0 < walls[0] < walls[1] and run["seconds_per_step"] > 0
    # Every arm is scored on the same held-out positions against the same unigram guess.
    for key in ("mask_unigram_loss", "mask_tokens", "nsp_majority", "sequences"):
        assert finals["ours"][key] == pytest.approx(finals["peer"][key], rel=1e-9) == finals["random"][key]
    per_step = {arm: result["arms"][arm]["runs"][0]["seconds_per_step"] for arm in ("ours", "peer")}
    assert result["wall_per_step_ratio_ours_to_peer"] == pytest.approx(per_step["ours"] / per_step["peer"])
    for arm in ("ours", "peer"):
        (gap,) = result["downstream_gaps"][arm]
        pretrained = result["arms"][arm]["runs"][0]["downstream"]["accuracy_test"]
        random_weights = result["arms"]["random"]["runs"][0]["downstream"]["accuracy_test"]
        assert gap["fraction"] == 1.0
        assert gap["gap_points"]["mean"] == pytest.approx(100 * (pretrained - random_weights))
    table = "\n".join(report.learning(out))
    assert "| transformers `Trainer` |" in table and "Wall time per training step, ours / transformers" in table

    # Run again with --resume: the finished seed is read back, nothing is trained again.
    trained = tmp_path / "work" / "runs" / "seed1" / "ours" / "pretrain" / "metrics.jsonl"
    written = trained.stat().st_mtime_ns
    again = subprocess.run(
        [*command, "--resume", "--output-dir", str(tmp_path / "again")], check=True, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert "finished earlier" in again.stdout and trained.stat().st_mtime_ns == written
    assert json.loads((tmp_path / "again" / "learning.json").read_text())["arms"] == result["arms"]
    # --resume with another fine-tuning setting fine-tunes the same pretrained models again, for 2 epochs: here
    # first without the peer, whose record the seed keeps, so that a run with it fine-tunes only the peer again
    without_peer = subprocess.run(
        [*command, "--resume", "--skip-peer", "--finetune-epochs", "2", "--output-dir", str(tmp_path / "no_peer")],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert without_peer.stdout.count("fine-tuned again") == 2
    seed_record = json.loads((tmp_path / "work" / "runs" / "seed1" / "seed.json").read_text())
    assert set(seed_record["runs"]) == {"ours", "peer", "random"}
    retuned = subprocess.run(
        [*command, "--resume", "--finetune-epochs", "2", "--output-dir", str(tmp_path / "retuned")],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert retuned.stdout.count("finished earlier") == 2 and retuned.stdout.count("fine-tuned again") == 1
    assert "seed 1 peer  : pretrained earlier, fine-tuned again" in retuned.stdout
    assert trained.stat().st_mtime_ns == written
    arms = json.loads((tmp_path / "retuned" / "learning.json").read_text())["arms"]
    for arm, entry in arms.items():
        (run,) = entry["runs"]
        assert run["curve"] == result["arms"][arm]["runs"][0]["curve"]
        assert len(run["downstream"]["accuracy_by_epoch"]) == run["downstream"]["epochs"] == 2
    # --extend (no --resume) from a new work directory: the dataset built there is the same (vocabulary and
    # shards), so the seed the result holds is taken from the result and nothing is trained
    elsewhere = [*command[: command.index("--workdir")], "--workdir", str(tmp_path / "elsewhere")]
    extended = subprocess.run(
        [*elsewhere, "--extend", str(out / "learning.json"), "--output-dir", str(tmp_path / "ext")],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "finished earlier" in extended.stdout and not (tmp_path / "elsewhere" / "runs" / "seed1" / "ours").exists()
    assert json.loads((tmp_path / "ext" / "learning.json").read_text())["arms"] == result["arms"]
    # shards made with another dupe factor are not taken for these
    other = subprocess.run([*command, "--dupe-factor", "2"], capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "--dupe-factor 1, not 2" in other.stderr


@pytest.mark.slow
def test_packing_benchmark_writes_json(tmp_path):
    out = tmp_path / "packing.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/packing.py"), "--preset", "tiny", "--lengths", "128", "--batches", "4",
         "--timed", "1", "--repeat", "1", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (result,) = json.loads(out.read_text())["results"]
    share, losses = result["padding_share"], result["first_batch_loss"]
    assert 0 <= share["packed"] < share["padded"] < 1  # the bundled corpus has short pairs to pack
    assert result["rows_per_batch"]["padded"] == 32 > result["rows_per_batch"]["packed"]
    assert losses["packed"] == pytest.approx(losses["padded"], abs=1e-5)
    assert result["ideal_speedup"] == pytest.approx((1 - share["packed"]) / (1 - share["padded"]))
    assert result["speedup"] == pytest.approx(
        result["real_tokens_per_s"]["packed"] / result["real_tokens_per_s"]["padded"]
    )


@pytest.mark.slow
def test_compressed_memory_benchmark_writes_json(tmp_path):
    out = tmp_path / "compressed_memory.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/compressed_memory.py"), "--sizes-mb", "1", "2", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text())
    small, large = result["runs"]
    assert (small["text_mb"], large["text_mb"]) == (1, 2) and small["workers"] == large["workers"] == 1
    assert 0 < small["compressed_bytes"] < large["compressed_bytes"] < 2 * 2**20  # the text compresses
    assert 1.5 < large["output_tokens"] / small["output_tokens"] < 2.5
    assert result["peak_rss_growth"] == pytest.approx(large["peak_rss_bytes"] / small["peak_rss_bytes"] - 1)


def test_learning_resume_without_a_work_directory_is_refused(monkeypatch, capsys):
    learning = _learning()
    monkeypatch.setattr(sys, "argv", ["learning.py", "--resume"])
    with pytest.raises(SystemExit) as exit_info:
        learning.main()
    assert exit_info.value.code == 2 and "--resume needs the --workdir" in capsys.readouterr().err


def _task_reference():
    sys.path.insert(0, str(ROOT))
    from benchmarks import task_reference

    return task_reference


def test_tf_idf_weighs_counts_by_rarity_over_the_training_vocabulary_and_has_unit_rows():
    task_reference = _task_reference()
    training = ["The GIL, the GIL.", "Py_INCREF(obj) the"]
    vocab = task_reference.vocabulary(training)
    assert vocab == {"gil": 0, "obj": 1, "py_incref": 2, "the": 3}
    idf = task_reference.inverse_document_frequency(training, vocab)
    rare = math.log(3 / 2) + 1  # in one text of two
    assert idf.tolist() == pytest.approx([rare, rare, rare, 1.0])  # "the" is in both
    features = task_reference.tf_idf(["the gil gil and the gil", "nothing known"], vocab, idf)
    raw = [3 * rare, 0, 0, 2 * 1.0]
    norm = math.sqrt(sum(x * x for x in raw))
    assert features[0].tolist() == pytest.approx([x / norm for x in raw])
    assert features[1].tolist() == [0, 0, 0, 0]


def test_logistic_regression_separates_separable_data_and_l2_shrinks_it():
    task_reference = _task_reference()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 5, generator=generator)
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).long()
    weak = task_reference.fit_logistic(features, labels, 2, l2=1e-4)
    strong = task_reference.fit_logistic(features, labels, 2, l2=1.0)
    assert task_reference.accuracy(weak, features, labels) >= 0.98  # a linear boundary: nearly every point
    assert strong.weight.norm() < 0.2 * weak.weight.norm()
    # the fit starts from zero weights: the same data give the same weights
    again = task_reference.fit_logistic(features, labels, 2, l2=1e-4)
    assert torch.equal(again.weight, weak.weight)


def test_the_l2_strength_is_the_one_validation_prefers():
    task_reference = _task_reference()
    generator = torch.Generator().manual_seed(1)
    signal = torch.randn(40, 1, generator=generator)
    noise = torch.randn(40, 30, generator=generator)  # 30 noise features that 40 examples can be fitted on
    features, labels = torch.cat([signal, noise], dim=1), (signal[:, 0] > 0).long()
    held_signal = torch.randn(400, 1, generator=generator)
    held = (torch.cat([held_signal, torch.randn(400, 30, generator=generator)], dim=1), (held_signal[:, 0] > 0).long())
    figures = task_reference.score((features, labels), held, held, 2)
    by_l2 = {
        l2: task_reference.accuracy(task_reference.fit_logistic(features, labels, 2, l2), *held)
        for l2 in task_reference.L2_STRENGTHS
    }
    best = max(by_l2.values())
    assert figures["validation_accuracy"] == best == figures["test_accuracy"]
    assert figures["l2"] == max(l2 for l2, value in by_l2.items() if value == best)  # a tie: the stronger


@pytest.mark.slow
def test_task_reference_benchmark_writes_json_and_its_table(tmp_path, reference_bert_dir):
    out = tmp_path / "results" / "task_reference.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/task_reference.py"), "--seeds", "2", "--fractions", "0.3", "1",
         "--pretrained", str(reference_bert_dir), "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["seeds"] == [2] and result["folds"] == 3 and result["pretrained"] == str(reference_bert_dir)
    runs = {(r["reference"], r["fraction"]): r for r in result["runs"]}
    names = ("words", "reference_encoder", "pretrained_cls", "pretrained_pooler", "random_cls")
    assert set(runs) == {(name, f) for name in names for f in (0.3, 1.0)}
    # the real encoder's frozen [CLS] state knows the task from 77 paragraphs; random weights' hardly does
    assert runs[("pretrained_cls", 0.3)]["test_accuracy"] > runs[("random_cls", 0.3)]["test_accuracy"] + 0.1
    assert {r["train_examples"] for r in result["runs"]} == {77, 256}  # the demo's subsets of fold 2
    for run in runs.values():
        assert run["fold"] == 2 and run["l2"] in _task_reference().L2_STRENGTHS
        assert 0.5 < run["test_accuracy"] <= 1  # both learn the two-label task from 77 paragraphs
    summary = result["summary"]["words"][1]
    assert summary["fraction"] == 1.0
    assert summary["test_accuracy"] == {"mean": runs[("words", 1.0)]["test_accuracy"], "std": None, "n": 1}
    table = "\n".join(_report().task_reference(out.parent))
    assert "| 30% (77) |" in table and "| 100% (256) |" in table and "random weights, frozen [CLS] state" in table


def test_task_reference_fine_tunes_the_reference_encoder_as_learning_fine_tunes_an_arm(tmp_path):
    out = tmp_path / "results" / "task_reference.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/task_reference.py"), "--seeds", "2", "--fractions", "1",
         "--finetune-reference", "1e-4", "--finetune-epochs", "1", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text())
    # launch/finetune.sh on the fold's 256 training paragraphs: the 8 updates of one epoch
    (trial,) = result["finetune_reference"]["trials"]
    assert (trial["fold"], trial["train_examples"], trial["epochs"], trial["learning_rate"]) == (2, 256, 1, 1e-4)
    assert len(trial["accuracy_by_epoch"]) == 1 and trial["accuracy_validation"] == trial["accuracy_by_epoch"][0]
    finetuned = next(r for r in result["runs"] if r["reference"] == "reference_encoder_finetuned")
    assert finetuned["test_accuracy"] == trial["accuracy_test"] > 0.6  # a real encoder learns it in 8 updates
    table = "\n".join(_report().task_reference(out.parent))
    assert "fine-tuned as our model is" in table and " (lr 0.0001) |" in table and "the updates of 1 epochs" in table


def test_fine_tuning_the_reference_without_its_package_is_a_usage_error(monkeypatch, capsys):
    task_reference = _task_reference()
    monkeypatch.setattr(task_reference, "REFERENCE_PACKAGE", "no_such_reference_package")
    monkeypatch.setattr(sys, "argv", ["task_reference.py", "--finetune-reference", "1e-4"])
    with pytest.raises(SystemExit) as stopped:
        task_reference.main()
    assert stopped.value.code == 2
    assert "no_such_reference_package is not installed (`make install` installs it)" in capsys.readouterr().err


def test_the_fine_tuned_reference_keeps_each_fractions_runs_at_the_rate_validation_prefers():
    def trial(seed: int, fraction: float, rate: float, validation: float, test: float) -> dict:
        return {"seed": seed, "fold": seed % 3, "fraction": fraction, "train_examples": int(256 * fraction),
                "learning_rate": rate, "accuracy_validation": validation, "accuracy_test": test}  # fmt: skip

    trials = [
        trial(1, 0.3, 3e-5, 0.80, 0.90), trial(2, 0.3, 3e-5, 0.80, 0.90),  # best test, worse validation
        trial(1, 0.3, 1e-4, 0.90, 0.70), trial(2, 0.3, 1e-4, 0.80, 0.75),
        trial(1, 1.0, 3e-5, 0.75, 0.80), trial(2, 1.0, 3e-5, 1.0, 0.80),
        trial(1, 1.0, 1e-4, 0.875, 0.85), trial(2, 1.0, 1e-4, 0.875, 0.85),  # a tie goes to the smaller rate
    ]  # fmt: skip
    runs = _task_reference().runs_at_chosen_rates(trials)
    assert [(r["fraction"], r["seed"], r["learning_rate"], r["test_accuracy"]) for r in runs] == [
        (0.3, 1, 1e-4, 0.70), (0.3, 2, 1e-4, 0.75), (1.0, 1, 3e-5, 0.80), (1.0, 2, 3e-5, 0.80),
    ]  # fmt: skip
    assert {r["reference"] for r in runs} == {"reference_encoder_finetuned"}


def test_the_features_of_a_frozen_model_are_its_cls_state_pooler_output_or_mean_state(reference_bert_dir, tmp_path):
    task_reference = _task_reference()
    models = task_reference.frozen_models(str(reference_bert_dir), seed=1)
    assert {name: features for name, (_, features) in models.items()} == {
        "pretrained_cls": "cls", "pretrained_pooler": "pooler", "random_cls": "cls",
    }  # fmt: skip
    encoder = models["pretrained_cls"][0]
    tokenizer, model = encoder
    # longest first: the rows come back in the order of the texts, whatever order they were batched in
    texts = ["Py_INCREF takes a new reference to the object it is given.", "The GIL is held."]
    with torch.no_grad():
        output = model(**tokenizer(texts, padding=True, return_tensors="pt"))
    torch.testing.assert_close(task_reference.encode(encoder, texts, "cls"), output.last_hidden_state[:, 0])
    torch.testing.assert_close(task_reference.encode(encoder, texts, "pooler"), output.pooler_output)
    alone = model(**tokenizer(texts[:1], return_tensors="pt")).last_hidden_state[0].mean(dim=0)
    torch.testing.assert_close(task_reference.encode(encoder, texts, "mean")[0], alone, atol=1e-5, rtol=1e-4)
    # every reference's rows from one pass of each model over the seed's texts, repeated texts included
    passes = []
    for encoder_model in {id(m[1]): m[1] for m, _ in models.values()}.values():
        encoder_model.register_forward_hook(lambda module, args, output: passes.append(module))
    encoded = task_reference.EncodedTexts(models, [*texts, texts[0]])
    assert len(passes) == 2 and passes[0] is not passes[1]  # the pretrained model (two features) and random weights
    for name, (_, features) in models.items():
        torch.testing.assert_close(
            encoded.features(name, texts[::-1]), task_reference.encode(models[name][0], texts[::-1], features)
        )
    (tmp_path / "seed1").mkdir()
    with pytest.raises(SystemExit, match="holds no model"):
        task_reference.frozen_models(str(tmp_path / "seed{seed}"), seed=1)
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(reference_bert_dir, partial)
    weights = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "pooler" not in k}, partial / "model.safetensors", {"format": "pt"})
    with pytest.raises(SystemExit, match=r"lacks encoder weights: .*pooler"):
        task_reference.frozen_models(str(partial), seed=1)
