"""`bertpipe tokenizer train` and `launch/preprocess.sh` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "pydocs" / "corpus.txt"
BERTPIPE = str(Path(sys.executable).parent / "bertpipe")
IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def run(*command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **env})


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "part.txt"
    path.write_text("\n\n".join(CORPUS.read_text(encoding="utf-8").split("\n\n")[:80]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, small_corpus) -> Path:
    out = tmp_path_factory.mktemp("tok")
    result = run(
        BERTPIPE, "tokenizer", "train", "--input", str(small_corpus), "--vocab-size", "1500", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "WordPiece vocabulary of 1500 entries (uncased)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    again = run(BERTPIPE, "tokenizer", "train", "--input", str(small_corpus), "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    return out


@pytest.mark.slow
def test_phase_two_preprocessing(tmp_path, small_corpus, tokenizer_dir):
    result = run(
        "launch/preprocess.sh", "--phase", "2", "--input", str(small_corpus), "--tokenizer", str(tokenizer_dir),
        "--output", str(tmp_path), "--dupe-factor", "1", *IN_PROCESS,
        BERTPIPE=BERTPIPE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "seq512" / "manifest.json").read_text())
    assert manifest["parameters"]["max_seq_length"] == 512
    assert manifest["parameters"]["max_predictions_per_seq"] == 80
    assert "random-next share" in result.stdout and "train" in result.stdout


def test_launch_script_rejects_an_unknown_phase(tmp_path):
    result = run("launch/preprocess.sh", "--phase", "3", "--output", str(tmp_path), BERTPIPE=BERTPIPE)
    assert result.returncode == 2 and "--phase must be 1 (seq 128) or 2 (seq 512)" in result.stderr


def test_missing_input_is_a_clear_error(tmp_path, tokenizer_dir):
    result = run(
        BERTPIPE, "preprocess", "--input", str(tmp_path / "nothing-*.txt"), "--tokenizer", str(tokenizer_dir),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "matches no file" in result.stderr and "Traceback" not in result.stderr


def test_tokenizer_training_names_a_parquet_file_it_cannot_read(tmp_path):
    (tmp_path / "docs.parquet").write_bytes(b"PAR1")
    result = run(
        BERTPIPE, "tokenizer", "train", "--input", str(tmp_path / "docs.parquet"), "--out", str(tmp_path / "t")
    )
    assert result.returncode == 2
    assert "docs.parquet is not a readable Parquet file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_local_runners_log_holds_the_jobs_own_lines_only(tmp_path, small_corpus, tokenizer_dir):
    """The default runner (FnApiRunner, a worker process per core): its workers' start-up chatter, each line
    relayed a second time as a protobuf dump, Beam's type-hint notes and the GCP-extras warning stay out of the
    log unless BERTPIPE_VERBOSE=1; the shards are those of the in-process runner."""
    job = (
        BERTPIPE,
        "preprocess",
        "--input",
        str(small_corpus),
        "--tokenizer",
        str(tokenizer_dir),
        "--dupe-factor",
        "1",
    )
    quiet = run(*job, "--output", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.splitlines()
    own = re.compile(r"^\S+ \S+ INFO (preprocessing|pipeline|model)[.\w]*: ")
    assert lines and all(own.match(line) for line in lines), quiet.stderr
    assert "random-next share" in quiet.stdout

    verbose = run(*job, "--output", str(tmp_path / "verbose"), BERTPIPE_VERBOSE="1")
    assert verbose.returncode == 0, verbose.stderr
    # What the quiet log left out: the workers did run (as preprocessing.beam_worker) and did talk.
    for noise in ["Python sdk harness starting", "severity: INFO", "Converting string literal type hint"]:
        assert noise in verbose.stderr and noise not in quiet.stderr

    in_process = run(*job, "--output", str(tmp_path / "in-process"), *IN_PROCESS)
    assert in_process.returncode == 0, in_process.stderr
    names = sorted(p.name for p in (tmp_path / "quiet").iterdir())
    assert "train-000000.tar" in names and names == sorted(p.name for p in (tmp_path / "in-process").iterdir())
    for name in names:
        assert (tmp_path / "quiet" / name).read_bytes() == (tmp_path / "in-process" / name).read_bytes(), name
