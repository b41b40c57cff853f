"""The benchmark scripts run and write what RESULTS.md quotes (small sizes; nothing is timed here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
