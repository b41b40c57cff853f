"""The tokenizer's sample of a corpus larger than --sample-mb: drawn evenly across every file (windows of
uncompressed files, every n-th document of compressed ones, row groups of Parquet), not its first megabytes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.train_tokenizer import WINDOW_BYTES, SampleRead, plan_sample, sample_paragraphs
from tests.pretrain_runs import ROOT, cpu_env

MB = 1 << 20


def test_a_corpus_that_fits_is_read_whole_in_file_order():
    files = [("a.txt", 3 * MB), ("b.jsonl.gz", MB)]
    assert plan_sample(files, 4 * MB) == [SampleRead("a.txt"), SampleRead("b.jsonl.gz")]


def test_a_larger_corpus_gives_each_file_the_same_share_spread_through_it():
    files = [("a.txt", 30 * MB), ("b.txt.gz", 20 * MB), ("c.parquet", 50 * MB)]
    reads = plan_sample(files, 10 * MB, row_groups={"c.parquet": 20})  # a tenth of 100 MB
    windows = [r for r in reads if r.path == "a.txt"]
    step, length = 30 * MB // 64, 3 * MB // 64  # 64 windows, evenly spaced
    assert [(r.start, r.end) for r in windows] == [(i * step, i * step + length) for i in range(64)]
    assert sum(r.end - r.start for r in windows) == 3 * MB == 30 * MB // 10
    assert all(r.end - r.start <= WINDOW_BYTES for r in windows)
    big = plan_sample([("big.txt", 1000 * MB)], 500 * MB)
    assert len(big) == 500 and {r.end - r.start for r in big} == {WINDOW_BYTES}  # not 64 windows of 8 MiB
    assert len(plan_sample([("small.txt", 100_000)], 10_000)) == 2  # too small a share for 64 windows
    assert [r for r in reads if r.path == "b.txt.gz"] == [SampleRead("b.txt.gz", keep_every=10)]
    assert [r.row_groups for r in reads if r.path == "c.parquet"] == [(0, 10)]


def write_text_corpus(path: Path, documents: int) -> list[str]:
    """Documents of ~2 KB, each line naming its document."""
    names = [f"document{i:05d}" for i in range(documents)]
    with path.open("w", encoding="utf-8") as handle:
        for name in names:
            handle.write("\n".join(f"{name} says line {j} of its text, padded out." * 3 for j in range(12)) + "\n\n")
    return names


def test_the_sample_of_a_text_file_comes_from_its_beginning_middle_and_end(tmp_path):
    corpus = tmp_path / "corpus.txt"
    names = write_text_corpus(corpus, 3000)
    size = corpus.stat().st_size
    reads = plan_sample([(str(corpus), size)], size // 10)
    seen = {paragraph.split()[0] for paragraph in sample_paragraphs(reads, "text", "text")}
    positions = sorted(names.index(name) for name in seen)
    assert 0.05 * len(names) < len(seen) < 0.2 * len(names)  # about a tenth, whole documents
    assert positions[0] < 100 and positions[-1] > 2700  # not the first tenth: across the file
    thirds = [sum(1 for p in positions if k * 1000 <= p < (k + 1) * 1000) for k in range(3)]
    assert max(thirds) <= 2 * min(thirds), thirds


def test_compressed_json_lines_keep_every_nth_document(tmp_path):
    corpus = tmp_path / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as handle:
        for i in range(100):
            handle.write(json.dumps({"body": f"record {i} first paragraph.\nrecord {i} second paragraph."}) + "\n")
    reads = [SampleRead(str(corpus), keep_every=4)]
    paragraphs = list(sample_paragraphs(reads, "jsonl", "body"))
    assert paragraphs[:2] == ["record 0 first paragraph.", "record 0 second paragraph."]
    assert sorted({int(p.split()[1]) for p in paragraphs}) == list(range(0, 100, 4))


def test_parquet_row_groups_are_sampled_and_the_cli_learns_from_them(tmp_path):
    corpus = tmp_path / "corpus.parquet"
    rows = [f"row {i} holds parquetword{i % 7} and other words of its own." for i in range(400)]
    pq.write_table(pa.table({"content": rows}), corpus, row_group_size=40)  # 10 row groups
    reads = [SampleRead(str(corpus), row_groups=(0, 5))]
    numbers = sorted(int(p.split()[1]) for p in sample_paragraphs(reads, "parquet", "content"))
    assert numbers == list(range(0, 40)) + list(range(200, 240))

    out = tmp_path / "tokenizer"
    command = [sys.executable, "-m", "pipeline.cli", "tokenizer", "train", "--input", str(corpus)]
    command += ["--text-field", "content", "--vocab-size", "200", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    vocabulary = (out / "vocab.txt").read_text().split()
    assert {"row", "holds", "words"} <= set(vocabulary)  # the column's words
    bad = subprocess.run(
        [*command[:-2], "--out", str(tmp_path / "other"), "--text-field", "missing"],
        cwd=ROOT,
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "has no column 'missing'" in bad.stderr and "Traceback" not in bad.stderr
